"""Making the draft cheap: a restricted-vocabulary head and int8 weights.

Why: a small draft's cost is dominated by its output head. The 2-layer self-draft of
SmolLM2-135M spends most of a forward in its 49,152 x 576 head, and Qwen2.5-0.5B's tied
151,936 x 896 head is ~136M of its ~494M parameters. FR-Spec (Zhao et al. 2025,
"frequency-ranked speculative sampling") drafts from the N most frequent tokens only:
the draft's head keeps N rows, the target still verifies over the full vocabulary, so
greedy output is unchanged; a token outside the subset is simply never proposed (lower
acceptance, never a wrong output).

Here the frequencies come from the draft's own training data (the target's distilled
answers), ties broken by frequency in the questions, and the special tokens are always
kept. `coverage` says how much of the target's output the subset can reach.

`quantize_int8` applies torch's dynamic int8 quantisation to the draft's linears. Its
activation scales depend on the rows in a call, so it is not exact; that is harmless for
a draft (its proposals are checked) and never applied to the target.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable
from typing import Any


def token_ranking(tokenizer: Any, answers: Iterable[str], questions: Iterable[str] = ()) -> list[int]:
    """Token ids seen in `answers`, most frequent first (ties: more frequent in
    `questions`, then lower id), then ids seen only in `questions`."""
    in_answers, in_questions = Counter(), Counter()
    for text in answers:
        in_answers.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    for text in questions:
        in_questions.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    seen = set(in_answers) | set(in_questions)
    return sorted(seen, key=lambda t: (-in_answers[t], -in_questions[t], t))


def vocab_subset(tokenizer: Any, ranking: list[int], n: int, vocab_size: int) -> list[int]:
    """The first `n` ids of `ranking` plus every special token, sorted (all ids < vocab_size).

    With fewer than n ranked ids, the subset is just those seen: a token the draft never
    saw in training is one it would not propose correctly anyway."""
    keep = set(ranking[:n]) | set(tokenizer.all_special_ids)
    return sorted(t for t in keep if 0 <= t < vocab_size)


def coverage(subset: Iterable[int], token_ids: Iterable[Iterable[int]]) -> float:
    """Share of the tokens in `token_ids` (e.g. the target's outputs) inside `subset`."""
    s = set(subset)
    total = inside = 0
    for ids in token_ids:
        for t in ids:
            total += 1
            inside += t in s
    return inside / total if total else 0.0


def _restricted_head_class():
    import torch

    class RestrictedHead(torch.nn.Module):
        """An output head over a subset of the vocabulary, returning full-size logits in
        which every token outside the subset has the lowest float (greedy never picks it).

        `sub` is an ordinary nn.Linear, so the CPU kernels or int8 quantisation can swap it."""

        def __init__(self, head: torch.nn.Linear, ids: list[int]):
            super().__init__()
            self.vocab_size = head.out_features
            w = head.weight.detach()[torch.tensor(ids, device=head.weight.device)].clone()
            self.sub = torch.nn.Linear(head.in_features, len(ids), bias=head.bias is not None,
                                       device=w.device, dtype=w.dtype)
            with torch.no_grad():
                self.sub.weight.copy_(w)
                if head.bias is not None:
                    self.sub.bias.copy_(head.bias.detach()[ids])
            self.register_buffer("ids", torch.tensor(ids, dtype=torch.long, device=w.device), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            part = self.sub(x)
            out = part.new_full((*part.shape[:-1], self.vocab_size), torch.finfo(part.dtype).min)
            out[..., self.ids] = part
            return out

    return RestrictedHead


def restrict_head(model: Any, ids: list[int]) -> None:
    """Replace `model`'s output head, in place, by one over the token ids `ids`."""
    head = model.get_output_embeddings()
    model.set_output_embeddings(_restricted_head_class()(head, ids))


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of every nn.Linear (weights int8, activations quantised per
    call); returns the quantised model (CPU only)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch 2.13 marks the quantized tensor types deprecated
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def cheapen(model: Any, subset: list[int] | None, quant: str, kernels: str) -> Any:
    """The draft as generation.* asks: head restricted to `subset` (None: full), then int8
    weights (`quant`), then packed kernels for the linears int8 left alone; returns it."""
    if subset is not None:
        restrict_head(model, subset)
    if quant == "int8":
        model = quantize_int8(model)
    if kernels == "onednn":
        from specdraft.generate.cpu_kernels import pack_linears

        pack_linears(model)
    return model
