"""Supervised fine-tuning (TRL SFTTrainer) of targets (LoRA) and drafts (full or LoRA).

A draft has two objectives: `sft`, cross-entropy on the target's greedy answers
(sequence-level distillation), and `kd`, the divergence from the trained target's own
token distribution at every answer position (DistillSpec, Zhou et al. 2023; the
supervised half of TRL's GKD with its `beta` between forward and reverse KL). The KD
loss is computed here, on the positions the SFT loss uses, with the target frozen beside
the draft: TRL's GKDTrainer also scores prompt positions and generates on-policy samples
at every step, both of which cost more on this CPU than the draft's training itself.

Examples are prompt/completion conversations built with specdraft.prompts.messages, the
same function evaluation uses, so the trained prompt is byte-identical to the evaluated
one (a test checks it); loss is on the completion only. Training curves go through
dvclive into metrics/train/<role>/<scenario>-<style>/ (declared as DVC plots), final losses
into its metrics.json (declared as DVC metrics).

Paper scale, as open-r1 and TRL do it:
- the trainer's arguments come first (they join the process group and set up FSDP /
  ZeRO-3), then TRL loads the model from its folder (`model_init_kwargs`), so sharded
  loading applies and no rank holds the whole 14B model unless it should;
- every rank saves (`trainer.save_model()`: the full state dict gathered under FSDP or
  ZeRO-3, the adapter for LoRA), and one process afterwards merges an adapter into the base
  reloaded unquantised (bf16 or fp32), for LoRA and QLoRA alike: the saved model is never a
  4-bit one;
- full fine-tuning keeps fp32 master weights (bf16 is autocast): AdamW's small updates at
  the draft's learning rate vanish in bf16 weights;
- plain `python` with several GPUs visible is refused (the Trainer would silently wrap the
  model in nn.DataParallel, which splits the loss's index tensor across GPUs), and so is an
  accelerate config whose FSDP or DeepSpeed accelerate did not turn on (on CPU processes it
  silently trains plain data parallel instead).

Checkpoints live outside DVC's outputs (DVC deletes outputs before a stage runs), so an
interrupted training resumes from its last checkpoint when the stage runs again, but only
when the checkpoint was made with the same settings, data, base model and number of
processes (a fingerprint written beside it); otherwise it starts over and says why. The
merged model is written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

from specdraft.config import setting
from specdraft.io import InputError, atomic_dir, write_json
from specdraft.prompts import PromptsConfig, completion_example, messages
from specdraft.provenance import read_provenance, write_provenance

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


def build_examples(rows: list[dict[str, Any]], prompts: PromptsConfig, style: str, text_field: str) -> list[dict]:
    """Prompt/completion conversations: system + question -> the response to imitate."""
    out = []
    for r in rows:
        text = str(r.get(text_field, "")).strip()
        if not text:
            raise InputError(f"training row {r.get('id')!r}: empty field {text_field!r}")
        out.append(completion_example(messages(prompts, style, r["question"]), text))
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


def check_lengths(tok: Any, examples: list[dict], max_length: int) -> None:
    """Refuse rows longer than max_length: the trainer would cut them, losing the answer
    and its end-of-turn token. (The teacher stages reject such target rows with a reason;
    a draft's rows are the target's answers, bounded by generation.max_new_tokens.)"""
    from specdraft.prompts import training_length

    lengths = [training_length(tok, e["prompt"], e["completion"][0]["content"]) for e in examples]
    over = [n for n in lengths if n > max_length]
    if over:
        raise InputError(f"{len(over)} of {len(lengths)} training rows are longer than max_length {max_length} "
                         f"tokens (longest {max(over)}): training would cut their answers; raise max_length (the "
                         "draft's rows need the longest prompt + generation.max_new_tokens)")


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


def check_launcher() -> None:
    """Refuse several visible GPUs under a plain `python` launcher (see the module docstring).
    A process started by accelerate or torchrun has WORLD_SIZE set."""
    import torch

    n = torch.cuda.device_count()
    if n > 1 and "WORLD_SIZE" not in os.environ:
        raise InputError(f"{n} GPUs are visible but the stage was started by plain python: the Trainer would wrap the "
                         "model in torch.nn.DataParallel, which splits the loss's index tensor across GPUs. Set "
                         "train_target.launcher / train_draft.launcher to 'accelerate launch --config_file "
                         "conf/accelerate/ddp.yaml' (or fsdp.yaml, zero3.yaml), or CUDA_VISIBLE_DEVICES to one GPU")


def check_distributed(args: Any) -> None:
    """Refuse an accelerate config whose FSDP or DeepSpeed accelerate did not turn on.
    Measured with accelerate 1.15: with CPU ranks (`use_cpu: true`, gloo) it runs plain data
    parallel and ignores both (state.py enables FSDP only from GPU-type process groups and
    DeepSpeed only off the CPU), so a run asked to shard would silently not shard."""
    from accelerate.utils import DistributedType

    asked = [name for name, env in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
             if os.environ.get(env, "").lower() == "true"]
    got = args.distributed_state.distributed_type
    if asked and got not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise InputError(f"the accelerate config asks for {asked[0]}, but accelerate runs {got.value}: it uses FSDP and "
                         "DeepSpeed only on GPUs and otherwise trains plain data parallel without sharding; on CPU "
                         "processes use conf/accelerate/cpu_ddp.yaml")


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
        from transformers.integrations import DVCLiveCallback

        if live_dir.exists() and not resume:
            shutil.rmtree(live_dir)  # a fresh run: drop curves of an older one
        # dvcyaml=None: plots are declared in dvc.yaml by hand (Live would rewrite it).
        live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, resume=resume)
        callbacks.append(DVCLiveCallback(live=live))
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


RUN_FILE = "specdraft-run.json"  # beside the checkpoints: what they were trained with


def run_fingerprint(cfg: TrainConfig, examples: list[dict], model_dir: str | Path, world_size: int,
                    extra: dict | None = None) -> dict:
    """What a checkpoint must have been made with to be resumed: the settings that change
    training (not how often it logs or saves, nor the thread count), the training data, the
    base model's files and the number of processes (which shards the data)."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items()
                if k not in ("logging_steps", "save_steps", "threads", "launcher")}
    folder = Path(model_dir)
    model = {p.name: p.stat().st_size for p in sorted(folder.glob("*")) if p.is_file()}
    config = folder / "config.json"
    if extra:
        settings.update(extra)
    return {"settings": settings, "world_size": world_size, "model_files": model,
            "model_config": hashlib.sha256(config.read_bytes()).hexdigest() if config.exists() else None,
            "data": hashlib.sha256(json.dumps(examples, sort_keys=True).encode()).hexdigest()}


