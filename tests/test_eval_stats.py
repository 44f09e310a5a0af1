"""Evaluation statistics: values checked against hand computations and scipy."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from specdraft.evaluate.compare import compare
from specdraft.evaluate.run import check_divergence, first_divergence, plain_metrics, speculative_metrics
from specdraft.evaluate.stats import (
    acceptance_stats,
    geometric_mean_ci,
    mcnemar_exact,
    n_to_resolve,
    paired_accuracy_diff,
    paired_ratio,
    pooled_hist,
    tango_ci,
    wilson,
)
from specdraft.io import InputError, StageError


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
    d = paired_accuracy_diff(a, b)
    assert d["accuracy_diff"] == pytest.approx(0.5)
    assert d["accuracy_diff_ci95"] == pytest.approx(tango_ci(2, 0, 4))
    r = paired_ratio([10, 20, 30], [20, 40, 60])
    assert r["ratio"] == pytest.approx(0.5) and r["ratio_ci95"] == pytest.approx([0.5, 0.5])


def test_tango_interval_matches_published_values():
    """Fagerland, Lydersen & Laake (2014), Table II data (airway hyper-responsiveness before
    and after stem cell transplantation, Bentur et al. 2009: 1 / 1 / 7 / 12 pairs): Tango's
    asymptotic score interval -0.517232 to -0.026003 (also ratesci::pairbinci with
    skew = FALSE, bcf = FALSE). With no discordant pair Tango's bounds are +-z^2/(n+z^2)."""
    lo, hi = tango_ci(b=1, c=7, n=21)
    assert lo == pytest.approx(-0.517232, abs=1e-6) and hi == pytest.approx(-0.026003, abs=1e-6)
    z2 = stats.norm.ppf(0.975) ** 2
    assert tango_ci(0, 0, 40) == pytest.approx([-z2 / (40 + z2), z2 / (40 + z2)], abs=1e-9)
    # the interval inverts the score test: a difference just outside is rejected, inside is not
    assert tango_ci(3, 1, 40)[0] < 0 < tango_ci(3, 1, 40)[1] and tango_ci(12, 2, 40)[0] > 0


def test_identical_outcomes_give_no_degenerate_interval():
    """40 questions both configurations answer alike (none discordant): the percentile
    bootstrap said [0, 0]; Tango's interval is at least 8 points wide on each side."""
    for correct in (0, 17, 40):
        a = [True] * correct + [False] * (40 - correct)
        lo, hi = paired_accuracy_diff(a, list(a))["accuracy_diff_ci95"]
        assert lo <= -0.08 and hi >= 0.08


def test_n_to_resolve_a_ten_point_difference():
    """No discordance: width 2 z^2 / (n + z^2) < 0.10 first at n = 73; more discordance needs
    more questions; the answer is the first n whose interval is narrow enough."""
    assert n_to_resolve(0, 0, 40, 0.10) == 73
    n = n_to_resolve(3, 5, 40, 0.10)
    assert n > 73
    narrow = [tango_ci(3 * m / 40, 5 * m / 40, m) for m in (n - 1, n)]
    assert narrow[0][1] - narrow[0][0] >= 0.10 > narrow[1][1] - narrow[1][0]


def test_speedup_interval_is_a_t_interval_on_log_ratios():
    ratios = [1.5, 1.8, 2.0, 1.7, 1.9, 2.2]
    point, (lo, hi) = geometric_mean_ci(ratios)
    logs = [math.log(r) for r in ratios]
    mean, sd = statistics.fmean(logs), statistics.stdev(logs)
    half = stats.t.ppf(0.975, 5) * sd / math.sqrt(6)
    assert point == pytest.approx(math.exp(mean))
    assert (lo, hi) == pytest.approx((math.exp(mean - half), math.exp(mean + half)))
    assert geometric_mean_ci([1.4]) == (pytest.approx(1.4), [pytest.approx(1.4)] * 2)


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2


def _pred(i, correct, toks, **kw):
    return {"id": f"q{i}", "correct": correct, "output_tokens": toks, "extraction_path": "hash",
            "truncated": False, **kw}


def _spec(i, timed, **kw):
    """A speculative row: simulated counts on every question (10 drafting rounds of 2 draft
    tokens: 3 accepted none, 4 one, 3 both), engine counts when timed."""
    row = _pred(i, i % 2 == 0, 20, spec_proposed=20, spec_accepted=10, spec_hist=[3, 4, 3], simulated=True,
                batch_share_s=None, plain_batch_share_s=0.5, plain_output_tokens=20, plain_tokens_in_draft_vocab=18,
                timed=timed, compared=timed, own_output=timed, same_as_plain=True if timed else None,
                first_divergence=None)
    if timed:
        row.update(latency_s=1.0, rounds=11, proposed=20, accepted=10, draft_forward_s=0.4, target_forward_s=1.1,
                   plain_latency_s=2.0, plain_timed_output_tokens=20, simulation_matches_engine=True)
    return {**row, **kw}


