"""The deterministic reference teacher: CoT and CoD derived by rule from gold solutions.

Why: the local profile must run offline, and an offline baseline shows what the pipeline
does with perfectly correct, cheaply made traces. The CoT rewrites the dataset's own
solution into the project's format (one step per line, '#### <answer>' at the end); the
CoD keeps each step's equations and at most about five words of prose. Both go through
the same validation as the API teacher.
"""

from __future__ import annotations

import re

from specdraft.answers import boxed_matches
from specdraft.teacher.core import MATH_SPAN, TeacherItem, TeacherResult

_CALC = re.compile(r"<<([^<>]*)>>")


class ReferenceBackend:
    """Returns each item's precomputed reference text: no network, no randomness."""

    name = "reference"

    def generate(self, items: list[TeacherItem]) -> dict[str, TeacherResult]:
        return {it.key: TeacherResult(text=it.reference or "", finish_reason="STOP") for it in items}


def _unbox(text: str) -> str:
    """Replace every \\boxed{X} with X: the answer goes after '####'."""
    out, i = [], 0
    for start, end, content in boxed_matches(text):
        if start < i:  # nested inside the previous one
            continue
        out += [text[i:start], content]
        i = end
    out.append(text[i:])
    return "".join(out)


def _sentences(text: str) -> list[str]:
    """Split LaTeX prose into sentences, never inside a math span."""
    spans = [(m.start(), m.end()) for m in MATH_SPAN.finditer(text)]
    inside = [False] * (len(text) + 1)
    for a, b in spans:
        for k in range(a, b):
            inside[k] = True
    out, start = [], 0
    for k, ch in enumerate(text):
        if inside[k]:
            continue
        nxt = text[k + 1] if k + 1 < len(text) else ""
        if ch == "\n" or (ch in ".?!" and (nxt in (" ", "\n") or not nxt)):
            piece = text[start:k + 1].strip()
            if piece:
                out.append(piece)
            start = k + 1
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def cot_from_gold(solution: str, fmt: str, answer: str) -> str:
    """The dataset's own solution as a CoT in the project's format."""
    if fmt == "gsm8k":
        body = solution.split("####")[0]
        lines = [re.sub(r"\s+", " ", _CALC.sub("", ln)).strip() for ln in body.splitlines()]
        lines = [ln for ln in lines if ln]
    else:
        lines = [re.sub(r"[ \t]+", " ", s) for s in _sentences(_unbox(solution))]
    return "\n".join(lines + [f"#### {answer}"])


def cod_from_cot(cot: str, fmt: str, solution: str) -> str:
    """A CoD from a CoT by rule: each step keeps its equations, or <= 5 words of prose."""
    answer = cot.rsplit("####", 1)[1].strip()
    drafts: list[str] = []
    if fmt == "gsm8k":
        for ln in solution.split("####")[0].splitlines():
            eqs = [c.replace(" ", "") for c in _CALC.findall(ln)]
            if eqs:
                drafts.append("; ".join(eqs))
            elif ln.strip():
                drafts.append(" ".join(ln.split()[:5]))
    else:
        for step in cot.split("####")[0].splitlines():
            maths = [m.group(0) for m in MATH_SPAN.finditer(step)]
            eqs = [m for m in maths if re.search(r"=|\\le|\\ge|<|>", m)]
            if eqs:
                drafts.append(" ".join(eqs))
            elif step.strip():
                drafts.append(" ".join(MATH_SPAN.sub(lambda m: m.group(0).replace(" ", ""), step).split()[:5]))
    return "\n".join([d for d in drafts if d] + [f"#### {answer}"])
