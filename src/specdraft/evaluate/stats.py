"""Statistics for the evaluation, all from scipy.stats.

- accuracy CI: Wilson score interval (binomtest(...).proportion_ci(method="wilson")).
- speedup CI: bootstrap of the median of per-prompt time ratios (scipy.stats.bootstrap).
- paired accuracy difference: bootstrap CI of the mean paired difference, and the exact
  McNemar test (a two-sided binomial test on the discordant pairs).
- paired token ratio (e.g. cod/cot): ratio of means with a paired bootstrap CI.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats

N_BOOT = 2000


def wilson(k: int, n: int) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def percentile(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q)) if len(xs) else 0.0


def bootstrap_ci(data: Sequence[Sequence[float]], statistic, paired: bool, seed: int, n_boot: int = N_BOOT,
                 ) -> list[float]:
    """95 % percentile bootstrap CI; degenerate samples (n < 2 or constant) give [x, x]."""
    arrays = [np.asarray(d, dtype=float) for d in data]
    point = float(statistic(*arrays))
    if len(arrays[0]) < 2 or all(np.ptp(a) == 0 for a in arrays):
        return [point, point]
    res = stats.bootstrap(arrays, statistic, paired=paired, vectorized=False, n_resamples=n_boot,
                          confidence_level=0.95, method="percentile", random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return [lo if np.isfinite(lo) else point, hi if np.isfinite(hi) else point]


def median_ci(xs: Sequence[float], seed: int = 0) -> list[float]:
    return bootstrap_ci([xs], lambda a: np.median(a), paired=False, seed=seed)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float | int]:
    """Exact McNemar on paired correctness: only discordant pairs carry information."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = only_a + only_b
    p = 1.0 if n == 0 else float(stats.binomtest(only_a, n, 0.5, alternative="two-sided").pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": p}


def paired_accuracy_diff(a: Sequence[bool], b: Sequence[bool], seed: int = 0) -> dict[str, object]:
    """Accuracy of a minus accuracy of b on the same questions, with a paired bootstrap CI."""
    x = [float(v) for v in a]
    y = [float(v) for v in b]
    diff = statistics.fmean(x) - statistics.fmean(y)
    ci = bootstrap_ci([x, y], lambda u, v: np.mean(u) - np.mean(v), paired=True, seed=seed)
    return {"accuracy_diff": diff, "accuracy_diff_ci95": ci, **mcnemar_exact(a, b)}


def paired_ratio(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict[str, object]:
    """mean(a) / mean(b) on the same questions, with a paired bootstrap CI."""
    ratio = statistics.fmean(a) / statistics.fmean(b) if statistics.fmean(b) else float("nan")
    ci = bootstrap_ci([a, b], lambda u, v: np.mean(u) / np.mean(v), paired=True, seed=seed)
    return {"ratio": ratio, "ratio_ci95": ci}


# ------------------------------------------------------- speculative-decoding formulas
def acceptance_stats(proposed: int, accepted: int, hist: Sequence[int]) -> dict[str, Any]:
    """Every acceptance figure of a draft, from one set of counts, as vLLM and the
    literature define them (and not Leviathan's alpha: `alpha_from_acceptance` converts).

    `hist[j]`: drafting rounds (target verify steps that checked draft tokens) that
    accepted exactly j of their draft tokens, j = 0..k; `proposed` / `accepted`: draft
    tokens proposed / accepted in those rounds.
    - acceptance rate = accepted / proposed;
    - mean accepted length = 1 + accepted / drafts: tokens per verify step, counting the
      target's own token;
    - per-position acceptance [i] = share of drafts whose first i+1 tokens were accepted
      (vLLM: accepted_per_pos[i] / num_drafts);
    - zero-acceptance share = share of drafts with nothing accepted."""
    drafts = int(sum(hist))
    k = len(hist) - 1
    return {"num_drafts": drafts, "num_draft_tokens": int(proposed), "num_accepted_tokens": int(accepted),
            "acceptance_rate": accepted / proposed if proposed else 0.0,
            "mean_acceptance_length": 1 + accepted / drafts if drafts else 1.0,
            "acceptance_per_position": [sum(hist[i + 1:]) / drafts if drafts else 0.0 for i in range(k)],
            "zero_acceptance_share": hist[0] / drafts if drafts else 0.0}


def pooled_hist(hists: Sequence[Sequence[int]]) -> list[int]:
    """Element-wise sum of per-request histograms (all of one draft length)."""
    width = max((len(h) for h in hists), default=0)
    return [sum(h[j] for h in hists if j < len(h)) for j in range(width)]


def expected_accepted(alpha: float, gamma: int) -> float:
    """E[accepted draft tokens per round] = sum_{i=1..gamma} alpha^i (Leviathan et al. 2023)."""
    return sum(alpha ** i for i in range(1, gamma + 1))


def alpha_from_acceptance(rate: float, gamma: int) -> float:
    """Solve expected_accepted(alpha, gamma) / gamma = rate for alpha in [0, 1].

    Measured accepted/proposed is not Leviathan's alpha: it is the accepted prefix share.
    The left side rises monotonically from 0 to 1 on [0, 1], so the root is unique.
    """
    rate = min(max(rate, 0.0), 1.0)
    if rate in (0.0, 1.0):
        return rate
    return float(optimize.brentq(lambda a: expected_accepted(a, gamma) / gamma - rate, 0.0, 1.0, xtol=1e-12))


def leviathan_speedup(alpha: float, gamma: int, c: float, verify: float = 1.0) -> float:
    """Expected walltime improvement, Leviathan et al. 2023, Theorem 3.8:
    S = (1 - alpha^(gamma+1)) / ((1 - alpha)(gamma*c + 1)).

    The theorem assumes verifying gamma+1 tokens costs one target step. `verify` (the
    measured cost of a verify forward in target decode steps) replaces that 1, which is
    where small-batch matrix products on a CPU lose most (see the benchmark)."""
    tokens = float(gamma + 1) if alpha >= 1.0 else (1 - alpha ** (gamma + 1)) / (1 - alpha)
    return tokens / (gamma * c + verify)
