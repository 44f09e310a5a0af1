"""Statistics for the evaluation, all from scipy.stats.

- accuracy CI: Wilson score interval (binomtest(...).proportion_ci(method="wilson")).
- speedup: geometric mean of per-question time ratios, with a t interval on their logs.
- paired accuracy difference: Tango's score interval (Tango 1998), and the exact McNemar
  test (a two-sided binomial test on the discordant pairs).
- paired token ratio (e.g. cod/cot): ratio of means with a paired bootstrap CI.

Why Tango and not a bootstrap for the accuracy difference: a percentile bootstrap of paired
0/1 outcomes is degenerate when few pairs disagree ([0, 0] with none at all), so it claims
a precision the data does not have. Tango's interval inverts the score test of the
difference, is never degenerate (no discordant pair of n: +-z^2 / (n + z^2), 8.8 points at
n = 40), and is one of the two intervals Fagerland, Lydersen and Laake (2014) recommend for
paired proportions. No maintained Python library has it (statsmodels covers independent
samples only), so it is here, checked against published values in tests/test_eval_stats.py.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats

N_BOOT = 2000
MATTERS = 0.10  # an accuracy difference that matters: 10 points (the verdicts' resolution)


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


def geometric_mean_ci(ratios: Sequence[float]) -> tuple[float, list[float]]:
    """(geometric mean, 95 % CI) of per-question time ratios: a t interval on their logs.

    Why not the bootstrap of the median used before: over 6 timed questions a percentile
    bootstrap is too narrow (a seed replicate's speedup fell outside seed 0's interval), and
    a time ratio is a multiplicative quantity whose logs are close to normal. One question
    gives no interval ([x, x]; the verdict needs at least 3)."""
    logs = np.log(np.asarray(ratios, dtype=float))
    point = float(np.exp(logs.mean())) if len(logs) else float("nan")
    if len(logs) < 2:
        return point, [point, point]
    half = float(stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs)))
    return point, [float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))]


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float | int]:
    """Exact McNemar on paired correctness: only discordant pairs carry information."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = only_a + only_b
    p = 1.0 if n == 0 else float(stats.binomtest(only_a, n, 0.5, alternative="two-sided").pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p_value": p}


Z95 = float(stats.norm.ppf(0.975))


def _tango_score(delta: float, b: float, c: float, n: float) -> float:
    """Tango's score statistic for the paired difference `delta` = p(a only) - p(b only),
    with the cell probability of 'b only' at its maximum likelihood under that delta (the
    root of 2n p^2 + W p - c delta (1 - delta) = 0, W = -b - c + (2n - b + c) delta)."""
    w = -b - c + (2 * n - b + c) * delta
    p21 = (-w + np.sqrt(max(w * w + 8 * n * c * delta * (1 - delta), 0.0))) / (4 * n)
    var, num = n * (2 * p21 + delta * (1 - delta)), b - c - n * delta
    if num == 0:  # at the estimate itself (0 / 0 when no pair disagrees)
        return 0.0
    return num / np.sqrt(var) if var > 0 else float(np.sign(num)) * np.inf


def tango_ci(b: float, c: float, n: float, z: float = Z95) -> list[float]:
    """Tango's (1998) asymptotic score interval for a paired difference of proportions:
    `b` pairs where only the first is a success, `c` where only the second is, of `n`.
    The set of differences the score test does not reject; counts may be fractional (see
    n_to_resolve)."""
    if n <= 0:
        return [-1.0, 1.0]
    est, tol = (b - c) / n, 1e-12
    lo = -1.0 if est <= -1 + tol else float(optimize.brentq(lambda d: _tango_score(d, b, c, n) - z,
                                                             -1 + tol, est, xtol=1e-10))
    hi = 1.0 if est >= 1 - tol else float(optimize.brentq(lambda d: _tango_score(d, b, c, n) + z,
                                                           est, 1 - tol, xtol=1e-10))
    return [lo, hi]


def noninferiority(b: int, c: int, n: int, margin: float, alpha: float) -> dict[str, Any]:
    """One-sided non-inferiority test of a paired accuracy difference (first minus second)
    at a declared `margin`: H0 d <= -margin against d > -margin, by Tango's score statistic
    at d = -margin (the score interval's own test). `lower`: the lower end of the matching
    (1 - 2 alpha) two-sided interval; the test rejects at level alpha exactly when
    lower > -margin."""
    z = float(stats.norm.ppf(1 - alpha))
    lower = tango_ci(b, c, n, z)[0]
    if n <= 0:
        return {"p_value": 1.0, "lower": lower, "non_inferior": False}
    score = _tango_score(-margin, b, c, n)
    return {"p_value": float(stats.norm.sf(score)), "lower": lower, "non_inferior": lower > -margin}


def interval(b: float, c: float, n: float, alpha: float) -> list[float]:
    """Tango's two-sided (1 - 2 alpha) interval: both one-sided tests at level alpha."""
    return tango_ci(b, c, n, float(stats.norm.ppf(1 - alpha)))


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values of a family of tests (by name): the k-th smallest
    raw p times (m - k + 1), made monotone and capped at 1. A claim survives the family at
    level a when its adjusted p is below a."""
    order = sorted(p_values, key=lambda k: p_values[k])
    m, running, out = len(order), 0.0, {}
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[k]))
        out[k] = running
    return out


def n_to_resolve(b: int, c: int, n: int, width: float, cap: int = 1_000_000) -> int | None:
    """The smallest number of questions at which Tango's interval, at the observed shares of
    discordant pairs (b/n and c/n), would be narrower than `width`: the n at which a
    difference of `width` could be told from none. None beyond `cap`."""
    if n <= 0:
        return None

    def narrow(m: int) -> bool:
        lo, hi = tango_ci(b * m / n, c * m / n, m)
        return hi - lo < width

    top = 1
    while not narrow(top):
        top *= 2
        if top > cap:
            return None
    low = top // 2  # narrow(low) is False (or low == 0)
    while top - low > 1:
        mid = (low + top) // 2
        low, top = (low, mid) if narrow(mid) else (mid, top)
    return top


def paired_accuracy_diff(a: Sequence[bool], b: Sequence[bool]) -> dict[str, object]:
    """Accuracy of a minus accuracy of b on the same questions, with Tango's score interval
    and the exact McNemar test."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    mc = mcnemar_exact(a, b)
    n = len(a)
    diff = statistics.fmean(float(v) for v in a) - statistics.fmean(float(v) for v in b) if n else 0.0
    return {"accuracy_diff": diff, "accuracy_diff_ci95": tango_ci(mc["only_a_correct"], mc["only_b_correct"], n),
            "accuracy_diff_ci_method": "Tango score", **mc}


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
