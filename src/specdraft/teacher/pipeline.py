"""The two teacher passes: CoT for every training question, then a CoD of each verified CoT.

Both passes go through one backend interface and one validation, and write accepted rows,
rejected rows (with the reason) and metrics. The final CoT and CoD training sets cover the
same questions: a CoD exists only for an accepted CoT, and `core.training_rows` keeps only the
questions accepted in both passes.
"""

from __future__ import annotations

import collections
import statistics
from pathlib import Path
from typing import Any

from specdraft.io import InputError
from specdraft.prompts import PromptsConfig, messages, summarize_messages
from specdraft.teacher.core import (
    REJECT_REASONS,
    Backend,
    LengthLimit,
    TeacherConfig,
    TeacherError,
    TeacherItem,
    TeacherResult,
    step_stats,
    validate,
)
from specdraft.teacher.gemini import GeminiBatchBackend, GeminiInteractiveBackend, usage_cost
from specdraft.teacher.reference import ReferenceBackend, cod_from_cot, cot_from_gold

PREPARED_FIELDS = ("id", "question", "solution", "answer", "format")


def make_backend(cfg: TeacherConfig, state_dir: Path) -> Backend:
    """The backend teacher.backend names (its choices are checked where it is built)."""
    if cfg.backend == "reference":
        return ReferenceBackend()
    if cfg.backend == "gemini-batch":
        return GeminiBatchBackend(cfg, state_dir)
    return GeminiInteractiveBackend(cfg)


def _finish(rows: list[dict[str, Any]], items: list[TeacherItem], results: dict[str, TeacherResult],
            backend: Backend, cfg: TeacherConfig, style: str, prompts: PromptsConfig, limit: LengthLimit | None,
            extra: dict[str, dict[str, Any]] | None = None,
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Accepted and rejected rows (each with its reason) and the pass's metrics. `style`:
    the training set the answers go to, whose prompt counts towards their training length."""
    accepted, rejected = [], []
    reasons: collections.Counter[str] = collections.Counter()
    model = "reference" if backend.name == "reference" else cfg.model
    for row in rows:
        res = results[row["id"]]
        length = None if limit is None else \
            (lambda q=row["question"], t=res.text: limit.tokens(messages(prompts, style, q), t))
        why, info = validate(res, row["answer"], length, limit.max_length if limit else None)
        out = {"id": row["id"], "question": row["question"], "answer": row["answer"], "response": res.text,
               **info, "teacher": model, "finish_reason": res.finish_reason,
               "usage": {"input_tokens": res.input_tokens, "output_tokens": res.output_tokens,
                         "thoughts_tokens": res.thoughts_tokens},
               **(extra or {}).get(row["id"], {})}
        if why is None:
            accepted.append(out)
        else:
            reasons[why] += 1
            rejected.append({**out, "reason": why, "error": res.error, "block_reason": res.block_reason})
    res_list = [results[r["id"]] for r in rows]
    metrics: dict[str, Any] = {
        "backend": backend.name, "model": model, "requested": len(rows), "accepted": len(accepted),
        "accepted_share": len(accepted) / len(rows) if rows else 0.0, "rejected": len(rejected),
        "rejected_by_reason": {r: reasons.get(r, 0) for r in REJECT_REASONS},
        "tokens_in": sum(r.input_tokens for r in res_list),
        "tokens_out": sum(r.output_tokens + r.thoughts_tokens for r in res_list),
        "cost_usd": 0.0 if backend.name == "reference" else usage_cost(res_list, cfg, getattr(backend, "batch", False)),
        "max_length": limit.max_length if limit else None,
        "training_tokens_max": max((r["training_tokens"] for r in accepted), default=None) if limit else None,
    }
    if rows and metrics["accepted_share"] < cfg.min_accepted_share:
        raise TeacherError(f"the teacher accepted {len(accepted)} of {len(rows)} answers "
                           f"({metrics['accepted_share']:.0%} < teacher.min_accepted_share "
                           f"{cfg.min_accepted_share:.0%}); rejected by reason: "
                           f"{ {k: v for k, v in metrics['rejected_by_reason'].items() if v} }"
                           + next((f" (first service error: {r['error']})" for r in rejected if r.get("error")), "")
                           + ". Nothing was written; "
                           "the teacher's results are kept (a rerun does not pay again): fix the prompts or "
                           "settings, or lower the share")
    return accepted, rejected, metrics


def run_cot(rows: list[dict[str, Any]], prompts: PromptsConfig, cfg: TeacherConfig, state_dir: Path,
            limit: LengthLimit | None = None):
    """CoT pass over prepared training rows (`limit`: answers must fit training)."""
    backend = make_backend(cfg, state_dir)
    items = [TeacherItem(r["id"], messages(prompts, "cot", r["question"]),
                         reference=cot_from_gold(r["solution"], r["format"], r["answer"])) for r in rows]
    results = backend.generate(items)
    acc, rej, m = _finish(rows, items, results, backend, cfg, "cot", prompts, limit)
    m.update(step_stats([r["response"] for r in acc]))
    return acc, rej, m


def run_cod(cot_rows: list[dict[str, Any]], prepared: dict[str, dict[str, Any]], prompts: PromptsConfig,
            cfg: TeacherConfig, state_dir: Path, limit: LengthLimit | None = None):
    """CoD pass: summarise each accepted CoT; the result must still reach the gold answer."""
    backend = make_backend(cfg, state_dir)
    items = []
    for r in cot_rows:
        src = prepared.get(r["id"])
        if src is None:
            raise InputError(f"teacher CoT row {r['id']!r} is not in the prepared training set")
        items.append(TeacherItem(r["id"], summarize_messages(prompts, r["question"], r["response"]),
                                 reference=cod_from_cot(r["response"], src["format"], src["solution"])))
    results = backend.generate(items)
    acc, rej, m = _finish(cot_rows, items, results, backend, cfg, "cod", prompts, limit,
                          extra={r["id"]: {"cot": r["response"]} for r in cot_rows})
    m.update(step_stats([r["response"] for r in acc]))
    ratios = [len(r["response"]) / max(1, len(r["cot"])) for r in acc]
    m["chars_ratio_cod_over_cot_mean"] = statistics.fmean(ratios) if ratios else 0.0
    m["paired"] = len(acc)  # questions with an accepted CoT and an accepted CoD
    return acc, rej, m
