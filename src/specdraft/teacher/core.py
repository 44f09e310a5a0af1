"""What every teacher backend shares: requests, results, validation and step statistics,
and which teacher rows make the training set (`training_rows`, read by later stages
without the teacher backends).

A backend turns TeacherItems (chat messages plus a key) into TeacherResults (text, finish
reason, usage, errors). Validation is the same for every backend, through the one
answer checker, so that the offline reference teacher and Gemini are held to one bar.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from pathlib import Path
from typing import Any, Protocol

from specdraft.answers import PATH_HASH, judge
from specdraft.io import StageError, read_jsonl

# Why a row is rejected; metrics count each one.
REJECT_REASONS = ("wrong_answer", "no_hash", "empty", "blocked", "truncated", "api_error")
BLOCKED_FINISH = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY"}


class TeacherError(StageError):
    """The teacher cannot go on (missing key, cost guard, failed job); nothing is lost."""


@dataclasses.dataclass(frozen=True)
class TeacherItem:
    key: str
    messages: list[dict[str, str]]
    reference: str | None = None  # the reference backend's answer (derived from gold)


@dataclasses.dataclass
class TeacherResult:
    text: str = ""
    finish_reason: str | None = None
    block_reason: str | None = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    thoughts_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Backend(Protocol):
    name: str

    def generate(self, items: list[TeacherItem]) -> dict[str, TeacherResult]: ...


def validate(result: TeacherResult, gold: str) -> tuple[str | None, dict[str, Any]]:
    """(reject reason or None, extraction info). Order: error, blocked, empty, truncated,
    missing '####', wrong answer; the first that applies is the reason."""
    info: dict[str, Any] = {"extracted": None, "extraction_path": None}
    if result.error:
        return "api_error", info
    if result.block_reason or (result.finish_reason or "") in BLOCKED_FINISH:
        return "blocked", info
    if not result.text.strip():
        return "empty", info
    if result.finish_reason == "MAX_TOKENS":
        return "truncated", info
    j = judge(result.text, gold)
    info = {"extracted": j.answer, "extraction_path": j.path}
    if j.path != PATH_HASH:
        return "no_hash", info
    if not j.correct:
        return "wrong_answer", info
    return None, info


# ------------------------------------------------------------------------ step statistics
# LaTeX math spans: $$..$$, $..$, \\[..\\], \\(..\\), \\begin{env}..\\end{env}.
MATH_SPAN = re.compile(r"\$\$.+?\$\$|\$.+?\$|\\\[.+?\\\]|\\\(.+?\\\)|\\begin\{(\w+\*?)\}.+?\\end\{\1\}", re.DOTALL)
_OPS = re.compile(r"\s*([=+\-*/×÷<>])\s*")


def steps(text: str) -> list[str]:
    """Reasoning steps: the non-empty lines before the '####' line."""
    body = text.split("####")[0]
    return [s.strip() for s in body.splitlines() if s.strip()]


def words(step: str) -> int:
    """Words in a step, where an equation or a math span counts as one word.

    The CoD budget ("5 words at most") is about prose: '48/2 = 24' is one draft word,
    like '48/2=24'. Math spans are collapsed, spaces around operators removed, then
    whitespace-separated tokens are counted.
    """
    s = MATH_SPAN.sub(" M ", step)
    s = _OPS.sub(r"\1", s)
    return len(s.split())


def step_stats(texts: list[str], budget: int = 5) -> dict[str, float]:
    per_step = [words(s) for t in texts for s in steps(t)]
    n_steps = [len(steps(t)) for t in texts]
    if not per_step:
        return {"words_per_step_median": 0.0, "words_per_step_p90": 0.0, "share_steps_within_budget": 0.0,
                "steps_mean": 0.0}
    # linear interpolation between order statistics, numpy's default percentile, as in
    # the data report (specdraft.report.analyze)
    p90 = statistics.quantiles(per_step, n=10, method="inclusive")[-1] if len(per_step) > 1 else per_step[0]
    return {"words_per_step_median": float(statistics.median(per_step)), "words_per_step_p90": float(p90),
            "share_steps_within_budget": sum(w <= budget for w in per_step) / len(per_step),
            "steps_mean": statistics.fmean(n_steps)}


TEACHER_FIELDS = ("id", "question", "answer", "response")


def training_rows(cot_file: str | Path, cod_file: str | Path, style: str) -> list[dict[str, Any]]:
    """The final training set of `style`: only questions accepted in both passes (the
    accepted CoT and CoD files of one scenario), by id."""
    cot = read_jsonl(cot_file, TEACHER_FIELDS)
    cod = read_jsonl(cod_file, TEACHER_FIELDS)
    both = {r["id"] for r in cot} & {r["id"] for r in cod}
    rows = cot if style == "cot" else cod
    return sorted((r for r in rows if r["id"] in both), key=lambda r: r["id"])
