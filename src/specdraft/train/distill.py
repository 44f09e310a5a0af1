"""Distillation data: the trained target answers its own training questions.

The draft is trained to imitate the target, mistakes included (DistillSpec: aligning the
draft with the target is what raises acceptance), so every answer is kept by default;
`keep: correct` keeps only those the shared answer checker accepts.

`simulated_acceptance` measures how well a draft would be accepted on these outputs,
exactly and cheaply: greedy speculative decoding accepts a drafted token iff it equals
the target's next greedy token, and the target's greedy continuation is the distilled
text, so one teacher-forced forward of the draft over prompt + answer gives every
acceptance decision of every round for a fixed draft length.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from tqdm import tqdm

from specdraft.answers import judge
from specdraft.generate.engine import GenerationConfig, make_engine
from specdraft.generate.resume import Resumable
from specdraft.io import InputError
from specdraft.prompts import PromptsConfig, messages

KEEP = ("all", "correct")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    keep: str = "all"


def distill(target_dir: Path, rows: list[dict[str, Any]], style: str, prompts: PromptsConfig,
            gen: GenerationConfig, cfg: DistillConfig, resume: Resumable) -> tuple[list[dict], dict[str, Any]]:
    if cfg.keep not in KEEP:
        raise InputError(f"params.yaml: distill.keep: {cfg.keep!r} unknown; valid: {list(KEEP)}")
    todo = [r for r in rows if r["id"] not in resume.done]
    if todo:
        engine = make_engine(target_dir, None, gen)
        bs = gen.batch_size
        for i in tqdm(range(0, len(todo), bs), desc=f"distill {target_dir.name}", unit="batch"):
            chunk = todo[i:i + bs]
            outs = engine.generate([engine.render(messages(prompts, style, r["question"])) for r in chunk])
            for r, o in zip(chunk, outs, strict=True):
                j = judge(o.text, r["answer"])
                resume.add({"id": r["id"], "question": r["question"], "answer": r["answer"], "response": o.text,
                            "extracted": j.answer, "extraction_path": j.path, "correct": j.correct,
                            "output_tokens": o.output_tokens, "truncated": o.truncated})
    done = [resume.done[r["id"]] for r in rows]
    kept = done if cfg.keep == "all" else [r for r in done if r["correct"]]
    toks = [r["output_tokens"] for r in done]
    metrics = {"n": len(done), "kept": len(kept), "keep": cfg.keep,
               "accuracy": sum(r["correct"] for r in done) / len(done),
               "mean_output_tokens": statistics.fmean(toks), "median_output_tokens": statistics.median(toks),
               "truncation_rate": sum(r["truncated"] for r in done) / len(done),
               "extraction_paths": {p: sum(r["extraction_path"] == p for r in done)
                                    for p in sorted({r["extraction_path"] for r in done})}}
    return kept, metrics


def simulated_acceptance(model_dir: Path, draft_dir: Path, rows: list[dict[str, Any]], style: str,
                         prompts: PromptsConfig, k: int, dtype: str = "float32") -> dict[str, float]:
    """Acceptance a draft would get with greedy speculative decoding (draft length k) on
    the target's own outputs `rows[i]['response']` (see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specdraft.generate.engine import render
    from specdraft.generate.models import torch_dtype

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
