"""How well a draft would be accepted on the target's own answers, measured while training.

Exact and cheap: greedy speculative decoding accepts a drafted token iff it equals the
target's next greedy token, and the target's greedy continuation is the distilled text,
so one teacher-forced forward of the draft over prompt + answer gives every acceptance
decision of every round for a fixed draft length. (Evaluation measures acceptance with
the decoding loop itself: specdraft.generate.greedy.simulate.) Kept apart from the
generation engines so that train_draft does not depend on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from specdraft.prompts import PromptsConfig, messages


def simulated_acceptance(model_dir: Path, draft_dir: Path, rows: list[dict[str, Any]], style: str,
                         prompts: PromptsConfig, k: int, dtype: str = "float32") -> dict[str, float]:
    """Acceptance a draft would get with greedy speculative decoding (draft length k) on
    the target's own outputs `rows[i]['response']` (see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specdraft.generate.models import torch_dtype
    from specdraft.prompts import render

    tok = AutoTokenizer.from_pretrained(model_dir)
    draft = AutoModelForCausalLM.from_pretrained(draft_dir, dtype=torch_dtype(dtype)).eval()
    rounds = proposed = accepted = tokens = 0
    for r in rows:
        prompt = render(tok, messages(prompts, style, r["question"]))
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(r["response"], add_special_tokens=False)["input_ids"]
        if not r.get("truncated"):  # a finished answer ends with EOS, which is drafted too
            a_ids.append(tok.eos_token_id)
        ids = torch.tensor([p_ids + a_ids])
        with torch.inference_mode():
            pred = draft(ids).logits[0, len(p_ids) - 1:-1].argmax(-1).tolist()
        match = [int(p == t) for p, t in zip(pred, a_ids, strict=True)]
        pos = 0
        while pos < len(a_ids):
            n = min(k, len(a_ids) - pos - 1)  # no drafting past the end
            acc = 0
            while acc < n and match[pos + acc]:
                acc += 1
            rounds += 1
            proposed += n
            accepted += acc
            pos += acc + 1
        tokens += len(a_ids)
    return {"k": k, "rounds": rounds, "proposed": proposed, "accepted": accepted,
            "acceptance_rate": accepted / proposed if proposed else 0.0,
            "mean_acceptance_length": tokens / rounds if rounds else 0.0}
