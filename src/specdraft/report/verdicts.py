"""The verdicts that open reports/summary.md: each hypothesis in each scenario, its key
figure with a 95 % CI, and one word: supported, not supported, or not resolvable at this n.

Why explicit rules: a reviewer wants the answer first, and "significant" alone cannot say
"no": at n = 40 a non-significant difference may still hide a large effect. Accuracy
differences carry Tango's score interval (specdraft.evaluate.stats), which is never
degenerate. A claim that an effect is *absent* (no gain that matters, no loss that matters,
accuracy unchanged) also needs an interval narrow enough to tell no difference from one
that matters: narrower than MATTERS (10 points) end to end ("resolvable"). With few
questions, or few that the two configurations answer differently, the word is "not
resolvable at this n" (at n = 40 with no discordant pair Tango gives +-8.8 points: a
10-point effect is barely excluded and nothing smaller can be told apart). The rules, per
row:

1. training raises accuracy (trained `<style>` vs `base`, same questions): supported when
   the interval lies above 0 (a significant gain); not supported when it lies below 0 (a
   significant loss), or when it is resolvable and its upper end is below +MATTERS.
2. speculative decoding cuts time without changing accuracy (`<style>_sd` vs `<style>`):
   the speedup's interval must lie above 1 (not supported when it lies below 1), over at
   least MIN_TIMED timed questions. The accuracy evidence is what the engine has. The hf
   engine's speculative answers are the plain ones except on the timed questions (its
   acceptance is simulated exactly against the plain output), so an accuracy test there
   is true by construction. The evidence is instead that every timed speculative output
   equals the plain one, and that the simulation equals the engine's counts on each of
   them. vLLM decodes every question speculatively, so there the accuracy difference is
   tested: not supported when its interval excludes 0, supported only when it is
   resolvable and lies within +-MATTERS.
3. CoD cuts tokens with little accuracy loss (`cod` vs `cot`): supported when the token
   ratio's interval lies below 1 and the accuracy difference's interval is resolvable and
   lies above -MATTERS; not supported when the ratio's interval lies at or above 1 or the
   difference's interval lies below -MATTERS.
"""

from __future__ import annotations

from typing import Any

from specdraft.evaluate.stats import MATTERS

SUPPORTED, NOT_SUPPORTED, UNRESOLVED = "supported", "not supported", "not resolvable at this n"
MIN_TIMED = 3  # fewer timed questions give no speedup interval worth a word


def _pm(x: float) -> str:
    return f"{x:+.2f}"


def resolvable(ci: list[float]) -> bool:
    """An interval narrow enough to tell no difference from one of MATTERS."""
    return ci[1] - ci[0] < MATTERS


def _acc(c: dict[str, Any]) -> str:
    lo, hi = c["accuracy_diff_ci95"]
    return f"{_pm(c['accuracy_diff'])} [{_pm(lo)}, {_pm(hi)}]"


def trained_vs_base(c: dict[str, Any] | None) -> tuple[str, str]:
    """(cell text, verdict) of hypothesis 1 for one comparison `<style>_vs_base`."""
    if c is None:
        return "not evaluated", UNRESOLVED
    lo, hi = ci = c["accuracy_diff_ci95"]
    fig = f"{_acc(c)}, p={c['p_value']:.3f}"
    if lo > 0:
        return fig, SUPPORTED
    if hi < 0 or (resolvable(ci) and hi < MATTERS):
        return fig, NOT_SUPPORTED
    return fig, UNRESOLVED


def speculative(m: dict[str, Any] | None, c: dict[str, Any] | None) -> tuple[str, str]:
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
        accuracy_ok = resolvable(ci) and -MATTERS < ci[0] and ci[1] < MATTERS
    if hi < 1 or accuracy_bad:
        return fig, NOT_SUPPORTED
    return fig, SUPPORTED if lo > 1 and n >= MIN_TIMED and accuracy_ok else UNRESOLVED


def cod_vs_cot(c: dict[str, Any] | None) -> tuple[str, str]:
    """(cell text, verdict) of hypothesis 3 for the comparison `cod_vs_cot`."""
    if c is None:
        return "not evaluated", UNRESOLVED
    rlo, rhi = c["output_tokens_ratio_ci95"]
    alo, ahi = ci = c["accuracy_diff_ci95"]
    fig = f"{c['output_tokens_ratio']:.2f}x tokens [{rlo:.2f}, {rhi:.2f}], accuracy {_acc(c)}"
    if rlo >= 1 or ahi < -MATTERS:
        return fig, NOT_SUPPORTED
    return fig, SUPPORTED if rhi < 1 and alo > -MATTERS and resolvable(ci) else UNRESOLVED


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


ROWS = [("1. training on CoT raises accuracy (cot vs base)", lambda ev: trained_vs_base(_c(ev, "cot_vs_base"))),
        ("1. training on CoD raises accuracy (cod vs base)", lambda ev: trained_vs_base(_c(ev, "cod_vs_base"))),
        ("2. speculative decoding is faster, accuracy unchanged (cot_sd vs cot)",
         lambda ev: speculative(ev.get("cot_sd"), _c(ev, "cot_sd_vs_cot"))),
        ("2. speculative decoding is faster, accuracy unchanged (cod_sd vs cod)",
         lambda ev: speculative(ev.get("cod_sd"), _c(ev, "cod_sd_vs_cod"))),
        ("2. the EAGLE-3 head is faster, accuracy unchanged (cot_sd_eagle vs cot)",
         lambda ev: speculative(ev.get("cot_sd_eagle"), _c(ev, "cot_sd_eagle_vs_cot"))),
        ("2. the EAGLE-3 head is faster, accuracy unchanged (cod_sd_eagle vs cod)",
         lambda ev: speculative(ev.get("cod_sd_eagle"), _c(ev, "cod_sd_eagle_vs_cod"))),
        ("3. CoD cuts tokens, accuracy within 10 points (cod vs cot)", lambda ev: cod_vs_cot(_c(ev, "cod_vs_cot")))]


def _c(ev: dict[str, Any], name: str) -> dict[str, Any] | None:
    return ev.get("_comparisons", {}).get(name)


def verdict_table(evals: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown: hypotheses x scenarios, each cell 'figure [CI]: **verdict**'."""
    scenarios = list(evals)
    lines = ["| hypothesis | " + " | ".join(scenarios) + " |", "|---" * (len(scenarios) + 1) + "|"]
    for label, rule in ROWS:
        if "_sd_eagle" in label and not any(k.endswith("_sd_eagle") for ev in evals.values() for k in ev):
            continue  # a run without EAGLE heads (eval.variants without sd_eagle): no row
        cells = [rule(evals[sc]) for sc in scenarios]
        lines.append(f"| {label} | " + " | ".join(f"{fig}: **{word}**" for fig, word in cells) + " |")
    return lines
