"""Training examples: prompt/completion conversations, the held-out split, the length check.

Kept apart from the trainers (specdraft.train.sft) because the held-out acceptance
(specdraft.train.acceptance) rebuilds the same split without loading the training stack.
The prompt comes from specdraft.prompts.messages, the function evaluation uses, so the
trained prompt is byte-identical to the evaluated one.
"""

from __future__ import annotations

from typing import Any

from specdraft.io import InputError
from specdraft.prompts import PromptsConfig, completion_example, messages


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
