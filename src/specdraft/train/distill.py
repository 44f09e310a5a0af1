"""Distillation data: the trained target answers its own training questions.

The draft is trained to imitate the target, mistakes included (DistillSpec: aligning the
draft with the target is what raises acceptance), so every answer is kept by default;
`keep: correct` keeps only those the shared answer checker accepts.

A draft needs the target's answers, not gold ones, so it can learn from questions the
target never trained on: `extra_questions` more come from the prepared extra questions
(the rest of the training pool, then the data's extra split). The target's accuracy in
the metrics stays that on its training questions; the extra ones are counted apart.

How well a draft trained on these answers is accepted: specdraft.train.acceptance.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from specdraft.config import setting
from specdraft.generate.api import GenerationConfig
from specdraft.generate.engine import make_engine
from specdraft.generate.passes import batched_answers
from specdraft.generate.resume import Resumable
from specdraft.prompts import PromptsConfig, messages


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    keep: str = setting("all", choices=("all", "correct"))
    extra_questions: int = setting(0, ge=0)


def distill(target_dir: Path, train: list[dict[str, Any]], style: str, prompts: PromptsConfig,
            gen: GenerationConfig, cfg: DistillConfig, resume: Resumable,
            device: str | None = None, extra: list[dict[str, Any]] = ()) -> tuple[list[dict], dict[str, Any]]:
    """The target's greedy answers to its training questions `train` and to the `extra`
    ones (the evaluation's batched pass), as training rows for the draft (`response`), and
    their accuracy and lengths. `gen` as specdraft.device.resolve applied it on `device`
    (None: what torch finds)."""
    own_ids = {r["id"] for r in train}
    extra = [r for r in extra if r["id"] not in own_ids]  # prepare keeps them apart; never counted twice
    extra_ids = {r["id"] for r in extra}
    rows = list(train) + extra
    todo = [r for r in rows if r["id"] not in resume.done]
    if todo:
        with make_engine(target_dir, None, gen, device=device) as engine:
            texts = {r["id"]: engine.render(messages(prompts, style, r["question"])) for r in rows}
            batched_answers(engine, rows, texts, resume, f"distill {target_dir.name}")
    done = [{"id": r["id"], "question": r["question"], **{k: v for k, v in resume.done[r["id"]].items()
                                                           if k in KEEP_FIELDS}} for r in rows]
    for d in done:  # the answer as text (for training) and as the ids the target generated (for acceptance)
        d["response"], d["response_ids"] = d.pop("output"), d.pop("token_ids")
        if d["id"] in extra_ids:
            d["extra"] = True
    # An answer that is nothing but the end of the turn gives the draft no token to learn
    # to propose (and training refuses an empty response): left out and counted.
    empty = [r for r in done if not r["response"].strip()]
    kept = [r for r in done if r["response"].strip() and (cfg.keep == "all" or r["correct"])]
    own = [r for r in done if r["id"] not in extra_ids]
    metrics = {"cpu_kernels": gen.cpu_kernels, **_answers(own), "kept": len(kept), "keep": cfg.keep, "empty": len(empty),
               "extraction_paths": {p: sum(r["extraction_path"] == p for r in own)
                                    for p in sorted({r["extraction_path"] for r in own})}}
    if cfg.extra_questions:
        metrics["extra"] = _answers([r for r in done if r["id"] in extra_ids])
    return kept, metrics


def _answers(done: list[dict[str, Any]]) -> dict[str, Any]:
    toks = [r["output_tokens"] for r in done]
    return {"n": len(done), "accuracy": sum(r["correct"] for r in done) / len(done),
            "mean_output_tokens": statistics.fmean(toks), "median_output_tokens": statistics.median(toks),
            "truncation_rate": sum(r["truncated"] for r in done) / len(done)}


KEEP_FIELDS = ("answer", "output", "token_ids", "extracted", "extraction_path", "correct", "output_tokens",
               "truncated")
