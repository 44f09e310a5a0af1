"""How well a draft would be accepted on the target's own answers, measured while training.

Exact up to rounding and cheap: greedy speculative decoding accepts a drafted token iff it
equals the target's next greedy token, and the target's greedy continuation is its
distilled answer (the token ids it generated), so one teacher-forced forward of the draft
over prompt + answer gives every acceptance decision of every round for a fixed draft
length; the rounds are then counted by the decoding loop's own rule
(specdraft.generate.rounds.count_rounds). Evaluation measures acceptance with the decoding
loop itself (specdraft.generate.greedy.simulate). Kept apart from the generation engines so
that train_draft does not depend on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specdraft.generate.rounds import count_rounds
from specdraft.io import InputError
from specdraft.prompts import PromptsConfig, messages


def simulated_acceptance(model_dir: Path, draft_dir: Path, rows: list[dict[str, Any]], style: str,
                         prompts: PromptsConfig, k: int, dtype: str = "float32",
                         device: str = "cpu") -> dict[str, float]:
    """Acceptance a draft would get with greedy speculative decoding (draft length k) on
    the target's own outputs, the token ids it generated (`rows[i]['response_ids']`, EOS
    included when it stopped; decoded text would not always re-tokenise to them), with
    the draft on `device` (the training device: a 0.5B draft over ~100 answers of ~1k
    tokens is minutes on a CPU and seconds on a GPU). The rounds are counted by the
    decoding loop's own rule (specdraft.generate.rounds), with no token budget: the
    estimate drafts k tokens up to the answer's end, as decoding does unless the answer
    ends within k tokens of generation.max_new_tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specdraft.evaluate.stats import acceptance_stats, pooled_hist
    from specdraft.generate.models import torch_dtype
    from specdraft.prompts import render

    tok = AutoTokenizer.from_pretrained(model_dir)
    draft = AutoModelForCausalLM.from_pretrained(draft_dir, dtype=torch_dtype(dtype)).to(device).eval()
    counted = []
    for r in rows:
        if not r.get("response_ids"):
            raise InputError(f"distilled row {r.get('id', '?')}: no response_ids (the target's generated token ids; "
                             "re-run the distill stage)")
        prompt = render(tok, messages(prompts, style, r["question"]))
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = list(r["response_ids"])
        ids = torch.tensor([p_ids + a_ids], device=device)
        with torch.inference_mode():
            pred = draft(ids).logits[0, len(p_ids) - 1:-1].argmax(-1).tolist()
        counted.append(count_rounds([p == t for p, t in zip(pred, a_ids, strict=True)], k,
                                    len(a_ids) if r.get("truncated") else None))
    proposed, accepted = sum(c.proposed for c in counted), sum(c.accepted for c in counted)
    return {"k": k, "rounds": sum(c.rounds for c in counted), "proposed": proposed, "accepted": accepted,
            **acceptance_stats(proposed, accepted, pooled_hist([c.hist for c in counted]) or [0] * (k + 1))}


def held_out_acceptance(rows: list[dict[str, Any]], prompts: PromptsConfig, style: str, val_share: float, seed: int,
                        target: Path, trained: Path, untrained: Path, k: int, device: str = "cpu",
                        dtype: str = "float32") -> dict[str, Any]:
    """Acceptance of the trained and the untrained draft on the rows the draft's training
    held out (the split the trainer used for its eval loss, from val_share and seed; all
    rows when none was), so train_draft's metrics say what distillation bought before any
    evaluation runs."""
    from specdraft.train.examples import build_examples, split

    _, val_ex = split(build_examples(rows, prompts, style, "response"), val_share, seed)
    val_q = {e["prompt"][-1]["content"] for e in val_ex}
    held = [r for r in rows if r["question"].strip() in val_q] or rows
    out: dict[str, Any] = {"acceptance_rows": len(held), "acceptance_device": device}
    for which, d in (("trained", trained), ("untrained", untrained)):
        sim = simulated_acceptance(target, d, held, style, prompts, k, dtype, device)
        out[f"acceptance_{which}"] = sim["acceptance_rate"]
        out[f"mean_acceptance_length_{which}"] = sim["mean_acceptance_length"]
    return out