def resume_point(ckpt_dir: Path, fingerprint: dict) -> str | None:
    """The last checkpoint in ckpt_dir if it was made with `fingerprint`, else None; a
    checkpoint made otherwise is named with what changed (it is removed by `prepare_run`)."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last is None:
        return None
    f = ckpt_dir / RUN_FILE
    saved = json.loads(f.read_text()) if f.is_file() else {}
    if saved == fingerprint:
        return last
    changed = sorted(k for k in {**saved.get("settings", {}), **fingerprint["settings"]}
                     if saved.get("settings", {}).get(k) != fingerprint["settings"].get(k))
    changed += [k for k in ("world_size", "model_files", "model_config", "data") if saved.get(k) != fingerprint[k]]
    log.warning("not resuming from %s: it was made with other %s; training starts over", last,
                ", ".join(changed) or "settings (no record)")
    return None


def train_and_save(model_dir: str | Path, rows: list[dict[str, Any]], prompts: PromptsConfig, style: str,
                   text_field: str, cfg: TrainConfig, out_dir: Path, ckpt_dir: Path, live_dir: Path,
                   teacher_dir: Path | None = None, kd: KDSettings | None = None) -> dict | None:
    """Train, merge (LoRA) and save to out_dir atomically; returns the final metrics.
    With `kd`: the distribution loss against the model in `teacher_dir` instead of SFT.

    Under a multi-process launcher every rank calls this and trains on its shard of the
    examples (the trainer's distributed sampler) and takes part in saving; only the main
    process merges and writes the model and metrics and gets them back, the other ranks
    get None."""
    check_launcher()
    examples = build_examples(rows, prompts, style, text_field)
    if len(examples) < 2:
        raise InputError(f"too few training rows ({len(examples)}) for {out_dir}")
    train, val = split(examples, cfg.val_share, cfg.seed)
    args = training_args(cfg, ckpt_dir, bool(val))  # joins the process group
    check_distributed(args)
    state = args.distributed_state
    extra = None if kd is None else {"kd": dataclasses.asdict(kd), "teacher": run_fingerprint(
        cfg, [], teacher_dir, 1)["model_files"]}
    fp = run_fingerprint(cfg, examples, model_dir, args.world_size, extra)
    last = resume_point(ckpt_dir, fp)  # every rank decides on the same files...
    state.wait_for_everyone()
    if state.is_main_process and last is None:  # ...before the main process clears a stale run
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        ckpt_dir.mkdir(parents=True)
        (ckpt_dir / RUN_FILE).write_text(json.dumps(fp, sort_keys=True))
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
               "resumed": last is not None, "world_size": world,
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
    save_trained(model_dir, trained, out_dir, cfg)
    write_json(live_dir / "metrics.json", metrics)
    (live_dir / "params.yaml").unlink(missing_ok=True)  # Live's dump of TrainingArguments: not ours
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # done: the next run starts fresh
    return metrics


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, dtype: str) -> Any:
    """The base model reloaded in `dtype` (never quantised) with the LoRA adapter merged in."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype))
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def save_trained(base_dir: str | Path, trained: Path, out_dir: Path, cfg: TrainConfig) -> None:
    """out_dir: the trained model as an ordinary model folder, written atomically; a LoRA
    (or QLoRA) adapter is merged into the base in bf16 (cfg.bf16) or fp32, and kept beside
    it in adapter/."""
    from transformers import AutoTokenizer

    with atomic_dir(out_dir) as tmp:
        if cfg.method == "lora":
            merge_adapter(base_dir, trained, "bfloat16" if cfg.bf16 else "float32").save_pretrained(tmp)
            shutil.copytree(trained, tmp / "adapter")
        else:
            for f in trained.iterdir():
                if f.is_file() and f.name != "training_args.bin":
                    shutil.copy2(f, tmp / f.name)
        AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp)
        write_provenance(tmp, {"base": read_provenance(base_dir), "method": cfg.method,
                               "merged_dtype": "bfloat16" if cfg.bf16 and cfg.method == "lora" else "float32",
                               "quantised_base_in_training": cfg.load_in_4bit})
