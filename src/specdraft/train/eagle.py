"""Training an EAGLE-3 head (specdraft.generate.eagle) on a trained target's own answers.

The data is what the head sees when it drafts: the target's features over its distilled
answers (prompt + the token ids it generated), from one teacher-forced forward per answer,
taken once and kept in host memory (the target is frozen; ~50 answers of ~130 tokens for
the local profile; on a GPU the target is moved off it while the head trains, and each
padded batch is built when it is used: specdraft.plan measures why). The loss is EAGLE-3's
training-time test: step 0 reads the target's features at position i with token i+1 and
predicts token i+2; step j > 0 reads the head's own step j-1 output with token i+1+j and
predicts token i+2+j, attending causally to the step-0 entries and to its own earlier steps
at the same position (the diagonal), exactly what decoding does after a verify. Losses of
step j are weighted by step_decay**j.

Labels are the target's answer tokens (its greedy choices) mapped into the draft
vocabulary; a token outside it cannot be drafted and gives no loss. Why hand-written rather
than speculators' trainer: speculators 0.9 needs transformers <= 5.19 (the main
environment has 5.24); this is the ~100-line core of that recipe on the same layout.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from specdraft.config import setting


@dataclasses.dataclass(frozen=True)
class EagleSettings:
    """Section `train_draft_eagle` of params.yaml."""

    init: str = setting("target_last_layer", choices=("target_last_layer", "random"))  # generate.eagle.new_head
    epochs: int = setting(20, ge=1)  # at most; training stops earlier by `patience`
    # epochs without a better held-out mean accepted length before training stops (the head
    # keeps its best epoch's weights); 0: train all `epochs`, keep the last
    patience: int = setting(5, ge=0)
    learning_rate: float = setting(1e-3, gt=0)
    batch_size: int = setting(8, ge=1)
    ttt_steps: int = setting(4, ge=1)  # draft steps unrolled in training (>= the k it will draft)
    step_decay: float = setting(0.8, gt=0, le=1)
    draft_vocab: int = setting(2048, ge=16)  # most frequent answer tokens the head may propose
    val_share: float = setting(0.1, ge=0, lt=1)  # answers held out for the acceptance estimate
    held_out_max: int = setting(64, ge=1)  # at most this many: each epoch simulates decoding on all
    weight_decay: float = setting(0.0, ge=0)
    seed: int = 0
    threads: int | None = setting(None, ge=1)


@dataclasses.dataclass
class Sequence:
    ids: list[int]  # prompt + answer
    prompt_len: int
    feats: Any  # (len(ids), n_aux * H) target features, in the target dtype on the training device


def collect(target: Any, pairs: list[tuple[list[int], list[int]]], layers: list[int],
            batch_size: int = 8) -> list[Sequence]:
    """The target's features over each (prompt ids, answer ids), in `pairs`' order: one
    teacher-forced forward per batch of answers of similar length, right-padded (the
    padding is masked and comes after every real token, so a real position's features are
    the unpadded forward's up to float rounding: 2e-4 at most on the local targets; 25 %
    less time than one answer per forward on 2 cores)."""
    import torch
    from tqdm import tqdm

    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    out: list[Sequence | None] = [None] * len(pairs)
    with torch.inference_mode(), tqdm(total=len(pairs), desc="target features", unit="answer") as bar:
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            seqs = [list(pairs[i][0]) + list(pairs[i][1]) for i in chunk]
            t = max(map(len, seqs))
            ids = torch.tensor([x + [0] * (t - len(x)) for x in seqs], device=target.device)
            mask = torch.tensor([[1] * len(x) + [0] * (t - len(x)) for x in seqs], device=target.device)
            hidden = target(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                            logits_to_keep=1).hidden_states
            # the inputs of decoder layers `layers`, concatenated (generate.eagle.target_features)
            feats = torch.cat([hidden[j] for j in layers], dim=-1)
            for row, i in enumerate(chunk):
                # kept in the target's dtype (bf16 on a GPU halves it); batches are cast to fp32
                out[i] = Sequence(seqs[row], len(pairs[i][0]), to_host(feats[row, :len(seqs[row])]))
            bar.update(len(chunk))
    return out  # type: ignore[return-value]


def to_host(feats: Any) -> Any:
    """A copy in host memory (pinned when it comes from a GPU, so batches copy back
    asynchronously): a 14B target's features over ~1000 answers are ~30 GB in bf16, which
    must not stay on the GPU beside the target and then the head's training."""
    import torch

    if feats.device.type != "cuda":
        return feats.to("cpu", copy=True)
    host = torch.empty(feats.shape, dtype=feats.dtype, pin_memory=True)
    return host.copy_(feats)


