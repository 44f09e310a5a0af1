"""The verdicts that open reports/summary.md: each hypothesis in each scenario, its key
figure with a 95 % CI, and one word: supported, not supported, not shown, or not
resolvable at this n.

Why explicit rules: a reviewer wants the answer first, and "significant" alone cannot say
"no": at n = 40 a non-significant difference may still hide a large effect. Accuracy
differences carry Tango's score interval (specdraft.evaluate.stats), which is never
degenerate. A claim that an effect is *absent* (no gain that matters, no loss that
matters, accuracy unchanged) is a declared one-sided test at a margin (`claims`:
noninferiority_margin M and its level alpha, written into every report): the matching
(1 - 2 alpha) interval must exclude the effect of size M. Claims of a difference (H1)
form one family, and each carries its Holm-adjusted McNemar p beside the raw one; a
verdict that holds only unadjusted says so. The rules, per row:

1. training raises accuracy (trained `<style>` vs `base`, same questions): supported when
   the interval lies above 0 (a significant gain); not supported when it lies below 0 (a
   significant loss), or when the gain is shown to be under +M (the interval's upper end,
   at alpha, below M).
2. speculative decoding cuts time without changing accuracy (`<style>_sd` vs `<style>`):
   the speedup's interval must lie above 1 (not supported when it lies below 1), over at
   least MIN_TIMED timed questions. The accuracy evidence is what the engine has. The hf
   engine's speculative answers are the plain ones except on the timed questions (its
   acceptance is simulated exactly against the plain output), so an accuracy test there
   is true by construction. The evidence is instead that every timed speculative output
   equals the plain one, and that the simulation equals the engine's counts on each of
   them. vLLM decodes every question speculatively, so there the accuracy difference is
   tested: not supported when its interval excludes 0, supported only when it is shown
   within +-M (both one-sided tests at alpha).
3. CoD cuts tokens and is non-inferior in accuracy (`cod` vs `cot`): supported when the
   token ratio's interval lies below 1 and the non-inferiority test at margin M rejects
   at level alpha; not supported when the ratio's interval lies at or above 1 or CoD is
   shown worse by more than M; otherwise "not shown". How precise each accuracy
   comparison is (the n at which a 10-point difference would be resolvable) is a separate
   statement under the table (resolution_line).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from specdraft.config import setting
from specdraft.evaluate.stats import MATTERS, holm, interval, noninferiority

SUPPORTED, NOT_SUPPORTED, UNRESOLVED = "supported", "not supported", "not resolvable at this n"
NOT_SHOWN = "not shown"
MIN_TIMED = 3  # fewer timed questions give no speedup interval worth a word
FAMILY = ("cot_vs_base", "cod_vs_base")  # per scenario: the claims of an accuracy difference (H1)


@dataclasses.dataclass(frozen=True)
class ClaimsConfig:
    """Section `claims` of params.yaml: the tests behind the verdicts, declared before the
    results are seen."""

    noninferiority_margin: float = setting(0.10, gt=0, lt=1)  # an accuracy difference that matters
    noninferiority_alpha: float = setting(0.025, gt=0, lt=0.5)  # each one-sided test's level
    family_alpha: float = setting(0.05, gt=0, lt=1)  # Holm over the family of accuracy claims (H1)


def _interval(c: dict[str, Any], alpha: float) -> list[float]:
    """The comparison's accuracy interval at (1 - 2 alpha): the stored 95 % one when alpha
    is 0.025, else recomputed from its discordant counts."""
    if abs(alpha - 0.025) < 1e-12:
        return list(c["accuracy_diff_ci95"])
    return interval(c["only_a_correct"], c["only_b_correct"], c["n"], alpha)


def _pm(x: float) -> str:
    return f"{x:+.2f}"


def _acc(c: dict[str, Any]) -> str:
    lo, hi = c["accuracy_diff_ci95"]
    return f"{_pm(c['accuracy_diff'])} [{_pm(lo)}, {_pm(hi)}]"


def trained_vs_base(c: dict[str, Any] | None, claims: ClaimsConfig = ClaimsConfig(),
                    holm_p: float | None = None) -> tuple[str, str]:
    """(cell text, verdict) of hypothesis 1 for one comparison `<style>_vs_base`, with its
    Holm-adjusted p over the family when given: a gain that holds only unadjusted says so."""
    if c is None:
        return "not evaluated", UNRESOLVED
    lo, _ = c["accuracy_diff_ci95"]
    hi = _interval(c, claims.noninferiority_alpha)[1]
    fig = f"{_acc(c)}, p={c['p_value']:.3f}" + (f", Holm p={holm_p:.3f}" if holm_p is not None else "")
    if lo > 0:
        if holm_p is not None and holm_p >= claims.family_alpha:
            return fig, f"{SUPPORTED} (unadjusted only)"
        return fig, SUPPORTED
    if hi < 0 or hi < claims.noninferiority_margin:
        return fig, NOT_SUPPORTED
    return fig, UNRESOLVED


def speculative(m: dict[str, Any] | None, c: dict[str, Any] | None,
                claims: ClaimsConfig = ClaimsConfig()) -> tuple[str, str]:
    """(cell text, verdict) of hypothesis 2 for a speculative configuration's metrics `m`
    and its comparison with its plain twin `c`, on the evidence its engine has."""
    if m is None or m.get("speedup") is None:
        return "not timed", UNRESOLVED
    lo, hi = m["speedup_ci95"]
    n = m.get("timed_n", 0)
    fig = f"{m['speedup']:.2f}x [{lo:.2f}, {hi:.2f}] over {n} timed"
    if m.get("acceptance_source", "").startswith("simulated"):
        same = m["compared_n"] - m["diverging_outputs"]
        sims = m.get("simulation_matches_engine")
        fig += (f"; {same} of {m['compared_n']} timed outputs identical; simulation equals engine on "
                f"{'–' if sims is None else sims} of {n}; accuracy identical by construction")
        exact = same == m["compared_n"] and sims == n
        accuracy_ok, accuracy_bad = exact, not exact
    else:
        if c is None:
            return fig + "; accuracy not compared", UNRESOLVED
        ci = c["accuracy_diff_ci95"]
        fig += (f"; accuracy {_acc(c)}, McNemar p={c['p_value']:.2f}; diverging {m['diverging_outputs']} of "
                f"{m['compared_n']}")
        accuracy_bad = ci[0] > 0 or ci[1] < 0
        lo_a, hi_a = _interval(c, claims.noninferiority_alpha)  # equivalence: both one-sided tests at M
        accuracy_ok = -claims.noninferiority_margin < lo_a and hi_a < claims.noninferiority_margin
    if hi < 1 or accuracy_bad:
        return fig, NOT_SUPPORTED
    return fig, SUPPORTED if lo > 1 and n >= MIN_TIMED and accuracy_ok else UNRESOLVED


def cod_vs_cot(c: dict[str, Any] | None, claims: ClaimsConfig = ClaimsConfig()) -> tuple[str, str]:
    """(cell text, verdict) of hypothesis 3 for the comparison `cod_vs_cot`: tokens cut
    (ratio interval below 1) and accuracy non-inferior at the declared margin."""
    if c is None:
        return "not evaluated", UNRESOLVED
    rlo, rhi = c["output_tokens_ratio_ci95"]
    m, a = claims.noninferiority_margin, claims.noninferiority_alpha
    ni = noninferiority(c["only_a_correct"], c["only_b_correct"], c["n"], m, a)
    hi = _interval(c, a)[1]
    fig = (f"{c['output_tokens_ratio']:.2f}x tokens [{rlo:.2f}, {rhi:.2f}], accuracy {_acc(c)}; "
           f"non-inferiority at -{m * 100:.0f} points: p={ni['p_value']:.3f}")
    if rlo >= 1 or hi < -m:
        return fig, NOT_SUPPORTED
    return fig, SUPPORTED if rhi < 1 and ni["non_inferior"] else NOT_SHOWN


def resolution_line(sc: str, ev: dict[str, Any]) -> str:
    """One line per scenario: at each accuracy comparison's observed discordance, the number
    of questions at which its interval would be narrower than MATTERS."""
    comps = ev.get("_comparisons", {})
    parts = [f"{name.replace('_vs_', ' vs ')} {'over a million' if c['n_to_resolve'] is None else c['n_to_resolve']}"
             for name, c in comps.items() if name in ("cot_vs_base", "cod_vs_base", "cod_vs_cot")]
    n = next((c["n"] for c in comps.values()), None)
    if not parts:
        return ""
    return (f"- **{sc}** (n = {n}): a {MATTERS * 100:.0f}-point accuracy difference would be resolvable at n = "
            + ", ".join(parts) + " at the observed discordance.")


# (label, rule(scenario's metrics, claims, Holm p by comparison name)); {m}: the margin in points
ROWS = [("1. training on CoT raises accuracy (cot vs base)",
         lambda ev, cl, hp: trained_vs_base(_c(ev, "cot_vs_base"), cl, hp.get("cot_vs_base"))),
        ("1. training on CoD raises accuracy (cod vs base)",
         lambda ev, cl, hp: trained_vs_base(_c(ev, "cod_vs_base"), cl, hp.get("cod_vs_base"))),
        ("2. speculative decoding is faster, accuracy unchanged (cot_sd vs cot)",
         lambda ev, cl, hp: speculative(ev.get("cot_sd"), _c(ev, "cot_sd_vs_cot"), cl)),
        ("2. speculative decoding is faster, accuracy unchanged (cod_sd vs cod)",
         lambda ev, cl, hp: speculative(ev.get("cod_sd"), _c(ev, "cod_sd_vs_cod"), cl)),
        ("2. the EAGLE-3 head is faster, accuracy unchanged (cot_sd_eagle vs cot)",
         lambda ev, cl, hp: speculative(ev.get("cot_sd_eagle"), _c(ev, "cot_sd_eagle_vs_cot"), cl)),
        ("2. the EAGLE-3 head is faster, accuracy unchanged (cod_sd_eagle vs cod)",
         lambda ev, cl, hp: speculative(ev.get("cod_sd_eagle"), _c(ev, "cod_sd_eagle_vs_cod"), cl)),
        ("3. CoD cuts tokens and is non-inferior in accuracy within {m} points (cod vs cot)",
         lambda ev, cl, hp: cod_vs_cot(_c(ev, "cod_vs_cot"), cl))]


def _c(ev: dict[str, Any], name: str) -> dict[str, Any] | None:
    return ev.get("_comparisons", {}).get(name)


def family_holm(evals: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Holm-adjusted McNemar p of every claim in the family (FAMILY in every scenario), by
    scenario and comparison name."""
    raw = {(sc, name): c["p_value"] for sc, ev in evals.items() for name in FAMILY
           if (c := _c(ev, name)) is not None}
    adj = holm({f"{sc}\0{name}": p for (sc, name), p in raw.items()})
    out: dict[str, dict[str, float]] = {}
    for key, p in adj.items():
        sc, name = key.split("\0")
        out.setdefault(sc, {})[name] = p
    return out


