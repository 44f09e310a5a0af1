"""Distillation data: the trained target answers its own training questions.

The draft is trained to imitate the target, mistakes included (DistillSpec: aligning the
draft with the target is what raises acceptance), so every answer is kept by default;
`keep: correct` keeps only those the shared answer checker accepts.

How well a draft trained on these answers is accepted: specdraft.train.acceptance.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from tqdm import tqdm

from specdraft.answers import judge
from specdraft.config import setting
from specdraft.generate.api import GenerationConfig
from specdraft.generate.engine import make_engine
from specdraft.generate.resume import Resumable
from specdraft.io import InputError
from specdraft.prompts import PromptsConfig, messages

KEEP = ("all", "correct")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    keep: str = setting("all", choices=("all", "correct"))


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
