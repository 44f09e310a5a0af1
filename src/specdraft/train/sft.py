"""Supervised fine-tuning (TRL SFTTrainer) of targets (LoRA) and drafts (full or LoRA).

A draft has two objectives: `sft`, cross-entropy on the target's greedy answers
(sequence-level distillation), and `kd`, the divergence from the trained target's own
token distribution at every answer position (DistillSpec, Zhou et al. 2023): a linear mix
(1 - beta) forward KL + beta reverse KL, which equals TRL's GKD loss at beta 0 and 1 only
(GKD mixes through the generalised Jensen-Shannon divergence). The KD loss is computed
here, on the positions the SFT loss uses, with the target frozen beside the draft: TRL's
GKDTrainer also scores prompt positions and generates on-policy samples at every step,
both of which cost more on this CPU than the draft's training itself.

Examples are prompt/completion conversations built with specdraft.prompts.messages, the
same function evaluation uses, so the trained prompt is byte-identical to the evaluated
one (a test checks it); loss is on the completion only. Training curves go through
dvclive into metrics/train/<role>/<scenario>-<style>/ (declared as DVC plots; x = the
trainer's global step), final losses into its metrics.json (declared as DVC metrics).

Paper scale, as open-r1 and TRL do it:
- the trainer's arguments come first (they join the process group and set up FSDP /
  ZeRO-3), then TRL loads the model from its folder (`model_init_kwargs`), so sharded
  loading applies and no rank holds the whole 14B model unless it should;
- every rank saves (`trainer.save_model()`: the full state dict gathered under FSDP or
  ZeRO-3, the adapter for LoRA); the main process then merges and measures
  (specdraft.train.finish), in a fresh process under FSDP and DeepSpeed;
- full fine-tuning keeps fp32 master weights (bf16 is autocast): AdamW's small updates at
  the draft's learning rate vanish in bf16 weights;
- launch checks (specdraft.train.launch) refuse set-ups that would silently train wrong.

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

from specdraft.config import setting
from specdraft.io import InputError, write_json
from specdraft.prompts import PromptsConfig
from specdraft.train.checkpoints import RUN_FILE, checkpoint_step, cut_back_curves, resume_point, run_fingerprint
from specdraft.train.examples import build_examples, check_lengths, split
from specdraft.train.finish import Finish, HeldOut
from specdraft.train.finish import run as run_finish
from specdraft.train.launch import (
    check_distributed,
    check_kd_teacher,
    check_launcher,
    post_training_in_fresh_process,
)

log = logging.getLogger("sft")


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    r: int = setting(16, ge=1)
    alpha: int = setting(32, gt=0)
    dropout: float = setting(0.05, ge=0, lt=1)
    target_modules: list[str] = dataclasses.field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclasses.dataclass(frozen=True)
class KDSettings:
    """Section `train_draft_kd`: the distribution-distilled draft's loss. The other
    settings (steps, learning rate, data) are train_draft's, so the two drafts differ in
    their loss only."""

    # 0: forward KL(target || draft), mass-covering; 1: reverse KL(draft || target),
    # mode-seeking; in between: (1 - beta) forward + beta reverse
    beta: float = setting(0.0, ge=0, le=1)
    temperature: float = setting(1.0, gt=0)


def distribution_loss(student: Any, teacher: Any, beta: float, temperature: float) -> Any:
    """Per-position (1 - beta) KL(teacher || student) + beta KL(student || teacher) of
    softened distributions, times temperature^2 (Hinton et al.: keeps gradient scale).
    Rows of `student` / `teacher` are logits over the same vocabulary."""
    import torch.nn.functional as F

    ls = F.log_softmax(student.float() / temperature, -1)
    lt = F.log_softmax(teacher.float() / temperature, -1)
    loss = 0.0
    if beta < 1:
        loss = loss + (1 - beta) * (lt.exp() * (lt - ls)).sum(-1)
    if beta > 0:
        loss = loss + beta * (ls.exp() * (ls - lt)).sum(-1)
    return loss * temperature ** 2


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
    # How the stage is started: "python", or "accelerate launch --config_file
    # conf/accelerate/<ddp|fsdp|zero3>.yaml" for several GPUs (used in dvc.yaml's cmd).
    launcher: str = "python"
    # Training is compute-bound (unlike decoding, which is memory-bound and gains nothing
    # from a second thread here): a thread count of its own; null = runtime.threads.
    threads: int | None = setting(None, ge=1)


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
            target = shifted[:, keep]
            loss = self.loss_sum(out.logits, target, fwd, keep)
            n = (target != -100).sum() if num_items_in_batch is None else num_items_in_batch
            loss = loss / torch.as_tensor(n, device=loss.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, out) if return_outputs else loss

        def loss_sum(self, logits, target, fwd, keep):
            """Summed loss over the labelled positions: cross-entropy on the answer tokens."""
            logits = logits.float()
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                                   reduction="sum")

    class DistributionKDTrainer(CompletionSFTTrainer):
        """The same positions, scored against the frozen target's distribution there
        (`distribution_loss`). Vocabularies are cut to the smaller one: a padded
        vocabulary's extra rows (Qwen2.5-14B: 152,064 vs 0.5B: 151,936) are no tokens."""

        def __init__(self, *a, teacher=None, kd: KDSettings | None = None, **kw):
            super().__init__(*a, **kw)
            self.teacher = teacher.to(self.args.device).eval()
            self.kd = kd

        def loss_sum(self, logits, target, fwd, keep):
            with torch.no_grad():
                t = self.teacher(**fwd, use_cache=False, logits_to_keep=keep).logits
            mask = target != -100
            v = min(logits.shape[-1], t.shape[-1])
            return distribution_loss(logits[mask][:, :v], t[mask][:, :v], self.kd.beta, self.kd.temperature).sum()

    return CompletionSFTTrainer, DistributionKDTrainer


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


