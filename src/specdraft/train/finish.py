"""The work after training: the saved model as an ordinary model folder (an adapter merged
into its base), and for a draft its acceptance on the target's held-out answers.

One `Finish` job describes it; `run` does it in the training process or, under FSDP and
DeepSpeed (specdraft.train.launch.post_training_in_fresh_process), in a fresh process
started without the distributed environment:

    python -m specdraft.train.finish JOB.json

The merge runs on the CPU (the base reloaded unquantised in bf16 or fp32: never into
4-bit weights); the held-out acceptance runs on the training device.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from specdraft.io import StageError, atomic_dir
from specdraft.provenance import read_provenance, write_provenance

log = logging.getLogger("sft")


@dataclasses.dataclass
class HeldOut:
    """The draft's held-out acceptance (specdraft.train.acceptance.held_out_acceptance)."""

    rows: list[dict[str, Any]]
    prompts: dict[str, Any]  # PromptsConfig as a mapping
    style: str
    val_share: float
    seed: int
    target: str  # the trained target (its tokenizer)
    untrained: str  # the draft before training, for comparison
    k: int


@dataclasses.dataclass
class Finish:
    base: str  # the model training started from
    trained: str  # what trainer.save_model wrote (an adapter for LoRA)
    out: str  # the model folder to write, atomically
    method: str  # lora | full
    bf16: bool
    load_in_4bit: bool
    device: str  # the training device: the held-out acceptance runs there
    held_out: HeldOut | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Finish:
        d = json.loads(text)
        held = d.pop("held_out")
        return cls(**d, held_out=None if held is None else HeldOut(**held))


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, dtype: str) -> Any:
    """The base model reloaded in `dtype` (never quantised) with the LoRA adapter merged in."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype))
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def save_trained(base_dir: str | Path, trained: Path, out_dir: Path, cfg: Any) -> None:
    """out_dir: the trained model as an ordinary model folder, written atomically; a LoRA
    (or QLoRA) adapter is merged into the base in bf16 (cfg.bf16) or fp32, and kept beside
    it in adapter/. `cfg`: anything with method, bf16 and load_in_4bit (TrainConfig, Finish)."""
    from transformers import AutoTokenizer

    merged_dtype = "bfloat16" if cfg.bf16 and cfg.method == "lora" else "float32"
    with atomic_dir(out_dir) as tmp:
        if cfg.method == "lora":
            merge_adapter(base_dir, trained, "bfloat16" if cfg.bf16 else "float32").save_pretrained(tmp)
            shutil.copytree(trained, tmp / "adapter")
        else:
            for f in Path(trained).iterdir():
                if f.is_file() and f.name != "training_args.bin":
                    shutil.copy2(f, tmp / f.name)
        AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp)
        write_provenance(tmp, {"base": read_provenance(base_dir), "method": cfg.method, "merged_dtype": merged_dtype,
                               "quantised_base_in_training": cfg.load_in_4bit})


def finish(job: Finish) -> dict[str, Any]:
    """Merge and save; then the held-out acceptance, if asked. Returns its metrics."""
    save_trained(job.base, Path(job.trained), Path(job.out), job)
    if job.held_out is None:
        return {}
    from specdraft.config import build
    from specdraft.prompts import PromptsConfig
    from specdraft.train.acceptance import held_out_acceptance

    h = job.held_out
    prompts = build(PromptsConfig, h.prompts, "prompts")
    dtype = "bfloat16" if job.device.startswith("cuda") and job.bf16 else "float32"
    return held_out_acceptance(h.rows, prompts, h.style, h.val_share, h.seed, Path(h.target), Path(job.out),
                               Path(h.untrained), h.k, device=job.device, dtype=dtype)


def run(job: Finish, fresh_process: bool) -> dict[str, Any]:
    """`finish(job)` here, or in a fresh `python -m specdraft.train.finish` without the
    distributed environment (specdraft.train.launch); its output streams to this stage's."""
    if not fresh_process:
        return finish(job)
    from specdraft.train.launch import clean_env

    with tempfile.TemporaryDirectory(prefix="specdraft-finish-") as tmp:
        jf, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        jf.write_text(job.to_json())
        env = clean_env(dict(os.environ))
        env.pop("SPECDRAFT_TRACE_PARAMS", None)  # the stage records what it read, not this helper
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        log.info("merging and measuring in a fresh process (the training process holds a sharded context)")
        p = subprocess.run([sys.executable, "-m", "specdraft.train.finish", str(jf), str(result)], env=env)
        if p.returncode != 0:
            raise StageError(f"the post-training process (merge, held-out acceptance) failed with exit code "
                             f"{p.returncode}; the trained weights are kept in {job.trained}")
        return json.loads(result.read_text())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    job_file, result_file = sys.argv[1], sys.argv[2]
    out = finish(Finish.from_json(Path(job_file).read_text()))
    Path(result_file).write_text(json.dumps(out))
