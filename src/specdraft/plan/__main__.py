"""`make plan`: will the paper run fit, and what will it cost, before anything is paid for.

    python -m specdraft.plan --profile paper --gpu h100-80 --ngpu 1 [--json metrics/plan.json]
                             [--check] [-S key=value ...]
    python -m specdraft.plan --self-check

Composes the profile as `dvc exp run -S profile=<name>` would (specdraft.params), runs one
step of every GPU stage at its real shapes on meta tensors (specdraft.plan.stages), and
prints one row per stage (peak memory with its breakdown, the limit with 10 % headroom,
fits or not, GPU-hours) and the totals (GPU-hours, disk, the Gemini cost and wait). With
`--check` it exits 2 when a stage does not fit, naming the stage, its peak, the GPU's
memory and the setting to change; `--gpu auto --check` plans for the GPUs of this machine
(`make paper-run` runs it before `dvc exp run`, so a run that cannot fit is refused before
the teacher is paid or a model is loaded).

`--self-check` runs the local 135M target's LoRA training step twice, with real tensors on
the CPU and on meta tensors, and prints both peaks: the planner's own error where it can
be measured (it must stay within 10 %).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

log = logging.getLogger("plan")


def self_check(batch: int = 4, length: int = 384, layers: int | None = None) -> dict:
    """Real CPU tensors against meta tensors on the local profile's train_target step."""
    from specdraft.config import build, load_params
    from specdraft.plan.stages import architecture, sft_step
    from specdraft.plan.track import cuda_kernels, gib
    from specdraft.train.settings import TrainConfig

    params = load_params()
    cfg = build(TrainConfig, {**params["train_target"], "batch_size": batch, "max_length": length}, "train_target")
    arch = architecture(params["models"]["target"])
    n = layers or arch["num_hidden_layers"]
    real = sft_step(arch, cfg, n, device="cpu")
    with cuda_kernels():
        meta = sft_step(arch, cfg, n)
    return {"real_gib": gib(real.total), "meta_gib": gib(meta.total), "ratio": round(meta.total / real.total, 4),
            "real": real.gib(), "meta": meta.gib(), "batch": batch, "max_length": length, "layers": n}


def main(argv: list[str] | None = None) -> int:
    from specdraft.io import InputError, write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="paper")
    p.add_argument("--gpu", default="h100-80", help="a GPU of specdraft.plan.gpus, or auto: the visible ones")
    p.add_argument("--ngpu", type=int, default=1)
    p.add_argument("--json", default=None, help="write the plan here (e.g. metrics/plan.json)")
    p.add_argument("--check", action="store_true", help="exit 2 when a stage does not fit")
    p.add_argument("--self-check", action="store_true")
    p.add_argument("-S", dest="overrides", action="append", default=[], help="a Hydra override, as dvc exp run -S")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    t0 = time.perf_counter()
    if a.self_check:
        r = self_check()
        print(json.dumps(r, indent=1))
        print(f"meta / real peak: {r['ratio']:.3f} ({time.perf_counter() - t0:.0f} s)")
        return 0 if abs(r["ratio"] - 1) <= 0.10 else 1
    from specdraft.params import compose
    from specdraft.plan.build import make_plan, refusals, table

    try:
        params = compose([f"profile={a.profile}", *a.overrides])
        plan = make_plan(params, a.gpu, a.ngpu)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    plan["overrides"] = a.overrides
    plan["seconds"] = round(time.perf_counter() - t0, 1)
    print(table(plan))
    print(f"(planned in {plan['seconds']} s)")
    if a.json:
        write_json(a.json, plan)
    if a.check and refusals(plan):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
