"""The offline sample data shipped in data/sample/, generated from templates.

Why templates: the local profile must run without the hub, and the shipped problems must
not be copies of GSM8K or MATH. Each template computes its own answer, writes the gold
solution in the dataset's own style (GSM8K: one step per line with <<a*b=c>> calculator
annotations and '#### N'; MATH: LaTeX with a final \\boxed{}), and the tests regenerate
the files and check every answer. The files use the original schemas and file names, so
the same loader reads data/sample/ and a real copy of the datasets.

Regenerate with `python -m specdraft.data.sample data/sample` (deterministic).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from specdraft.io import write_jsonl

Row = dict[str, str]

NAMES = ["Mia", "Omar", "Lena", "Ravi", "Sofia", "Jonas", "Aiko", "Bruno", "Chloe", "Dev",
         "Elena", "Farid", "Greta", "Hugo", "Ines", "Kofi"]


# ------------------------------------------------------------------------- GSM8K-style
# One-step additions of single-digit numbers: the easy scenario, where the untrained 135M
# target already answers half or more (the choice and its measurement: README, "Choosing
# the local profile"; `python -m specdraft.tools.probe_scenarios`).
ITEMS = ["apples", "stickers", "marbles", "shells", "stamps", "pencils", "cards", "beads"]


def _g_two_colours(r: random.Random) -> tuple[str, str]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(2, 9), r.randint(2, 9)
    q = f"{name} has {a} red {item} and {b} blue {item}. How many {item} does {name} have in all?"
    a_ = f"{name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {item} in all.\n#### {a + b}"
    return q, a_


def _g_bag(r: random.Random) -> tuple[str, str]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(2, 9), r.randint(2, 9)
    q = f"{name} puts {a} {item} in a bag and then {b} more {item} in the same bag. How many {item} are in the bag in all?"
    a_ = f"There are {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {item} in the bag.\n#### {a + b}"
    return q, a_


def _g_same_number(r: random.Random) -> tuple[str, str]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a = r.randint(2, 9)
    q = f"{name} has {a} red {item} and {a} blue {item}. How many {item} does {name} have in all?"
    a_ = f"{name} has {a} + {a} = <<{a}+{a}={2 * a}>>{2 * a} {item} in all.\n#### {2 * a}"
    return q, a_


GSM8K_TEMPLATES: list[Callable[[random.Random], tuple[str, str]]] = [_g_two_colours, _g_bag, _g_same_number]


# -------------------------------------------------------------------------- MATH-style
def _m_add_eq_small(r: random.Random) -> tuple[str, str, str]:
    x, b = r.randint(1, 9), r.randint(1, 9)
    q = f"Solve for $x$: $x + {b} = {x + b}$."
    s = f"Subtracting ${b}$ from both sides gives $x = {x + b} - {b} = \\boxed{{{x}}}$."
    return q, s, str(x)


def _m_mul_eq(r: random.Random) -> tuple[str, str, str]:
    a, x = r.randint(2, 9), r.randint(2, 12)
    q = f"Solve for $x$: ${a}x = {a * x}$."
    s = f"Dividing both sides by ${a}$ gives $x = {a * x} / {a} = \\boxed{{{x}}}$."
    return q, s, str(x)


def _m_linear(r: random.Random) -> tuple[str, str, str]:
    a, x = r.randint(2, 9), r.randint(-9, 12)
    b = r.randint(1, 20)
    c = a * x + b
    q = f"Solve for $x$: ${a}x + {b} = {c}$."
    s = (f"Subtracting ${b}$ from both sides gives ${a}x = {c - b}$. "
         f"Dividing both sides by ${a}$ gives $x = \\boxed{{{x}}}$.")
    return q, s, str(x)


def _m_evaluate(r: random.Random) -> tuple[str, str, str]:
    x, a, b, c = r.randint(-4, 5), r.randint(1, 5), r.randint(1, 9), r.randint(0, 12)
    val = a * x * x - b * x + c
    q = f"What is the value of ${a}x^2 - {b}x + {c}$ when $x = {x}$?"
    s = (f"Substituting $x = {x}$ gives ${a}({x})^2 - {b}({x}) + {c} = {a * x * x} - ({b * x}) + {c}"
         f" = \\boxed{{{val}}}$.")
    return q, s, str(val)


def _m_slope(r: random.Random) -> tuple[str, str, str]:
    x1, y1 = r.randint(-6, 6), r.randint(-6, 6)
    dx, dy = r.choice([1, 2, 3, 4, 5, 6]), r.randint(-9, 9)
    x2, y2 = x1 + dx, y1 + dy
    m = Fraction(dy, dx)
    ans = str(m.numerator) if m.denominator == 1 else f"\\frac{{{m.numerator}}}{{{m.denominator}}}"
    if m < 0 and m.denominator != 1:
        ans = f"-\\frac{{{-m.numerator}}}{{{m.denominator}}}"
    q = f"What is the slope of the line that passes through the points $({x1}, {y1})$ and $({x2}, {y2})$?"
    s = (f"The slope is $\\frac{{y_2 - y_1}}{{x_2 - x_1}} = \\frac{{{y2} - ({y1})}}{{{x2} - ({x1})}}"
         f" = \\frac{{{dy}}}{{{dx}}} = \\boxed{{{ans}}}$.")
    return q, s, ans


def _m_simplify(r: random.Random) -> tuple[str, str, str]:
    a, b, c, d = r.randint(2, 9), r.randint(1, 9), r.randint(2, 9), r.randint(1, 9)
    k = a + c
    const = b - d
    sign = "+" if const >= 0 else "-"
    ans = f"{k}x {sign} {abs(const)}" if const else f"{k}x"
    q = f"Simplify $({a}x + {b}) + ({c}x - {d})$."
    s = (f"Combining the $x$ terms gives ${a}x + {c}x = {k}x$. Combining the constants gives "
         f"${b} - {d} = {const}$. So the expression is $\\boxed{{{ans}}}$.")
    return q, s, ans


def _vieta(r: random.Random, which: str, leading: bool) -> tuple[str, str, str]:
    """Sum or product of the roots of a quadratic with roots 1-9: read off a monic one's
    coefficient (level 3), or divide by a leading coefficient 2-4 first (level 4)."""
    a = r.randint(2, 4) if leading else 1
    r1, r2 = r.randint(1, 9), r.randint(1, 9)
    s_, p = r1 + r2, r1 * r2
    value = s_ if which == "sum" else p
    poly = f"{a if leading else ''}x^2 - {a * s_}x + {a * p}"
    via = f"\\frac{{{a * value}}}{{{a}}} = " if leading else ""
    q = f"Find the {which} of the roots of ${poly} = 0$."
    s = f"By Vieta's formulas, the {which} of the roots of ${poly}$ is ${via}\\boxed{{{value}}}$."
    return q, s, str(value)


def _m_vieta_sum(r: random.Random) -> tuple[str, str, str]:
    return _vieta(r, "sum", leading=False)


def _m_vieta_product(r: random.Random) -> tuple[str, str, str]:
    return _vieta(r, "product", leading=False)


def _m_vieta_sum_scaled(r: random.Random) -> tuple[str, str, str]:
    return _vieta(r, "sum", leading=True)


def _m_vieta_product_scaled(r: random.Random) -> tuple[str, str, str]:
    return _vieta(r, "product", leading=True)


def _m_abs_sum(r: random.Random) -> tuple[str, str, str]:
    c, d = r.randint(-8, 8), r.randint(1, 9)
    q = f"Find the sum of all real $x$ such that $|x - ({c})| = {d}$."
    s = (f"The equation means $x - ({c}) = {d}$ or $x - ({c}) = -{d}$, so $x = {c + d}$ or $x = {c - d}$. "
         f"Their sum is $\\boxed{{{2 * c}}}$.")
    return q, s, str(2 * c)


# (type, level) -> templates. The scenarios select Algebra 1-2 and Intermediate Algebra 3-4;
# the other (type, level) pairs are there so that the filters have something to reject.
MATH_TEMPLATES: dict[tuple[str, str], list[Callable[[random.Random], tuple[str, str, str]]]] = {
    ("Algebra", "Level 1"): [_m_add_eq_small],
    ("Algebra", "Level 2"): [_m_mul_eq],
    ("Algebra", "Level 3"): [_m_simplify, _m_evaluate, _m_slope],
    ("Intermediate Algebra", "Level 3"): [_m_vieta_sum, _m_vieta_product],
    ("Intermediate Algebra", "Level 4"): [_m_vieta_sum_scaled, _m_vieta_product_scaled],
    ("Algebra", "Level 4"): [_m_abs_sum],
    ("Prealgebra", "Level 1"): [_m_linear],
    ("Intermediate Algebra", "Level 1"): [_m_abs_sum],
}

# How many problems per (split, type, level): the local profile draws 48 training and 40
# test questions per scenario (>= 40 test rows in each test split).
MATH_COUNTS = {"train": {("Algebra", "Level 1"): 28, ("Algebra", "Level 2"): 28,
                         ("Intermediate Algebra", "Level 3"): 28, ("Intermediate Algebra", "Level 4"): 28,
                         ("Algebra", "Level 3"): 3, ("Algebra", "Level 4"): 3, ("Prealgebra", "Level 1"): 3,
                         ("Intermediate Algebra", "Level 1"): 3},
               "test": {("Algebra", "Level 1"): 24, ("Algebra", "Level 2"): 24,
                        ("Intermediate Algebra", "Level 3"): 24, ("Intermediate Algebra", "Level 4"): 24,
                        ("Algebra", "Level 3"): 2, ("Algebra", "Level 4"): 2, ("Prealgebra", "Level 1"): 2}}
GSM8K_COUNTS = {"train": 60, "test": 48}

# The `extra` split: questions only the drafts see (distill.extra_questions; data.extra_split
# names it), as many as the templates give beyond train and test, up to these counts. The
# small MATH templates run out first (Algebra L1-2: 81 and 88 distinct problems in all).
EXTRA_COUNTS = {"gsm8k": 240, "math": {("Algebra", "Level 1"): 120, ("Algebra", "Level 2"): 120,
                                       ("Intermediate Algebra", "Level 3"): 120,
                                       ("Intermediate Algebra", "Level 4"): 120}}
EXTRA_TRIES = 200  # draws without a new question before a template counts as used up


def generate(seed: int = 2026) -> dict[str, dict[str, list[Row]]]:
    """All sample files: {dataset: {split: rows}}, deterministic for a seed.

    Each row also carries the computed answer under a private key `_answer`, which the
    writer drops and the tests use to check the gold solutions.
    """
    r = random.Random(seed)
    seen: set[str] = set()
    out: dict[str, dict[str, list[Row]]] = {"gsm8k": {}, "math": {}}
    for split, n in GSM8K_COUNTS.items():
        rows: list[Row] = []
        while len(rows) < n:
            template = GSM8K_TEMPLATES[len(rows) % len(GSM8K_TEMPLATES)]
            q, a = template(r)
            if q in seen:
                continue
            seen.add(q)
            rows.append({"question": q, "answer": a, "template": template_name(template),
                         "_answer": a.rsplit("#### ", 1)[1]})
        out["gsm8k"][split] = rows
    for split, counts in MATH_COUNTS.items():
        rows = []
        for (typ, level), n in counts.items():
            templates = MATH_TEMPLATES[(typ, level)]
            k = 0
            while k < n:
                template = templates[k % len(templates)]
                q, s, ans = template(r)
                if q in seen:
                    continue
                seen.add(q)
                k += 1
                subject = typ.lower().replace(" ", "_")
                uid = f"{split}/{subject}/sample-{sum(1 for x in rows if x['type'] == typ) + 1}.json"
                rows.append({"problem": q, "level": level, "type": typ, "solution": s,
                             "unique_id": uid, "template": template_name(template), "_answer": ans})
        out["math"][split] = rows
    _extra(random.Random(seed + 1), seen, out)  # its own stream: train and test stay as they were
    return out


def template_name(template: Callable) -> str:
    """A row's `template` field: the generator's name without its dataset prefix. Why a
    field: evaluation draws its timed questions stratified by it (specdraft.data.prepare's
    `stratum`), so that the timings describe every kind of question, not one."""
    return template.__name__.split("_", 2)[2]


def _draw(templates: list[Callable], r: random.Random, seen: set[str], n: int) -> list[tuple]:
    """Up to `n` new problems from `templates` in turn, fewer when they run out of new ones,
    each as (template name, *the template's output)."""
    got: list[tuple] = []
    misses = 0
    while len(got) < n and misses < EXTRA_TRIES:
        template = templates[len(got) % len(templates)]
        made = template(r)
        if made[0] in seen:
            misses += 1
            continue
        seen.add(made[0])
        got.append((template_name(template), *made))
        misses = 0
    return got


def _extra(r: random.Random, seen: set[str], out: dict[str, dict[str, list[Row]]]) -> None:
    out["gsm8k"]["extra"] = [{"question": q, "answer": a, "template": t, "_answer": a.rsplit("#### ", 1)[1]}
                             for t, q, a in _draw(GSM8K_TEMPLATES, r, seen, EXTRA_COUNTS["gsm8k"])]
    rows: list[Row] = []
    for (typ, level), n in EXTRA_COUNTS["math"].items():
        subject = typ.lower().replace(" ", "_")
        for t, q, s, ans in _draw(MATH_TEMPLATES[(typ, level)], r, seen, n):
            uid = f"extra/{subject}/sample-{sum(1 for x in rows if x['type'] == typ) + 1}.json"
            rows.append({"problem": q, "level": level, "type": typ, "solution": s, "unique_id": uid, "template": t,
                         "_answer": ans})
    out["math"]["extra"] = rows


def write(root: Path, seed: int = 2026) -> None:
    for dataset, splits in generate(seed).items():
        for split, rows in splits.items():
            write_jsonl(root / dataset / f"{split}.jsonl",
                        ({k: v for k, v in row.items() if not k.startswith("_")} for row in rows))


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "data/sample"))
