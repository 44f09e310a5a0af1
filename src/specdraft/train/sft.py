"""Supervised fine-tuning (TRL SFTTrainer) of targets (LoRA) and drafts (full or LoRA).

Examples are prompt/completion conversations built with specdraft.prompts.messages, the
same function evaluation uses, so the trained prompt is byte-identical to the evaluated
one (a test checks it); loss is on the completion only. Training curves go through
dvclive into metrics/train/<role>/<scenario>-<style>/ (declared as DVC plots), final losses
into its metrics.json (declared as DVC metrics).

Checkpoints live outside DVC's outputs (DVC deletes outputs before a stage runs), so an
interrupted training resumes from its last checkpoint when the stage runs again; the
merged model is written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from specdraft.config import setting
from specdraft.io import InputError, atomic_dir, write_json
from specdraft.prompts import PromptsConfig, messages

log = logging.getLogger("sft")


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    r: int = setting(16, ge=1)
    alpha: int = setting(32, gt=0)
    dropout: float = setting(0.05, ge=0, lt=1)
    target_modules: list[str] = dataclasses.field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Sections `train_target` / `train_draft` of params.yaml."""

    method: str = setting(choices=("lora", "full"))
    learning_rate: float = setting(gt=0)
    epochs: float = setting(gt=0)
    batch_size: int = setting(ge=1)
    grad_accum: int = setting(ge=1)
    max_length: int = setting(ge=16)
    # no defaults where the two sections differ in conf/config.yaml
    warmup_ratio: float = setting(ge=0, lt=1)  # a share of all steps (transformers 5: warmup_steps < 1 is a ratio)
    val_share: float = setting(ge=0, lt=1)
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    seed: int = 0
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    bf16: bool = False
    gradient_checkpointing: bool = False
    load_in_4bit: bool = False  # QLoRA (bitsandbytes, GPU extra)
    logging_steps: int = setting(1, ge=1)
    save_steps: int = setting(20, ge=1)
    use_cpu: bool = True
    # How the stage is started: "python", or "accelerate launch --config_file
    # conf/accelerate/<ddp|fsdp|zero3>.yaml" for several GPUs (used in dvc.yaml's cmd).
    launcher: str = "python"
    # Training is compute-bound (unlike decoding, which is memory-bound and gains nothing
    # from a second thread here): a thread count of its own; null = runtime.threads.
    threads: int | None = setting(None, ge=1)


METHODS = ("lora", "full")


def build_examples(rows: list[dict[str, Any]], prompts: PromptsConfig, style: str, text_field: str) -> list[dict]:
    """Prompt/completion conversations: system + question -> the response to imitate."""
    out = []
    for r in rows:
        text = str(r.get(text_field, "")).strip()
        if not text:
            raise InputError(f"training row {r.get('id')!r}: empty field {text_field!r}")
        out.append({"prompt": messages(prompts, style, r["question"]),
                    "completion": [{"role": "assistant", "content": text}],
                    "chat_template_kwargs": {"enable_thinking": False}})
    return out


def split(examples: list[dict], val_share: float, seed: int) -> tuple[list[dict], list[dict]]:
    import random

    idx = list(range(len(examples)))
    random.Random(seed).shuffle(idx)
    n_val = int(round(len(examples) * val_share)) if val_share > 0 else 0
    n_val = min(max(n_val, 1 if val_share > 0 and len(examples) > 1 else 0), len(examples) - 1)
    val = [examples[i] for i in sorted(idx[:n_val])]
    train = [examples[i] for i in sorted(idx[n_val:])]
    return train, val