def make_batch(seqs: list[Sequence], steps: int, to_draft: Any, device: Any) -> dict[str, Any]:
    """Padded tensors of a batch: features (B, T, F) for positions 0..T-1 (T = longest - 1),
    the input token of each step (B, S, T), its label in draft ids (-100: none)."""
    import torch

    t = max(len(s.ids) for s in seqs) - 1
    b = len(seqs)
    feats = torch.zeros(b, t, seqs[0].feats.shape[1], device=device)
    tokens = torch.zeros(b, steps, t, dtype=torch.long, device=device)
    labels = torch.full((b, steps, t), -100, dtype=torch.long, device=device)
    for r, s in enumerate(seqs):
        n = len(s.ids)
        ids = torch.tensor(s.ids, dtype=torch.long, device=device)
        feats[r, :n - 1] = s.feats[:n - 1]
        for j in range(steps):
            # position i, step j: input token i+1+j, label token i+2+j (an answer token)
            m = n - 1 - j
            if m > 0:
                tokens[r, j, :m] = ids[1 + j:n]
            lo, hi = max(0, s.prompt_len - 2 - j), n - 2 - j
            if hi > lo:
                labels[r, j, lo:hi] = to_draft[ids[lo + 2 + j:hi + 2 + j]]
    start = max(0, min(s.prompt_len for s in seqs) - 2 - (steps - 1))
    return {"feats": feats, "tokens": tokens, "labels": labels, "start": start}


def ttt_loss(head: Any, batch: dict[str, Any], steps: int, decay: float) -> tuple[Any, list[tuple[int, int]]]:
    """EAGLE-3's training-time-test loss over `steps` unrolled draft steps; also (correct,
    counted) greedy predictions per step. Every position gives step 0's keys and values;
    only positions from `batch['start']` on (the answers) are carried through the layer,
    since no loss reads a prompt position's output (half the rows of a short answer)."""
    import torch
    import torch.nn.functional as F

    layer = head.layers[0]
    feats, tokens, labels, s = batch["feats"], batch["tokens"], batch["labels"], batch["start"]
    b, _, t = tokens.shape
    dev = feats.device
    causal = torch.ones(t, t, dtype=torch.bool, device=dev).tril()[s:]
    hidden = head.fc(feats)
    keys, values = [], []
    total, weight, acc = 0.0, 0.0, []
    for j in range(steps):
        x, residual = layer.prologue(head.embed_tokens(tokens[:, j, s if j else 0:]), hidden)
        pos = (torch.arange(s if j else 0, t, device=dev) + j)[None].expand(b, -1)
        q, k, v = layer.self_attn.qkv(x, *head.rotary(x, pos))
        if j == 0:  # keys of every position, queries of the answers' only
            q, residual = q[:, :, s:], residual[:, s:]
        keys.append(k)
        values.append(v)
        hidden = layer.epilogue(layer.self_attn.attend(q, keys, values, causal), residual)
        logits = head.lm_head(head.norm(hidden))
        lab = labels[:, j, s:]
        n = _count(lab != -100)
        if n:
            total = total + decay ** j * F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab.reshape(-1),
                                                         ignore_index=-100)
            weight += decay ** j
            with torch.no_grad():
                acc.append((_count((logits.argmax(-1) == lab) & (lab != -100)), n))
        else:
            acc.append((0, 0))
    return total / max(weight, 1e-9), acc


def _count(mask: Any) -> int:
    """True entries of `mask`; a data-less meta tensor (specdraft.plan runs this loss at
    real shapes) counts as all true."""
    return mask.numel() if mask.device.type == "meta" else int(mask.sum())


