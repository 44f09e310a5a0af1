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
# One- and two-step problems with small numbers: the difficulty at which a 135M model
# solves some but not all (measured for the README's local-profile choice).
ITEMS = ["apples", "stickers", "marbles", "shells", "stamps", "pencils", "cards", "beads"]


def _g_add(r: random.Random) -> tuple[str, str]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(3, 30), r.randint(2, 20)
    q = f"{name} has {a} {item} and gets {b} more {item}. How many {item} does {name} have now?"
    a_ = f"{name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {item} now.\n#### {a + b}"
    return q, a_


def _g_sub(r: random.Random) -> tuple[str, str]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a = r.randint(12, 40)
    b = r.randint(2, a - 2)
    q = f"{name} has {a} {item} and gives {b} {item} to a friend. How many {item} does {name} have left?"
    a_ = f"{name} has {a} - {b} = <<{a}-{b}={a - b}>>{a - b} {item} left.\n#### {a - b}"
    return q, a_


def _g_mul(r: random.Random) -> tuple[str, str]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(2, 9), r.randint(2, 12)
    q = f"{name} buys {a} bags with {b} {item} in each bag. How many {item} does {name} buy?"
    a_ = f"{name} buys {a} * {b} = <<{a}*{b}={a * b}>>{a * b} {item}.\n#### {a * b}"
    return q, a_


def _g_div(r: random.Random) -> tuple[str, str]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    friends, each = r.randint(2, 9), r.randint(2, 10)
    total = friends * each
    q = f"{name} shares {total} {item} equally among {friends} friends. How many {item} does each friend get?"
    a_ = f"Each friend gets {total} / {friends} = <<{total}/{friends}={each}>>{each} {item}.\n#### {each}"
    return q, a_


def _g_add_sub(r: random.Random) -> tuple[str, str]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(5, 25), r.randint(2, 15)
    c = r.randint(2, a + b - 2)
    q = (f"{name} has {a} {item}, finds {b} more {item}, and then gives away {c} {item}. "
         f"How many {item} does {name} have now?")
    a_ = (f"After finding more, {name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {item}.\n"
          f"After giving some away, {name} has {a + b} - {c} = <<{a + b}-{c}={a + b - c}>>{a + b - c} {item}.\n"
          f"#### {a + b - c}")
    return q, a_


def _g_mul_add(r: random.Random) -> tuple[str, str]:
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a, b, c = r.randint(2, 9), r.randint(2, 10), r.randint(1, 9)
    q = (f"{name} buys {a} packs of {item} with {b} {item} in each pack, and {c} single {item}. "
         f"How many {item} does {name} buy in all?")
    a_ = (f"The packs hold {a} * {b} = <<{a}*{b}={a * b}>>{a * b} {item}.\n"
          f"In all {name} buys {a * b} + {c} = <<{a * b}+{c}={a * b + c}>>{a * b + c} {item}.\n"
          f"#### {a * b + c}")
    return q, a_


GSM8K_TEMPLATES: list[Callable[[random.Random], tuple[str, str]]] = [
    _g_add, _g_sub, _g_mul, _g_div, _g_add_sub, _g_mul_add]


# -------------------------------------------------------------------------- MATH-style
def _m_add_eq(r: random.Random) -> tuple[str, str, str]:
    x, b = r.randint(1, 30), r.randint(2, 20)
    q = f"Solve for $x$: $x + {b} = {x + b}$."
    s = f"Subtracting ${b}$ from both sides gives $x = {x + b} - {b} = \\boxed{{{x}}}$."
    return q, s, str(x)


def _m_mul_eq(r: random.Random) -> tuple[str, str, str]:
    a, x = r.randint(2, 9), r.randint(2, 12)
    q = f"Solve for $x$: ${a}x = {a * x}$."
    s = f"Dividing both sides by ${a}$ gives $x = {a * x} / {a} = \\boxed{{{x}}}$."
    return q, s, str(x)


def _m_eval_linear(r: random.Random) -> tuple[str, str, str]:
    a, b, x = r.randint(2, 9), r.randint(1, 20), r.randint(1, 9)
    q = f"What is the value of ${a}x + {b}$ when $x = {x}$?"
    s = f"Substituting $x = {x}$ gives ${a}({x}) + {b} = {a * x} + {b} = \\boxed{{{a * x + b}}}$."
    return q, s, str(a * x + b)


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


def _m_vieta_squares(r: random.Random) -> tuple[str, str, str]:
    r1, r2 = r.randint(-6, 7), r.randint(-6, 7)
    s_, p = r1 + r2, r1 * r2
    ans = s_ * s_ - 2 * p
    q = (f"Let $a$ and $b$ be the roots of $x^2 - ({s_})x + ({p}) = 0$. "
         f"Compute $a^2 + b^2$.")
    s = (f"By Vieta's formulas, $a + b = {s_}$ and $ab = {p}$. Then\n\\[a^2 + b^2 = (a + b)^2 - 2ab = "
         f"{s_ * s_} - ({2 * p}) = \\boxed{{{ans}}}.\\]")
    return q, s, str(ans)