def verdict_table(evals: dict[str, dict[str, Any]], claims: ClaimsConfig = ClaimsConfig()) -> list[str]:
    """Markdown: hypotheses x scenarios, each cell 'figure [CI]: **verdict**'."""
    scenarios = list(evals)
    hp = family_holm(evals)
    lines = ["| hypothesis | " + " | ".join(scenarios) + " |", "|---" * (len(scenarios) + 1) + "|"]
    for label, rule in ROWS:
        if "_sd_eagle" in label and not any(k.endswith("_sd_eagle") for ev in evals.values() for k in ev):
            continue  # a run without EAGLE heads (eval.variants without sd_eagle): no row
        cells = [rule(evals[sc], claims, hp.get(sc, {})) for sc in scenarios]
        label = label.format(m=f"{claims.noninferiority_margin * 100:.0f}")
        lines.append(f"| {label} | " + " | ".join(f"{fig}: **{word}**" for fig, word in cells) + " |")
    return lines


def claims_statement(evals: dict[str, dict[str, Any]], claims: ClaimsConfig) -> str:
    """The declared tests, in words, for the report under the verdicts."""
    n = sum(1 for ev in evals.values() for name in FAMILY if _c(ev, name) is not None)
    return (f"Declared tests (`claims` in params.yaml): an accuracy difference of "
            f"{claims.noninferiority_margin * 100:.0f} points is one that matters; each claim that a difference is "
            f"absent or bounded (hypothesis 3's non-inferiority, hypothesis 2's equivalence on vLLM, hypothesis 1's "
            f"'no gain that matters') is a one-sided test at alpha = {claims.noninferiority_alpha} against that "
            f"margin. The family of accuracy claims is hypothesis 1's {n} comparisons (trained vs untrained, each "
            f"style and scenario): their McNemar p-values are shown with Holm's adjustment beside them, and a gain "
            f"that holds at {claims.family_alpha} only unadjusted is marked so.")
