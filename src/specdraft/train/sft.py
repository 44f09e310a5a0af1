"""Supervised fine-tuning of targets (LoRA) and drafts (full or LoRA): the run from
examples to a saved model folder.

Examples are prompt/completion conversations built with specdraft.prompts.messages, the
same function evaluation uses, so the trained prompt is byte-identical to the evaluated
one (a test checks it); loss is on the completion only (specdraft.train.trainers). Final
losses go into metrics/train/<role>/<scenario>-<style>/metrics.json (DVC metrics).

Paper scale, as open-r1 and TRL do it:
- the trainer's arguments come first (specdraft.train.settings.training_args: they join
  the process group and set up FSDP / ZeRO-3), then TRL loads the model from its folder
  (`model_init_kwargs`), so sharded loading applies;
- every rank saves (`trainer.save_model()`: the full state dict gathered under FSDP or
  ZeRO-3, the adapter for LoRA); the main process then merges and measures
  (specdraft.train.finish), in a fresh process under FSDP and DeepSpeed;
- launch checks (specdraft.train.launch) refuse set-ups that would silently train wrong;
  plain python on a machine with several GPUs trains on the first one (in the metrics).

An interrupted training resumes from its last checkpoint when it was made with the same
settings, data and models (specdraft.train.checkpoints), its curves cut back to that
checkpoint's step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from specdraft.io import InputError, write_json
from specdraft.prompts import PromptsConfig
from specdraft.train.checkpoints import RUN_FILE, checkpoint_step, cut_back_curves, resume_point, run_fingerprint
from specdraft.train.examples import build_examples, split
from specdraft.train.finish import Finish, HeldOut
from specdraft.train.finish import run as run_finish
from specdraft.train.launch import (
    check_distributed,
    check_kd_teacher,
    post_training_in_fresh_process,
    use_gpus,
)
from specdraft.train.settings import KDSettings, TrainConfig, training_args
from specdraft.train.trainers import make_trainer

log = logging.getLogger("sft")


def _as_mapping(prompts: PromptsConfig) -> dict[str, Any]:
    """The prompts as plain data for a finish job (read untraced: the stage read them;
    not dataclasses.asdict, which cannot rebuild the traced mappings)."""
    from specdraft.config import untraced

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, dict):
            return {k: plain(x) for k, x in dict.items(v)}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    with untraced():
        return plain(prompts)


def train_and_save(model_dir: str | Path, rows: list[dict[str, Any]], prompts: PromptsConfig, style: str,
                   text_field: str, cfg: TrainConfig, out_dir: Path, ckpt_dir: Path, live_dir: Path,
                   teacher_dir: Path | None = None, kd: KDSettings | None = None,
                   acceptance_k: int | None = None) -> dict | None:
    """Train, merge (LoRA) and save to out_dir atomically; returns the final metrics.
    With `kd`: the distribution loss against the model in `teacher_dir` (the trained
    target) instead of SFT. With `acceptance_k`: a draft's held-out acceptance at that
    draft length against the target in `teacher_dir`, in the metrics.

    Under a multi-process launcher every rank calls this and trains on its shard of the
    examples (the trainer's distributed sampler) and takes part in saving; only the main
    process finishes (specdraft.train.finish) and writes the model and metrics and gets
    them back, the other ranks get None."""
    gpus = use_gpus()  # before torch sets up CUDA: plain python keeps to one GPU
    examples = build_examples(rows, prompts, style, text_field)
    if len(examples) < 2:
        raise InputError(f"too few training rows ({len(examples)}) for {out_dir}")
    train, val = split(examples, cfg.val_share, cfg.seed)
    args = training_args(cfg, ckpt_dir, bool(val))  # joins the process group
    check_distributed(args)
    state = args.distributed_state
    if kd is not None:
        check_kd_teacher(state.distributed_type)  # before anything is loaded
    fp = run_fingerprint(cfg, examples, model_dir, args.world_size, teacher_dir if kd is not None else None,
                         None if kd is None else {"kd": {"beta": kd.beta, "temperature": kd.temperature}})
    last = resume_point(ckpt_dir, fp)  # every rank decides on the same files...
    state.wait_for_everyone()
    if state.is_main_process and last is None:  # ...before the main process clears a stale run
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        ckpt_dir.mkdir(parents=True)
        (ckpt_dir / RUN_FILE).write_text(json.dumps(fp, sort_keys=True))
    if state.is_main_process and last is not None and live_dir is not None:
        cut_back_curves(live_dir, checkpoint_step(last))  # rows logged after the checkpoint: logged again
    state.wait_for_everyone()
    trainer = make_trainer(model_dir, train, val, cfg, ckpt_dir, live_dir, args, resume=last is not None,
                           teacher_dir=teacher_dir, kd=kd)
    if last:
        log.info("resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    hist = trainer.state.log_history
    train_losses = [h["loss"] for h in hist if "loss" in h]
    eval_losses = [h["eval_loss"] for h in hist if "eval_loss" in h]
    world = trainer.args.world_size
    metrics = {"train_rows": len(train), "val_rows": len(val), "steps": trainer.state.global_step,
               "epochs": cfg.epochs, "method": cfg.method, "objective": "sft" if kd is None else "kd",
               **({} if kd is None else {"kd_beta": kd.beta, "kd_temperature": kd.temperature}),
               "resumed": last is not None, "world_size": world, "device": str(trainer.args.device),
               # visible, used, which, why (specdraft.train.launch.use_gpus); a CPU run has none to record
               **({"gpus": gpus} if gpus["gpus_visible"] else {}),
               "global_batch_size": cfg.batch_size * cfg.grad_accum * world,
               "train_loss_first": train_losses[0] if train_losses else None,
               "train_loss_last": train_losses[-1] if train_losses else None,
               "train_loss_mean": result.training_loss,
               "eval_loss": eval_losses[-1] if eval_losses else None,
               "eval_loss_first": eval_losses[0] if eval_losses else None,
               "train_seconds": result.metrics.get("train_runtime")}
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    trained = ckpt_dir / "trained"
    trainer.save_model(str(trained))  # every rank: the full state dict is gathered, the main process writes it
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return None
    device = trainer.args.device.type
    del trainer  # its model, optimizer and (GPU) memory, before models are loaded again
    import gc

    gc.collect()
    held = None if acceptance_k is None else HeldOut(
        rows=rows, prompts=_as_mapping(prompts), style=style, val_share=cfg.val_share, seed=cfg.seed,
        target=str(teacher_dir), untrained=str(model_dir), k=acceptance_k)
    job = Finish(base=str(model_dir), trained=str(trained), out=str(out_dir), method=cfg.method, bf16=cfg.bf16,
                 load_in_4bit=cfg.load_in_4bit, device=device, held_out=held)
    fresh = post_training_in_fresh_process(state.distributed_type)
    metrics.update(run_finish(job, fresh_process=fresh))
    metrics["post_training"] = "fresh process" if fresh else "training process"
    write_json(live_dir / "metrics.json", metrics)
    (live_dir / "params.yaml").unlink(missing_ok=True)  # Live's dump of TrainingArguments: not ours
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # done: the next run starts fresh
    return metrics