def weights_dtype(cfg: TrainConfig) -> str:
    """The dtype the model is loaded in: bf16 only for a frozen LoRA base (its adapter
    stays fp32); full fine-tuning keeps fp32 master weights and autocasts to bf16."""
    return "bfloat16" if cfg.bf16 and cfg.method == "lora" else "float32"


def training_args(cfg: TrainConfig, ckpt_dir: Path, has_val: bool):
    """TRL's SFTConfig. Building it joins the process group of a multi-process launch and
    sets up FSDP / ZeRO-3, before any model is loaded."""
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(ckpt_dir), num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, seed=cfg.seed, data_seed=cfg.seed, max_length=cfg.max_length,
        completion_only_loss=True, bf16=cfg.bf16, gradient_checkpointing=cfg.gradient_checkpointing,
        use_cpu=not torch.cuda.is_available(), logging_steps=cfg.logging_steps,
        eval_strategy="epoch" if has_val else "no", save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=1, report_to="none", dataloader_num_workers=0, disable_tqdm=False,
        model_init_kwargs={"dtype": weights_dtype(cfg)})


def _step_curves_callback():
    from transformers.integrations import DVCLiveCallback

    class StepCurves(DVCLiveCallback):
        """dvclive's callback with x = the trainer's global step instead of a count of log
        calls: a resumed run then continues the curve at the checkpoint's step (after
        `cut_back_curves`), and an evaluation at the end of an epoch lands on the step it
        followed instead of taking a step of its own."""

        def on_log(self, args, state, control, model=None, logs=None, **kwargs):
            if state.is_world_process_zero and self.live is not None:
                self.live.step = state.global_step
            if logs is not None and "loss" not in logs:  # one epoch row per step: the training log's
                logs = {k: v for k, v in logs.items() if k != "epoch"}
            super().on_log(args, state, control, model=model, logs=logs, **kwargs)

    return StepCurves


def make_trainer(model_dir: str | Path, train: list[dict], val: list[dict], cfg: TrainConfig, ckpt_dir: Path,
                 live_dir: Path | None, args: Any = None, resume: bool = False, teacher_dir: Path | None = None,
                 kd: KDSettings | None = None):
    """An SFTTrainer that loads the model folder itself (after `args`: see training_args),
    with LoRA when cfg.method == 'lora' and a 4-bit base when cfg.load_in_4bit (QLoRA);
    with `kd`, one that distils from the model in `teacher_dir` (the trained target)."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    check_lengths(tok, train + val, cfg.max_length)
    args = args if args is not None else training_args(cfg, ckpt_dir, bool(val))
    quantization = None
    if cfg.load_in_4bit:
        import torch
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_compute_dtype=torch.bfloat16)
    peft_config = None
    if cfg.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                 target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    callbacks = []
    # Several processes (accelerate launch / torchrun): every rank trains on its shard,
    # only the main one writes curves.
    if live_dir is not None and args.process_index == 0:
        from dvclive import Live

        if live_dir.exists() and not resume:
            shutil.rmtree(live_dir)  # a fresh run: drop curves of an older one
        # dvcyaml=None: plots are declared in dvc.yaml by hand (Live would rewrite it).
        live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, resume=resume)
        callbacks.append(_step_curves_callback()(live=live))
    sft_cls, kd_cls = _trainer_class()
    common = dict(model=str(model_dir), args=args, train_dataset=Dataset.from_list(train),
                  eval_dataset=Dataset.from_list(val) if val else None, processing_class=tok,
                  peft_config=peft_config, quantization_config=quantization, callbacks=callbacks)
    if kd is None:
        return sft_cls(**common)
    import torch
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.bfloat16 if cfg.bf16 else torch.float32)
    return kd_cls(**common, teacher=teacher, kd=kd)


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
    check_launcher()
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
                         None if kd is None else {"kd": dataclasses.asdict(kd)})
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