def _m_remainder(r: random.Random) -> tuple[str, str, str]:
    a, b, c, t = r.randint(-5, 5), r.randint(-9, 9), r.randint(-12, 12), r.randint(-3, 4)
    rem = t ** 3 + a * t * t + b * t + c
    q = f"Find the remainder when $x^3 + ({a})x^2 + ({b})x + ({c})$ is divided by $x - ({t})$."
    s = (f"By the Remainder Theorem, the remainder is the value of the polynomial at $x = {t}$:\n"
         f"\\[({t})^3 + ({a})({t})^2 + ({b})({t}) + ({c}) = {t ** 3} + {a * t * t} + {b * t} + {c}"
         f" = \\boxed{{{rem}}}.\\]")
    return q, s, str(rem)


def _m_series(r: random.Random) -> tuple[str, str, str]:
    k = r.randint(2, 9)
    num = r.randint(1, 5)
    total = Fraction(num * k, k - 1)
    ans = str(total.numerator) if total.denominator == 1 else f"\\frac{{{total.numerator}}}{{{total.denominator}}}"
    q = f"Compute $\\displaystyle \\sum_{{n=0}}^\\infty \\frac{{{num}}}{{{k}^n}}$."
    s = (f"This is a geometric series with first term ${num}$ and common ratio $\\frac{{1}}{{{k}}}$, so its sum is\n"
         f"\\[\\frac{{{num}}}{{1 - \\frac{{1}}{{{k}}}}} = \\frac{{{num * k}}}{{{k - 1}}} = \\boxed{{{ans}}}.\\]")
    return q, s, ans


def _m_recurrence(r: random.Random) -> tuple[str, str, str]:
    a1, a2, n = r.randint(1, 6), r.randint(1, 9), r.randint(5, 8)
    seq = [a1, a2]
    while len(seq) < n:
        seq.append(seq[-1] + seq[-2])
    lines = " \\\\\n".join(f"a_{i + 1} &= {seq[i - 1]} + {seq[i - 2]} = {seq[i]}" for i in range(2, n))
    q = (f"A sequence satisfies $a_1 = {a1},$ $a_2 = {a2},$ and $a_{{k + 2}} = a_{{k + 1}} + a_k$ "
         f"for all $k \\ge 1.$ Find $a_{n}.$")
    s = f"We compute the terms in order:\n\\begin{{align*}}\n{lines}.\n\\end{{align*}}Hence $a_{n} = \\boxed{{{seq[-1]}}}.$"
    return q, s, str(seq[-1])


def _m_abs_sum(r: random.Random) -> tuple[str, str, str]:
    c, d = r.randint(-8, 8), r.randint(1, 9)
    q = f"Find the sum of all real $x$ such that $|x - ({c})| = {d}$."
    s = (f"The equation means $x - ({c}) = {d}$ or $x - ({c}) = -{d}$, so $x = {c + d}$ or $x = {c - d}$. "
         f"Their sum is $\\boxed{{{2 * c}}}$.")
    return q, s, str(2 * c)


# (type, level) -> templates. The scenarios select Algebra 1-2 and Intermediate Algebra 3-4;
# the other (type, level) pairs are there so that the filters have something to reject.
MATH_TEMPLATES: dict[tuple[str, str], list[Callable[[random.Random], tuple[str, str, str]]]] = {
    ("Algebra", "Level 1"): [_m_add_eq, _m_mul_eq],
    ("Algebra", "Level 2"): [_m_eval_linear, _m_linear],
    ("Algebra", "Level 3"): [_m_simplify, _m_evaluate, _m_slope],
    ("Intermediate Algebra", "Level 3"): [_m_vieta_squares, _m_series],
    ("Intermediate Algebra", "Level 4"): [_m_remainder, _m_recurrence],
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
            q, a = GSM8K_TEMPLATES[len(rows) % len(GSM8K_TEMPLATES)](r)
            if q in seen:
                continue
            seen.add(q)
            rows.append({"question": q, "answer": a, "_answer": a.rsplit("#### ", 1)[1]})
        out["gsm8k"][split] = rows
    for split, counts in MATH_COUNTS.items():
        rows = []
        for (typ, level), n in counts.items():
            templates = MATH_TEMPLATES[(typ, level)]
            k = 0
            while k < n:
                q, s, ans = templates[k % len(templates)](r)
                if q in seen:
                    continue
                seen.add(q)
                k += 1
                subject = typ.lower().replace(" ", "_")
                uid = f"{split}/{subject}/sample-{sum(1 for x in rows if x['type'] == typ) + 1}.json"
                rows.append({"problem": q, "level": level, "type": typ, "solution": s,
                             "unique_id": uid, "_answer": ans})
        out["math"][split] = rows
    return out


def write(root: Path, seed: int = 2026) -> None:
    for dataset, splits in generate(seed).items():
        for split, rows in splits.items():
            write_jsonl(root / dataset / f"{split}.jsonl",
                        ({k: v for k, v in row.items() if not k.startswith("_")} for row in rows))


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "data/sample"))
