"""Resumable passes of an engine over a list of questions: the one place that turns
questions into judged answers, used by distillation and evaluation alike.

A pass appends one record per question to its partial file (specdraft.generate.resume)
as soon as the question's batch is done, so a killed stage resumes where it stopped.
Every record has the same fields, whatever the engine or pass: the judged answer (the
shared checker), the token ids, the speculative counts when there are any, and the
question's share of its batch's wall time (`batch_share_s`, from which throughput
follows) or, at batch 1, its own latency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from specdraft.answers import judge
from specdraft.generate.api import Engine, GenOutput
from specdraft.generate.resume import Resumable


def record(row: dict[str, Any], o: GenOutput, batch: int) -> dict[str, Any]:
    """One question's result: answer judged against row['answer'], tokens, counts, time."""
    j = judge(o.text, row["answer"])
    return {"id": row["id"], "answer": row["answer"], "output": o.text, "extracted": j.answer,
            "extraction_path": j.path, "correct": j.correct, "output_tokens": o.output_tokens,
            "truncated": o.truncated, "token_ids": o.token_ids, "latency_s": o.latency_s,
            "batch_share_s": o.latency_s / batch, "rounds": o.rounds, "proposed": o.proposed,
            "accepted": o.accepted, "accepted_hist": o.accepted_hist, "draft_forward_s": o.draft_forward_s,
            "target_forward_s": o.target_forward_s, "simulated": o.simulated}


def as_output(rec: dict[str, Any]) -> GenOutput:
    """A record back as the engine's result type (e.g. plain answers for a simulation)."""
    return GenOutput(text=rec["output"], token_ids=rec["token_ids"], prompt_tokens=0,
                     output_tokens=rec["output_tokens"], latency_s=rec["latency_s"], truncated=rec["truncated"])


def _chunks(engine: Engine, rows: list[dict[str, Any]], resume: Resumable, desc: str,
            run: Callable[[list[dict[str, Any]]], list[GenOutput]]) -> dict[str, dict[str, Any]]:
    todo = [r for r in rows if r["id"] not in resume.done]
    bs = engine.cfg.batch_size
    for i in tqdm(range(0, len(todo), bs), desc=desc, unit="batch", disable=not todo):
        chunk = todo[i:i + bs]
        for r, o in zip(chunk, run(chunk), strict=True):
            resume.add(record(r, o, len(chunk)))
    return {r["id"]: resume.done[r["id"]] for r in rows}


def batched_answers(engine: Engine, rows: list[dict[str, Any]], texts: dict[str, str], resume: Resumable,
                    desc: str = "answers (batched)") -> dict[str, dict[str, Any]]:
    """Plain greedy answers to every question, in batches of generation.batch_size."""
    return _chunks(engine, rows, resume, desc, lambda chunk: engine.generate([texts[r["id"]] for r in chunk]))


def speculative_answers(engine: Engine, rows: list[dict[str, Any]], texts: dict[str, str],
                        plain: dict[str, dict[str, Any]], draft: str, resume: Resumable) -> dict[str, dict[str, Any]]:
    """`draft`'s acceptance on every question (Engine.speculative_pass: simulated exactly by
    the hf engine, decoded in batches by vLLM)."""
    return _chunks(engine, rows, resume, f"speculative {draft}",
                   lambda chunk: engine.speculative_pass([texts[r["id"]] for r in chunk],
                                                         [as_output(plain[r["id"]]) for r in chunk], draft))


def run_order(configs: list[Any], i: int) -> list[Any]:
    """The order in which question i's configurations are timed: rotated by i."""
    k = i % len(configs) if configs else 0
    return configs[k:] + configs[:k]


def timed_answers(engine: Engine, rows: list[dict[str, Any]], texts: dict[str, str],
                  configs: dict[str | None, Resumable]) -> dict[str | None, dict[str, dict[str, Any]]]:
    """Batch-1 decoding of every question under each configuration in `configs` (None:
    plain, else a draft's name), interleaved per question so that machine noise hits
    every configuration alike, in an order that rotates from one question to the next
    (question i starts with configuration i mod len(configs)): an order effect (a warm
    cache, a frequency ramp) then falls on each configuration in turn, not always on the
    speculative one."""
    todo = [r for r in rows if any(r["id"] not in res.done for res in configs.values())]
    names = "/".join(c or "plain" for c in configs)
    for r in tqdm(todo, desc=f"timed {names} (batch 1)", unit="q", disable=not todo):
        for c in run_order(list(configs), rows.index(r)):
            if r["id"] not in configs[c].done:
                configs[c].add(record(r, engine.generate_one(texts[r["id"]], c), 1))
    return {c: {r["id"]: res.done[r["id"]] for r in rows} for c, res in configs.items()}
