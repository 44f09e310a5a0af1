"""The verdicts that open reports/summary.md: each hypothesis in each scenario, its key
figure with a 95 % CI, and one word: supported, not supported, or not resolvable at this n.

Why explicit rules: a reviewer wants the answer first, and "significant" alone cannot say
"no": at n = 40 a non-significant difference may still hide a large effect. So a
hypothesis is *not supported* only when the CI excludes an effect that would matter
(`MATTERS`), and *not resolvable at this n* when the CI still holds both a null and a
mattering effect. The rules, per row:

1. training raises accuracy (trained `<style>` vs `base`, same questions): supported when
   the gain is significant (exact McNemar p < 0.05) and positive; not supported when the
   CI's upper end is below +MATTERS (a gain that matters is excluded), or the loss is
   significant.
2. speculative decoding cuts time without changing accuracy (`<style>_sd` vs `<style>`):
   supported when the speedup's CI lies above 1 and accuracy did not change significantly
   (McNemar p >= 0.05); not supported when the CI lies below 1 or accuracy changed
   significantly.
3. CoD cuts tokens with little accuracy loss (`cod` vs `cot`): supported when the
   token ratio's CI lies below 1 and the accuracy difference's CI lies above -MATTERS; not
   supported when the ratio's CI lies at or above 1 or the difference's CI lies below
   -MATTERS.
"""

from __future__ import annotations

from typing import Any

SUPPORTED, NOT_SUPPORTED, UNRESOLVED = "supported", "not supported", "not resolvable at this n"
MATTERS = 0.10  # an accuracy difference of 10 points (hypotheses 1 and 3)
ALPHA = 0.05


def _pm(x: float) -> str:
    return f"{x:+.2f}"


def trained_vs_base(c: dict[str, Any] | None) -> tuple[str, str]:
    """(cell text, verdict) of hypothesis 1 for one comparison `<style>_vs_base`."""
    if c is None:
        return "not evaluated", UNRESOLVED
    lo, hi = c["accuracy_diff_ci95"]
    fig = f"{_pm(c['accuracy_diff'])} [{_pm(lo)}, {_pm(hi)}], p={c['p_value']:.3f}"
    if c["p_value"] < ALPHA:
        return fig, SUPPORTED if c["accuracy_diff"] > 0 else NOT_SUPPORTED
    return fig, NOT_SUPPORTED if hi < MATTERS else UNRESOLVED


def speculative(m: dict[str, Any] | None, c: dict[str, Any] | None) -> tuple[str, str]:
    """(cell text, verdict) of hypothesis 2 for a speculative configuration's metrics `m`
    and its comparison with its plain twin `c`."""
    if m is None or m.get("speedup") is None:
        return "not timed", UNRESOLVED
    lo, hi = m["speedup_ci95"]
    fig = f"{m['speedup']:.2f}x [{lo:.2f}, {hi:.2f}]"
    changed = c is not None and c["p_value"] < ALPHA
    if c is not None:
        fig += f", accuracy {_pm(c['accuracy_diff'])} (p={c['p_value']:.2f})"
    if hi < 1 or changed:
        return fig, NOT_SUPPORTED
    return fig, SUPPORTED if lo > 1 and c is not None else UNRESOLVED


def cod_vs_cot(c: dict[str, Any] | None) -> tuple[str, str]:
    """(cell text, verdict) of hypothesis 3 for the comparison `cod_vs_cot`."""
    if c is None:
        return "not evaluated", UNRESOLVED
    rlo, rhi = c["output_tokens_ratio_ci95"]
    alo, ahi = c["accuracy_diff_ci95"]
    fig = (f"{c['output_tokens_ratio']:.2f}x tokens [{rlo:.2f}, {rhi:.2f}], accuracy {_pm(c['accuracy_diff'])} "
           f"[{_pm(alo)}, {_pm(ahi)}]")
    if rlo >= 1 or ahi < -MATTERS:
        return fig, NOT_SUPPORTED
    return fig, SUPPORTED if rhi < 1 and alo > -MATTERS else UNRESOLVED


ROWS = [("1. training on CoT raises accuracy (cot vs base)", lambda ev: trained_vs_base(_c(ev, "cot_vs_base"))),
        ("1. training on CoD raises accuracy (cod vs base)", lambda ev: trained_vs_base(_c(ev, "cod_vs_base"))),
        ("2. speculative decoding is faster, accuracy unchanged (cot_sd vs cot)",
         lambda ev: speculative(ev.get("cot_sd"), _c(ev, "cot_sd_vs_cot"))),
        ("2. speculative decoding is faster, accuracy unchanged (cod_sd vs cod)",
         lambda ev: speculative(ev.get("cod_sd"), _c(ev, "cod_sd_vs_cod"))),
        ("3. CoD cuts tokens, accuracy within 10 points (cod vs cot)", lambda ev: cod_vs_cot(_c(ev, "cod_vs_cot")))]


def _c(ev: dict[str, Any], name: str) -> dict[str, Any] | None:
    return ev.get("_comparisons", {}).get(name)


def verdict_table(evals: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown: hypotheses x scenarios, each cell 'figure [CI]: **verdict**'."""
    scenarios = list(evals)
    lines = ["| hypothesis | " + " | ".join(scenarios) + " |", "|---" * (len(scenarios) + 1) + "|"]
    for label, rule in ROWS:
        cells = [rule(evals[sc]) for sc in scenarios]
        lines.append(f"| {label} | " + " | ".join(f"{fig}: **{word}**" for fig, word in cells) + " |")
    return lines


def headline(evals: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """metrics/headline.json, the review view (`make diff`): per scenario and configuration,
    accuracy; for a plain configuration its mean output tokens, for a speculative one its
    acceptance rate, mean accepted length and speedup. A speculative configuration's tokens
    are its plain twin's (its output is the same, checked by the divergence count), so they
    are left out to keep the view short (3 scenarios, 3 speculative variants per style: 90
    values). Nothing here moves between two runs of the same code but the speedup."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for sc, ev in evals.items():
        for config, m in ev.items():
            if config.startswith("_"):
                continue
            row = {"accuracy": m["accuracy"]}
            if m.get("num_speculative_tokens"):
                row.update(acceptance_rate=m["acceptance_rate"], mean_acceptance_length=m["mean_acceptance_length"],
                           speedup=m.get("speedup"))
            else:
                row["mean_output_tokens"] = m["mean_output_tokens"]
            out.setdefault(sc, {})[config] = {k: None if v is None else round(v, 4) for k, v in row.items()}
    return out