def _trainer_class():
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    class CompletionSFTTrainer(SFTTrainer):
        """Computes the head and the loss only at positions whose next token is labelled.

        TRL's fused loss scores every position on devices without Triton (the CPU),
        prompt and padding included, and also computes the entropy over the whole
        vocabulary; here the prompt is most of each short example and the draft's head
        (49k tokens) costs more than its two layers. Same loss: mean cross-entropy over
        completion tokens (`transformers`' public `logits_to_keep` selects the positions).
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs["labels"]
            shifted = labels[:, 1:]
            keep = (shifted != -100).any(dim=0).nonzero().squeeze(-1)
            fwd = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
            out = model(**fwd, use_cache=False, logits_to_keep=keep)
            logits = out.logits.float()
            target = shifted[:, keep]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                                   reduction="sum")
            n = (target != -100).sum() if num_items_in_batch is None else num_items_in_batch
            loss = loss / torch.as_tensor(n, device=loss.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, out) if return_outputs else loss

    return CompletionSFTTrainer


def make_trainer(model_dir: str | Path, train: list[dict], val: list[dict], cfg: TrainConfig, ckpt_dir: Path,
                 live_dir: Path | None):
    """An SFTTrainer on a model folder, with LoRA when cfg.method == 'lora'."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    if cfg.method not in METHODS:
        raise InputError(f"params.yaml: method {cfg.method!r} unknown; valid: {list(METHODS)}")
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    kw: dict[str, Any] = {"dtype": torch.bfloat16 if cfg.bf16 else torch.float32}
    if cfg.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kw)
    peft_config = None
    if cfg.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                 target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    args = SFTConfig(
        output_dir=str(ckpt_dir), num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, seed=cfg.seed, data_seed=cfg.seed, max_length=cfg.max_length,
        completion_only_loss=True, bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing,
        use_cpu=cfg.use_cpu, logging_steps=cfg.logging_steps, eval_strategy="epoch" if val else "no",
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=1, report_to="none",
        dataloader_num_workers=0, disable_tqdm=False)
    callbacks = []
    # Several processes (accelerate launch / torchrun): the arguments above joined the
    # process group; every rank trains on its shard, only the main one writes curves.
    if live_dir is not None and args.process_index == 0:
        from dvclive import Live
        from transformers.integrations import DVCLiveCallback

        resume = _has_checkpoint(ckpt_dir)
        if live_dir.exists() and not resume:
            shutil.rmtree(live_dir)  # a fresh run: drop curves of an older one
        # dvcyaml=None: plots are declared in dvc.yaml by hand (Live would rewrite it).
        live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, resume=resume)
        callbacks.append(DVCLiveCallback(live=live))
    trainer = _trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(train),
                         eval_dataset=Dataset.from_list(val) if val else None, processing_class=tok,
                         peft_config=peft_config, callbacks=callbacks)
    return trainer


def _has_checkpoint(ckpt_dir: Path) -> bool:
    return any(Path(ckpt_dir).glob("checkpoint-*"))


def train_and_save(model_dir: str | Path, rows: list[dict[str, Any]], prompts: PromptsConfig, style: str,
                   text_field: str, cfg: TrainConfig, out_dir: Path, ckpt_dir: Path, live_dir: Path) -> dict | None:
    """Train, merge (LoRA) and save to out_dir atomically; returns the final metrics.

    Under a multi-process launcher every rank calls this and trains on its shard of the
    examples (the trainer's distributed sampler); only the main process writes the model
    and metrics and gets them back, the other ranks get None."""
    examples = build_examples(rows, prompts, style, text_field)
    if len(examples) < 2:
        raise InputError(f"too few training rows ({len(examples)}) for {out_dir}")
    train, val = split(examples, cfg.val_share, cfg.seed)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    trainer = make_trainer(model_dir, train, val, cfg, ckpt_dir, live_dir)
    resume = _has_checkpoint(ckpt_dir)
    if resume:
        log.info("resuming from the last checkpoint in %s", ckpt_dir)
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    hist = trainer.state.log_history
    train_losses = [h["loss"] for h in hist if "loss" in h]
    eval_losses = [h["eval_loss"] for h in hist if "eval_loss" in h]
    world = trainer.args.world_size
    metrics = {"train_rows": len(train), "val_rows": len(val), "steps": trainer.state.global_step,
               "epochs": cfg.epochs, "method": cfg.method, "resumed": resume, "world_size": world,
               "global_batch_size": cfg.batch_size * cfg.grad_accum * world,
               "train_loss_first": train_losses[0] if train_losses else None,
               "train_loss_last": train_losses[-1] if train_losses else None,
               "train_loss_mean": result.training_loss,
               "eval_loss": eval_losses[-1] if eval_losses else None,
               "eval_loss_first": eval_losses[0] if eval_losses else None,
               "train_seconds": result.metrics.get("train_runtime")}
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    trainer.accelerator.wait_for_everyone()  # every rank is past its last checkpoint write
    if not trainer.is_world_process_zero():
        return None
    _save_merged(trainer, out_dir, cfg)
    write_json(live_dir / "metrics.json", metrics)
    (live_dir / "params.yaml").unlink(missing_ok=True)  # Live's dump of TrainingArguments: not ours
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # done: the next run starts fresh
    return metrics


def _save_merged(trainer, out_dir: Path, cfg: TrainConfig) -> None:
    with atomic_dir(out_dir) as tmp:
        model = trainer.model
        if cfg.method == "lora":
            model.save_pretrained(tmp / "adapter")  # the adapter alone, for reference
            model = model.merge_and_unload()
        model.save_pretrained(tmp)
        trainer.processing_class.save_pretrained(tmp)
        (tmp / "specdraft.json").write_text(json.dumps({"method": cfg.method}, indent=2))
