"""Paired comparisons between configurations on the same test questions.

For each pair (a, b) in params eval.comparisons: accuracy difference with Tango's score
interval and the exact McNemar p-value on per-sample correctness, the number of questions
at which the interval would be narrower than 10 points at the observed discordance, and the paired
ratio of mean output tokens (a/b) with a CI. Also used by `make compare` across two
revisions of the same configuration.
"""

from __future__ import annotations

from typing import Any

from specdraft.evaluate.stats import MATTERS, n_to_resolve, paired_accuracy_diff, paired_ratio
from specdraft.io import InputError


def align(a: list[dict[str, Any]], b: list[dict[str, Any]], where: str) -> tuple[list[dict], list[dict]]:
    ia, ib = {r["id"]: r for r in a}, {r["id"]: r for r in b}
    if set(ia) != set(ib):
        raise InputError(f"{where}: the two prediction sets cover different questions "
                         f"({len(set(ia) - set(ib))} only in the first, {len(set(ib) - set(ia))} only in the second)")
    ids = sorted(ia)
    return [ia[i] for i in ids], [ib[i] for i in ids]


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]], where: str, seed: int = 0) -> dict[str, Any]:
    a, b = align(a, b, where)
    out = paired_accuracy_diff([r["correct"] for r in a], [r["correct"] for r in b])
    tok = paired_ratio([r["output_tokens"] for r in a], [r["output_tokens"] for r in b], seed)
    resolve = n_to_resolve(out["only_a_correct"], out["only_b_correct"], len(a), MATTERS)
    return {"n": len(a), **out, "n_to_resolve": resolve, "output_tokens_ratio": tok["ratio"], "output_tokens_ratio_ci95": tok["ratio_ci95"],
            "significant_at_0.05": out["p_value"] < 0.05}
