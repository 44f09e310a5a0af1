"""Evaluation statistics: values checked against hand computations and scipy."""

from __future__ import annotations

import pytest
from scipy import stats

from specdraft.evaluate.compare import compare
from specdraft.evaluate.run import first_divergence, metrics
from specdraft.evaluate.stats import mcnemar_exact, median_ci, paired_accuracy_diff, paired_ratio, wilson
from specdraft.io import InputError


def test_wilson_interval():
    lo, hi = wilson(8, 10)
    # Wilson 95 % for 8/10: (0.4902, 0.9433)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) == [0.0, 1.0]


def test_mcnemar_exact_uses_discordant_pairs_only():
    a = [True] * 10 + [True] * 6 + [False] * 1 + [False] * 3
    b = [True] * 10 + [False] * 6 + [True] * 1 + [False] * 3
    r = mcnemar_exact(a, b)
    assert (r["only_a_correct"], r["only_b_correct"]) == (6, 1)
    assert r["p_value"] == pytest.approx(stats.binomtest(6, 7, 0.5).pvalue)
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0


def test_paired_diff_and_ratio():
    a = [True, True, False, True]
    b = [False, True, False, False]
    d = paired_accuracy_diff(a, b, seed=1)
    assert d["accuracy_diff"] == pytest.approx(0.5)
    assert d["accuracy_diff_ci95"][0] <= 0.5 <= d["accuracy_diff_ci95"][1]
    r = paired_ratio([10, 20, 30], [20, 40, 60])
    assert r["ratio"] == pytest.approx(0.5) and r["ratio_ci95"] == pytest.approx([0.5, 0.5])


def test_median_ci_brackets_median():
    xs = [0.5, 0.6, 0.55, 0.7, 0.4, 0.65, 0.58]
    lo, hi = median_ci(xs)
    assert lo <= 0.58 <= hi


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2


def _pred(i, correct, toks, **kw):
    return {"id": f"q{i}", "correct": correct, "output_tokens": toks, "extraction_path": "hash",
            "truncated": False, "latency_s": toks / 10, **kw}


def test_metrics_speculative_fields():
    preds = [_pred(i, i % 2 == 0, 20, rounds=10, proposed=20, accepted=10, draft_forward_s=0.4,
                   plain_latency_s=2.0, plain_output_tokens=20, same_as_plain=True, first_divergence=None,
                   diverging_tokens=None) for i in range(4)]
    m = metrics(preds, k=2)
    assert m["accuracy"] == 0.5 and m["acceptance_rate"] == 0.5 and m["mean_acceptance_length"] == 2.0
    assert m["speedup"] == pytest.approx(1.0)  # 2.0 s plain / 2.0 s speculative
    # c = (0.4 s / 20 drafts) / (2.0 s / 20 tokens) = 0.2
    assert m["cost_ratio_c"] == pytest.approx(0.2)
    assert m["efficiency"] == pytest.approx(m["speedup"] / m["predicted_speedup"])
    assert m["diverging_outputs"] == 0


def test_compare_requires_same_questions():
    a = [_pred(0, True, 10), _pred(1, False, 10)]
    b = [_pred(0, True, 20), _pred(2, False, 20)]
    with pytest.raises(InputError, match="different questions"):
        compare(a, b, "x")
    c = compare(a, [_pred(0, False, 20), _pred(1, False, 20)], "x")
    assert c["accuracy_diff"] == 0.5 and c["output_tokens_ratio"] == 0.5 and c["n"] == 2
