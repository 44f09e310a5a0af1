"""Stage kernels: the run's CPU kernel path, decided once (models/kernels.json).

Why a stage: `generation.cpu_kernels: auto` times torch's default fp32 linears against
packed oneDNN ones on the target (specdraft.generate.cpu_kernels). The two paths round
differently in the last bits, which can flip a greedy near-tie, so the choice is part of
the results: deciding it at every engine start let distillation and evaluation, or two
evaluations, run on different paths when the timings were close. Here it is decided once
per run and machine, with the paths interleaved and a margin in oneDNN's disfavour;
distill and evaluate read models/kernels.json (a declared dependency) and record the path
in their metrics and resume fingerprints. On a GPU, with the vllm engine, or with a fixed
setting (default / onednn) nothing is timed.

Writes models/kernels.json (the decision only, so that a re-timing that decides the same
re-runs nothing downstream) and metrics/kernels.json (the timings and the CPU).
Params read: generation.engine, generation.dtype, generation.cpu_kernels,
generation.num_speculative_tokens, runtime.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from specdraft.config import RuntimeConfig, apply_runtime, load_params, section
from specdraft.device import find_device
from specdraft.generate.api import GenerationConfig, check_model_dir
from specdraft.io import write_json
from specdraft.schema import check_all
from specdraft.stages._cli import cpu_name, run

log = logging.getLogger("kernels")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    check_all(params)
    rt = section(RuntimeConfig, "runtime", params)
    threads = apply_runtime(rt)
    gen = section(GenerationConfig, "generation", params)
    device = find_device(rt.device)
    setting = gen.cpu_kernels
    decision = {"device": device, "setting": setting}
    record = {**decision, "threads": threads, "cpu": cpu_name(), "probe": None}
    if gen.engine != "hf" or device != "cpu":
        decision["cpu_kernels"] = "default"
        record["why"] = f"no CPU kernels to choose (engine {gen.engine}, device {device})"
    elif setting != "auto":
        decision["cpu_kernels"] = setting
        record["why"] = "fixed by generation.cpu_kernels"
    else:
        import torch
        from transformers import AutoModelForCausalLM

        from specdraft.generate.cpu_kernels import ONEDNN_MARGIN, decide, probe_paths
        from specdraft.generate.models import torch_dtype

        model = AutoModelForCausalLM.from_pretrained(check_model_dir(args.target),
                                                     dtype=torch_dtype(gen.dtype)).eval()
        # the shapes the run decodes at batch 1: a decode step and a verify of k drafts
        rows = sorted({1, gen.num_speculative_tokens + 1})
        with torch.inference_mode():
            probe = probe_paths(model, rows)
        decision["cpu_kernels"] = decide(probe)
        record.update(probe=probe, margin=ONEDNN_MARGIN,
                      why=f"auto: oneDNN must be {ONEDNN_MARGIN:.0%} faster than the default path over rows {rows}")
    record["cpu_kernels"] = decision["cpu_kernels"]
    write_json(Path(args.out), decision)
    write_json(Path(args.metrics), record)
    log.info("kernel path %s on %s (%s)", decision["cpu_kernels"], record["cpu"], record["why"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, type=Path, help="input: the untrained target's folder")
    p.add_argument("--out", required=True, type=Path, help="output: the decision (json), read by distill and evaluate")
    p.add_argument("--metrics", required=True, type=Path, help="output: the timings behind it (json)")
    run(main, p)