def test_acceptance_figures_from_known_counts():
    """Every acceptance figure in metrics/ comes from this function (vLLM's definitions)."""
    st = acceptance_stats(proposed=20, accepted=10, hist=[3, 4, 3])
    assert st["num_drafts"] == 10 and st["num_draft_tokens"] == 20 and st["num_accepted_tokens"] == 10
    assert st["acceptance_rate"] == 0.5
    assert st["mean_acceptance_length"] == 2.0  # 1 + 10 accepted / 10 drafts
    assert st["acceptance_per_position"] == [0.7, 0.3]  # first token kept in 4+3 of 10, both in 3
    assert st["zero_acceptance_share"] == 0.3
    assert pooled_hist([[3, 4, 3], [1, 0, 2], [0, 1]]) == [4, 5, 5]
    none = acceptance_stats(0, 0, [0, 0, 0])
    assert none["acceptance_rate"] == 0.0 and none["acceptance_per_position"] == [0.0, 0.0]


def test_speculative_metrics_simulated_on_all_timed_on_some():
    preds = [_spec(i, timed=i < 2) for i in range(6)]
    m = speculative_metrics(preds, k=2)
    assert m["n"] == 6 and m["timed_n"] == 2 and m["accuracy"] == 0.5
    # acceptance from the simulation over all 6 questions: 60 of 120 proposed, 60 drafting rounds
    assert m["acceptance_rate"] == 0.5 and m["mean_acceptance_length"] == 2.0
    assert m["acceptance_per_position"] == pytest.approx([0.7, 0.3]) and m["zero_acceptance_share"] == 0.3
    assert m["draft_vocab_coverage"] == pytest.approx(0.9)
    assert m["speedup"] == pytest.approx(2.0)  # 2.0 s plain / 1.0 s speculative on the timed ones
    # c = (0.4 s / 20 drafts) / (2.0 s / 20 tokens) = 0.2; verify = (1.1 s / 11 rounds) / 0.1 s = 1.0
    assert m["cost_ratio_c"] == pytest.approx(0.2) and m["verify_cost"] == pytest.approx(1.0)
    assert m["efficiency"] == pytest.approx(m["speedup"] / m["predicted_speedup"])
    assert m["diverging_outputs"] == 0 and m["simulation_matches_engine"] == 2 and m["compared_n"] == 2
    assert m["throughput_speedup"] is None and m["plain_throughput_tokens_per_s"] == pytest.approx(40.0)


def test_decoded_speculative_pass_gives_throughput_and_divergence_on_every_question():
    """vLLM: every question decoded speculatively in batches (its own outputs and counts)."""
    preds = [_spec(i, timed=False, simulated=False, batch_share_s=0.25, compared=True, own_output=True,
                   same_as_plain=(i != 3), first_divergence=(5 if i == 3 else None)) for i in range(4)]
    m = speculative_metrics(preds, k=2)
    assert m["acceptance_source"] == "engine counts, every question decoded"
    assert m["throughput_speedup"] == pytest.approx(2.0)  # 80 tokens in 1.0 s vs 80 in 2.0 s
    assert (m["compared_n"], m["diverging_outputs"], m["diverging_share"]) == (4, 1, 0.25)


def test_plain_metrics_time_only_timed_questions():
    preds = [_pred(i, i < 3, 10, latency_s=(1.0 if i < 2 else None), batched_equals_batch1=(True if i < 2 else None),
                   batch_share_s=0.5) for i in range(4)]
    m = plain_metrics(preds)
    assert m["accuracy"] == 0.75 and m["timed_n"] == 2 and m["tokens_per_s"] == pytest.approx(10.0)
    assert m["throughput_tokens_per_s"] == pytest.approx(20.0)
    assert m["latency_p50_s"] == pytest.approx(1.0) and m["batched_equals_batch1"] == 2
    untimed = plain_metrics([_pred(0, True, 10, latency_s=None, batch_share_s=0.5)])
    assert untimed["latency_p50_s"] is None and untimed["tokens_per_s"] is None


def test_divergence_above_the_limit_fails_naming_the_questions():
    preds = [_spec(i, timed=True, same_as_plain=(i != 0), first_divergence=(3 if i == 0 else None))
             for i in range(4)]
    m = speculative_metrics(preds, k=2)
    assert m["diverging_outputs"] == 1 and m["diverging"][0] == {"id": "q0", "first_divergence": 3}
    with pytest.raises(StageError, match=r"gsm8k/cot_sd: 1 of 4 speculative outputs differ"):
        check_divergence(m, 0.01, "gsm8k/cot_sd")
    check_divergence(m, 0.25, "gsm8k/cot_sd")  # a bf16 profile's tolerance


def test_compare_requires_same_questions():
    a = [_pred(0, True, 10), _pred(1, False, 10)]
    b = [_pred(0, True, 20), _pred(2, False, 20)]
    with pytest.raises(InputError, match="different questions"):
        compare(a, b, "x")
    c = compare(a, [_pred(0, False, 20), _pred(1, False, 20)], "x")
    assert c["accuracy_diff"] == 0.5 and c["output_tokens_ratio"] == 0.5 and c["n"] == 2
