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
                         prompts: PromptsConfig, k: int, dtype: str = "float32",
                         device: str = "cpu") -> dict[str, float]:
    """Acceptance a draft would get with greedy speculative decoding (draft length k) on
    the target's own outputs `rows[i]['response']` (see the module docstring), with the
    draft on `device` (the training device: a 0.5B draft over ~100 answers of ~1k tokens
    is minutes on a CPU and seconds on a GPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specdraft.evaluate.stats import acceptance_stats
    from specdraft.generate.models import torch_dtype
    from specdraft.prompts import render

    tok = AutoTokenizer.from_pretrained(model_dir)
    draft = AutoModelForCausalLM.from_pretrained(draft_dir, dtype=torch_dtype(dtype)).to(device).eval()
    rounds = proposed = accepted = 0
    hist = [0] * (k + 1)
    for r in rows:
        prompt = render(tok, messages(prompts, style, r["question"]))
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(r["response"], add_special_tokens=False)["input_ids"]
        if not r.get("truncated"):  # a finished answer ends with EOS, which is drafted too
            a_ids.append(tok.eos_token_id)
        ids = torch.tensor([p_ids + a_ids], device=device)
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
            if n:
                hist[acc] += 1
            pos += acc + 1
    return {"k": k, "rounds": rounds, "proposed": proposed, "accepted": accepted,
            **acceptance_stats(proposed, accepted, hist)}


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
