"""The one answer checker: teacher filtering, distillation and evaluation all use it.

Why one module: the public implementation this project learns from scored its baseline
with a different extractor than its trained models, which made the comparison an
artifact of the harness. Here every stage extracts and compares answers through the
functions below, and every extraction records which rule fired so that the reports can
show how often a score rests on a weak fallback such as "the last number".

Equivalence is decided by math-verify (gold first, as its documentation requires), after
a fast exact path for plain numbers (GSM8K answers: "1,000", "$12", "12.0" are all 12).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

# Extraction paths, strongest first. Reports count them.
PATH_HASH = "hash"  # '#### <answer>' (the format every prompt asks for)
PATH_BOXED = "boxed"  # the last \boxed{...} or \fbox{...}
PATH_ANSWER_IS = "answer_is"  # "... the answer is X"
PATH_LAST_NUMBER = "last_number"  # the last number in the text (weak fallback)
PATH_NONE = "none"

GOLD_FORMATS = ("gsm8k", "math")

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")
_HASH = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*(.+?)(?:\.\s|\.?$|\n)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Extraction:
    """An answer string pulled out of a text, and the rule that found it."""

    answer: str | None
    path: str

    @property
    def found(self) -> bool:
        return self.answer is not None


# ----------------------------------------------------------------------------- boxed
def boxed_matches(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every \\boxed{...}/\\fbox{...} (nested braces) and
    \\boxed 5, in order; the one scanner of boxed answers (the reference teacher uses it
    to unbox)."""
    out: list[tuple[int, int, str]] = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*(\{)?", text):
        if m.group(1) is None:
            # "\boxed 5": the argument is the next token up to whitespace or '$'.
            rest = re.match(r"\s*([^\s$]+)", text[m.end():])
            if rest:
                out.append((m.start(), m.end() + rest.end(), rest.group(1)))
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            out.append((m.start(), i, text[m.end(): i - 1]))
    return out


def _boxed_spans(text: str) -> list[str]:
    return [content for _, _, content in boxed_matches(text)]


def last_boxed(text: str) -> str | None:
    spans = _boxed_spans(text)
    return spans[-1].strip() if spans else None


# ------------------------------------------------------------------------ normalising
def normalize_number(s: str) -> str | None:
    """'$1,000.00' -> '1000'; '12.0' -> '12'; '0.50' -> '0.5'. None if not a plain number."""
    t = s.strip().rstrip(".").replace(",", "").replace("$", "").replace("\\$", "").strip()
    t = re.sub(r"\\(?:text|mbox)\{[^}]*\}", "", t).strip()
    t = t.rstrip("%").strip()
    if not re.fullmatch(r"-?\d+(?:\.\d+)?|-?\.\d+", t):
        return None
    if "." in t:
        t = t.rstrip("0").rstrip(".")
        if t in ("", "-"):
            t = "0"
    if t.startswith("-") and t.strip("-0.") == "":
        t = "0"
    if t.startswith("."):
        t = "0" + t
    if t.startswith("-."):
        t = "-0" + t[1:]
    # strip leading zeros of the integer part ("007" -> "7")
    sign = "-" if t.startswith("-") else ""
    body = t.lstrip("-")
    ip, _, fp = body.partition(".")
    ip = ip.lstrip("0") or "0"
    return sign + ip + ("." + fp if fp else "")


def normalize_answer(s: str) -> str:
    """The canonical text stored as a gold answer: a plain number when it is one."""
    s = s.strip().strip("$").strip()
    num = normalize_number(s)
    return num if num is not None else s


# ------------------------------------------------------------------------- extracting
def extract_gold(solution: str, fmt: str) -> str | None:
    """The final answer of a gold solution: GSM8K '#### N', MATH the last \\boxed{}
    (`fmt` is one of GOLD_FORMATS, the choices of data.datasets.*.answer_format)."""
    if fmt == "gsm8k":
        m = _HASH.findall(solution)
        return normalize_answer(m[-1]) if m else None
    b = last_boxed(solution)
    return normalize_answer(b) if b is not None else None


def extract_answer(text: str) -> Extraction:
    """Pull the final answer out of a model's (or the teacher's) response.

    Order: '####' (what every prompt asks for), then the last \\boxed{}, then
    "the answer is", then the last number. The path is returned with the answer.
    """
    m = _HASH.findall(text)
    if m and m[-1].strip():
        ans = m[-1].strip()
        inner = last_boxed(ans)
        return Extraction(normalize_answer(inner if inner is not None else ans), PATH_HASH)
    b = last_boxed(text)
    if b:
        return Extraction(normalize_answer(b), PATH_BOXED)
    m2 = _ANSWER_IS.findall(text)
    if m2 and m2[-1].strip():
        return Extraction(normalize_answer(m2[-1].strip().strip("$")), PATH_ANSWER_IS)
    nums = _NUMBER.findall(text)
    if nums:
        return Extraction(normalize_answer(nums[-1]), PATH_LAST_NUMBER)
    return Extraction(None, PATH_NONE)


# ------------------------------------------------------------------------ equivalence
def _as_fraction(s: str) -> Fraction | None:
    n = normalize_number(s)
    if n is None:
        return None
    try:
        return Fraction(n)
    except (ValueError, ZeroDivisionError):
        return None


def _wrap(s: str) -> str:
    """math-verify finds LaTeX inside delimiters; a bare answer is wrapped in $...$."""
    s = s.strip()
    if "\\boxed" in s or s.startswith("$"):
        return s
    return f"${s}$"


def _math_verify(gold: str, pred: str, timeout_s: float) -> bool:
    from math_verify import parse, verify

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        # math-verify's own (signal-based) timeouts only work in the main thread.
        g = parse(_wrap(gold), parsing_timeout=max(1, int(timeout_s)))
        p = parse(_wrap(pred), parsing_timeout=max(1, int(timeout_s)))
        if not g or not p:
            return False
        return bool(verify(g, p, timeout_seconds=max(1, int(timeout_s))))
    # Outside the main thread signals are unavailable: disable math-verify's timeouts and
    # bound the call with a daemon thread instead (a runaway sympy call is abandoned).
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # silence "timeout disabled"
    result: list[bool] = []

    def work() -> None:
        g = parse(_wrap(gold), parsing_timeout=None)
        p = parse(_wrap(pred), parsing_timeout=None)
        result.append(bool(g and p and verify(g, p, timeout_seconds=None)))

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout_s)
    return bool(result and result[0])


@lru_cache(maxsize=65536)
def is_equivalent(gold: str | None, pred: str | None, timeout_s: float = 5.0) -> bool:
    """True when `pred` states the same answer as `gold` (gold first, as math-verify wants)."""
    if gold is None or pred is None:
        return False
    gold, pred = gold.strip(), pred.strip()
    if not gold or not pred:
        return False
    if gold == pred:
        return True
    fg, fp = _as_fraction(gold), _as_fraction(pred)
    if fg is not None and fp is not None:
        return fg == fp
    try:
        return _math_verify(gold, pred, timeout_s)
    except Exception:  # noqa: BLE001 - an unparsable answer is a wrong answer, not a crash
        return False


@dataclass(frozen=True)
class Judgement:
    """What the checker concluded about one response."""

    answer: str | None
    path: str
    correct: bool


def judge(response: str, gold: str, timeout_s: float = 5.0) -> Judgement:
    """Extract the answer from `response` and compare it with `gold`."""
    ex = extract_answer(response)
    return Judgement(ex.answer, ex.path, is_equivalent(gold, ex.answer, timeout_s))
