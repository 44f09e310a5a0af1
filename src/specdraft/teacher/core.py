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
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from specdraft.answers import PATH_HASH, judge
from specdraft.config import setting
from specdraft.io import StageError, read_jsonl


# ---------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class PollConfig:
    initial_s: float = setting(30.0, gt=0)
    max_s: float = setting(600.0, gt=0)
    multiplier: float = setting(1.5, ge=1)
    timeout_s: float = setting(172800.0, gt=0)  # jobs expire after 48 h


@dataclasses.dataclass(frozen=True)
class RetryConfig:
    """Retries of temporary errors (429, 5xx, connection): attempts include the first."""

    attempts: int = setting(8, ge=1)
    initial_s: float = setting(1.0, gt=0)
    max_s: float = setting(60.0, gt=0)


@dataclasses.dataclass(frozen=True)
class Price:
    """USD per million tokens at the interactive price; thinking tokens bill as output."""

    input: float = setting(ge=0)
    output: float = setting(ge=0)


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """Section `teacher` of params.yaml."""

    backend: str = setting(choices=("reference", "gemini-batch", "gemini"))
    model: str = setting(key_of="prices_per_mtok")  # a model with a price, so its cost is guarded
    temperature: float = setting(ge=0)
    max_output_tokens: int = setting(ge=1)
    thinking_budget: int = setting(ge=-1)  # -1: the model's default
    prices_per_mtok: dict[str, Price] = setting()
    batch_discount: float = setting(0.5, gt=0, le=1)
    max_cost_usd: float = setting(25.0, ge=0)
    max_resubmits: int = setting(2, ge=0)
    poll: PollConfig = dataclasses.field(default_factory=PollConfig)
    retry: RetryConfig = dataclasses.field(default_factory=RetryConfig)
    state_dir: str = ".specdraft/teacher"
    api_version: str = "v1beta"  # the Batch API lives on v1beta
    # A pass that accepts less than this share of its questions fails (with the counts by
    # reject reason) instead of training on what little is left; results are kept for a rerun.
    min_accepted_share: float = setting(0.5, ge=0, le=1)

    def price(self) -> Price:
        return self.prices_per_mtok[self.model]



# Why a row is rejected; metrics count each one. too_long: the training sequence (prompt +
# answer in the chat template) is longer than train_target.max_length, so training would cut
# the answer and its end-of-turn token.
REJECT_REASONS = ("wrong_answer", "no_hash", "empty", "blocked", "truncated", "too_long", "api_error")
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


@dataclasses.dataclass(frozen=True)
class LengthLimit:
    """The training length an answer must fit: `tokens(messages, text)` counts the training
    sequence with the target's tokenizer (specdraft.prompts.training_length)."""

    tokenizer: Any
    max_length: int

    def tokens(self, msgs: list[dict[str, str]], text: str) -> int:
        from specdraft.prompts import training_length

        return training_length(self.tokenizer, msgs, text)


def validate(result: TeacherResult, gold: str, training_tokens: Callable[[], int] | None = None,
             max_length: int | None = None) -> tuple[str | None, dict[str, Any]]:
    """(reject reason or None, extraction info). Order: error, blocked, empty, truncated,
    missing '####', wrong answer, too long for training (`training_tokens()` > max_length);
    the first that applies is the reason."""
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
    if training_tokens is not None and max_length is not None:
        info["training_tokens"] = training_tokens()
        if info["training_tokens"] > max_length:
            return "too_long", info
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