def train_head(head: Any, train: list[Sequence], cfg: EagleSettings, log: Callable[[int, dict], None],
               held_out: Callable[[Any], dict[str, Any]] | None = None) -> list[dict]:
    """AdamW with cosine decay over at most cfg.epochs passes of `train` in shuffled
    batches; `log(step, metrics)` after every step. Returns the per-epoch metrics.

    `held_out(head)`: the head's acceptance on answers it does not train on (acceptance_stats
    figures; the stage simulates the decoding loop on them). With it and cfg.patience > 0,
    the epoch is chosen by held-out mean accepted length: training stops after `patience`
    epochs without a better one and the head gets that epoch's weights back. Why: a fixed
    epoch count either stops short or trains on past the point where the head only
    memorises its training answers, and the stage's time grew with it."""
    import random

    import torch

    to_draft = torch.full((head.t2d.shape[0],), -100, dtype=torch.long, device=head.device)
    vocab = head.d2t + torch.arange(len(head.d2t), device=head.device)
    to_draft[vocab] = torch.arange(len(vocab), device=head.device)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    # fixed batches in the data's order, shuffled in order each epoch. Batches of answers of
    # similar length pad 6-30 % less, but measured on the committed run they cost the CoD
    # heads 0.3 mean accepted length on the test questions for 8 % less time per epoch
    batches = [train[i:i + cfg.batch_size] for i in range(0, len(train), cfg.batch_size)]
    # on a GPU: bf16 autocast; batches built one at a time from host memory (at paper scale
    # all padded fp32 batches together would not fit beside the head's training)
    cuda = head.device.type == "cuda"
    stop_early = held_out is not None and cfg.patience > 0
    best: tuple[float, int, dict[str, Any]] | None = None  # (held-out mean accepted length, epoch, weights)
    history, step = [], 0
    for epoch in range(cfg.epochs):
        head.train()
        order = list(range(len(batches)))
        rng.shuffle(order)
        losses, hits = [], [[0, 0] for _ in range(cfg.ttt_steps)]
        for i in order:
            batch = make_batch(batches[i], cfg.ttt_steps, to_draft, head.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss, acc = ttt_loss(head, batch, cfg.ttt_steps, cfg.step_decay)
            del batch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(float(loss.detach()))
            for j, (c, n) in enumerate(acc):
                hits[j][0] += c
                hits[j][1] += n
            log(step, {"loss": float(loss.detach()), "lr": sched.get_last_lr()[0]})
        row = {"epoch": epoch + 1, "loss": sum(losses) / len(losses),
               **{f"step{j}_accuracy": c / n if n else 0.0 for j, (c, n) in enumerate(hits)}}
        if held_out is not None:
            head.eval()
            with torch.inference_mode():
                acc = held_out(head)
            row["held_out_mean_acceptance_length"] = acc["mean_acceptance_length"]
            row["held_out_acceptance"] = acc["acceptance_rate"]
            log(step, {"held_out_mean_acceptance_length": acc["mean_acceptance_length"]})
            if best is None or acc["mean_acceptance_length"] > best[0]:
                best = (acc["mean_acceptance_length"], epoch + 1,
                        {n: p.detach().clone() for n, p in head.named_parameters() if p.requires_grad})
        history.append(row)
        if stop_early and best is not None and epoch + 1 - best[1] >= cfg.patience:
            break
    if stop_early and best is not None and best[1] != len(history):
        with torch.no_grad():
            for n, p in head.named_parameters():
                if n in best[2]:
                    p.copy_(best[2][n])
    head.eval()
    return history


def best_epoch(history: list[dict], cfg: EagleSettings) -> int:
    """The epoch whose weights the head kept (train_head's rule): the best held-out mean
    accepted length when training stopped by it, else the last."""
    scored = [h for h in history if "held_out_mean_acceptance_length" in h]
    if not scored or cfg.patience == 0:
        return history[-1]["epoch"]
    return max(scored, key=lambda h: (h["held_out_mean_acceptance_length"], -h["epoch"]))["epoch"]
