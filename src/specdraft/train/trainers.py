"""The trainers and their losses: SFT on the answer tokens, and the draft's distillation
from the trained target's token distribution.

A draft has two objectives: `sft`, cross-entropy on the target's greedy answers
(sequence-level distillation), and `kd`, the divergence from the trained target's own
token distribution at every answer position (DistillSpec, Zhou et al. 2023): a linear mix
(1 - beta) forward KL + beta reverse KL. That equals TRL's GKD loss at beta 0 and 1 only
(GKD mixes through the generalised Jensen-Shannon divergence), so it is called what it is.
The KD loss is computed here, on the positions the SFT loss uses, with the target frozen
beside the draft: TRL's GKDTrainer also scores prompt positions and generates on-policy
samples at every step, both of which cost more on this CPU than the draft's training
itself.

Training curves go through dvclive into metrics/train/<role>/<scenario>-<style>/
(declared as DVC plots; x = the trainer's global step).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from specdraft.io import InputError
from specdraft.train.examples import check_lengths
from specdraft.train.settings import KDSettings, TrainConfig, lora_config, training_args


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


def answer_cross_entropy(logits: Any, target: Any) -> Any:
    """Summed loss over the labelled positions: cross-entropy on the answer tokens."""
    import torch.nn.functional as F

    logits = logits.float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                           reduction="sum")


def completion_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None,
                    loss_sum: Callable[..., Any] | None = None, keep: Any = None) -> tuple[Any, Any]:
    """(mean loss over completion tokens, model output): the head and the loss computed only
    at positions whose next token is labelled (`CompletionSFTTrainer`). Also what the
    memory plan runs at real shapes (specdraft.plan), which passes `keep` (every position:
    the most a batch can hold) since data-less tensors cannot say which are labelled."""
    import torch

    labels = inputs["labels"]
    shifted = labels[:, 1:]
    if keep is None:
        keep = (shifted != -100).any(dim=0).nonzero().squeeze(-1)
    fwd = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
    out = model(**fwd, use_cache=False, logits_to_keep=keep)
    target = shifted[:, keep]
    loss = (loss_sum or (lambda lg, tg, _f, _k: answer_cross_entropy(lg, tg)))(out.logits, target, fwd, keep)
    n = (target != -100).sum() if num_items_in_batch is None else num_items_in_batch
    return loss / torch.as_tensor(n, device=loss.device).clamp(min=1), out


def trainer_classes():
    import torch
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
            loss, out = completion_loss(model, inputs, num_items_in_batch, self.loss_sum)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, out) if return_outputs else loss

        def loss_sum(self, logits, target, fwd, keep):
            return answer_cross_entropy(logits, target)

    class DistributionKDTrainer(CompletionSFTTrainer):
        """The same positions, scored against the frozen target's distribution there
        (`distribution_loss`). Both heads must have the same width: `base_models` pads a
        draft with a smaller vocabulary to the target's (Qwen2.5-0.5B's 151,936 rows to the
        14B's 152,064), so no vocabulary is cut here; different widths are refused."""

        def __init__(self, *a, teacher=None, kd: KDSettings | None = None, **kw):
            super().__init__(*a, **kw)
            self.teacher = teacher.to(self.args.device).eval()
            self.kd = kd

        def loss_sum(self, logits, target, fwd, keep):
            with torch.no_grad():
                t = self.teacher(**fwd, use_cache=False, logits_to_keep=keep).logits
            if logits.shape[-1] != t.shape[-1]:
                raise InputError(f"KD: the draft's head has {logits.shape[-1]} rows and the target's {t.shape[-1]}; "
                                 "the base_models stage pads the draft to the target's vocabulary")
            mask = target != -100
            return distribution_loss(logits[mask], t[mask], self.kd.beta, self.kd.temperature).sum()

    return CompletionSFTTrainer, DistributionKDTrainer


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
    peft_config = lora_config(cfg) if cfg.method == "lora" else None
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
    sft_cls, kd_cls = trainer_classes()
    common = dict(model=str(model_dir), args=args, train_dataset=Dataset.from_list(train),
                  eval_dataset=Dataset.from_list(val) if val else None, processing_class=tok,
                  peft_config=peft_config, quantization_config=quantization, callbacks=callbacks)
    if kd is None:
        return sft_cls(**common)
    import torch
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.bfloat16 if cfg.bf16 else torch.float32)
    return kd_cls(**common, teacher=teacher, kd=kd)
