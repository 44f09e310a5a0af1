"""The training settings (sections `train_target`, `train_draft`, `train_draft_kd` of
params.yaml) and the TRL arguments built from them.

Kept apart from the trainers so that the config schema (specdraft.schema) and the stages
read the settings without importing TRL, and so that the one place that turns settings
into SFTConfig is easy to find: building it joins the process group of a multi-process
launch and sets up FSDP / ZeRO-3, before any model is loaded (specdraft.train.sft).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from specdraft.config import setting


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
    their loss only. Opt-in: it bought no acceptance in the local profile (docs/drafts.md)
    and costs a training run per target, so only the targets of `scenarios` get one
    (stages train_draft_kd and evaluate_kd iterate over it in dvc.yaml)."""

    scenarios: list[str] = dataclasses.field(default_factory=list)

    # 0: forward KL(target || draft), mass-covering; 1: reverse KL(draft || target),
    # mode-seeking; in between: (1 - beta) forward + beta reverse
    beta: float = setting(0.0, ge=0, le=1)
    temperature: float = setting(1.0, gt=0)


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
    # How the stage is started (dvc.yaml's cmd; conf/config.yaml sets both sections from the
    # top-level `launcher`): "python" (one GPU at most), or "python -m specdraft.train.launch
    # --config_file conf/accelerate/<ddp|fsdp|zero3>.yaml" (one process per visible GPU).
    launcher: str = "python"
    # Training is compute-bound (unlike decoding, which is memory-bound and gains nothing
    # from a second thread here): a thread count of its own; null = runtime.threads.
    threads: int | None = setting(None, ge=1)


def weights_dtype(cfg: TrainConfig) -> str:
    """The dtype the model is loaded in: bf16 only for a frozen LoRA base (its adapter
    stays fp32); full fine-tuning keeps fp32 master weights and autocasts to bf16."""
    return "bfloat16" if cfg.bf16 and cfg.method == "lora" else "float32"


def lora_config(cfg: TrainConfig):
    """peft's LoraConfig for these settings (the trainer's and the memory plan's)."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")


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
