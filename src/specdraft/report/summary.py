"""reports/summary.md: what the experiment found, top to bottom, with figures.

Reads only pipeline outputs (metrics/, params) and states each hypothesis with the figures
and tests that bear on it, and the caveats the run itself detected.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from specdraft.evaluate.stats import MATTERS
from specdraft.io import read_json
from specdraft.report.times import times_table
from specdraft.report.verdicts import ClaimsConfig, claims_statement, resolution_line, verdict_table

CONFIG_ORDER = ["base", "cot", "cod", "cot_sd", "cod_sd", "cot_sd_eagle", "cod_sd_eagle", "cot_sd_kd", "cod_sd_kd",
                "cot_sd_untrained", "cod_sd_untrained"]
SMALL_N = 100


def load_eval(scenarios: list[str], root: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for sc in scenarios:
        d = root / sc
        out[sc] = {p.stem: read_json(p) for p in sorted(d.glob("*.json")) if p.stem != "comparisons"}
        out[sc]["_comparisons"] = read_json(d / "comparisons.json") if (d / "comparisons.json").exists() else {}
    return out


def _configs(ev: dict[str, Any]) -> list[str]:
    names = [c for c in ev if not c.startswith("_")]
    return [c for c in CONFIG_ORDER if c in names] + sorted(set(names) - set(CONFIG_ORDER))


def _ci(ci: list[float] | None, fmt: str = "{:.2f}") -> str:
    return "" if not ci else f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _f(x: Any, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def table(ev: dict[str, Any]) -> list[str]:
    lines = ["| config | accuracy [95% CI] | mean tokens | latency p50 (s) | tokens/s | acceptance | "
             "tokens/round | speedup [95% CI] | efficiency | draft c | verify cost |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in _configs(ev):
        m = ev[c]
        lines.append(f"| {c} | {m['accuracy']:.3f}{_ci(m['accuracy_ci95'])} | {m['mean_output_tokens']:.1f} | "
                     f"{_f(m.get('latency_p50_s'))} | {_f(m.get('tokens_per_s'), '{:.1f}')} | "
                     f"{_f(m.get('acceptance_rate'), '{:.3f}')} | "
                     f"{_f(m.get('mean_acceptance_length'))} | "
                     f"{_f(m.get('speedup'))}{_ci(m.get('speedup_ci95'))} | {_f(m.get('efficiency'))} | "
                     f"{_f(m.get('cost_ratio_c'), '{:.3f}')} | {_f(m.get('verify_cost'))} |")
    return lines


def drafts_table(ev: dict[str, Any]) -> list[str]:
    """The drafts side by side (SFT-distilled `_sd`, the EAGLE-3 head `_sd_eagle`, untrained
    `_sd_untrained`, and the opt-in distribution-distilled `_sd_kd`): every acceptance figure at the configured k, then each trained draft's k
    sweep (simulated mean accepted length and the speedup it predicts)."""
    spec = [c for c in _configs(ev) if ev[c].get("num_speculative_tokens")]
    if not spec:
        return []
    k = ev[spec[0]]["num_speculative_tokens"]
    source = ("simulated exactly on every question" if str(ev[spec[0]].get("acceptance_source", "")).startswith(
        "simulated") else f"counted by the {ev[spec[0]].get('engine', '?')} engine while decoding every question")
    lines = [f"Drafts at k = {k} (acceptance {source}; per-position: the share of "
             "drafts whose first i tokens were all accepted; the speedup is timed on the timed questions, whose own "
             "mean accepted length is beside that of all):", "",
             "| config | acceptance rate | mean accepted length all / timed | per position | nothing accepted | "
             "speedup |", "|---|---|---|---|---|---|"]
    for c in spec:
        m = ev[c]
        pos = " / ".join(f"{x:.2f}" for x in m.get("acceptance_per_position") or [])
        lines.append(f"| {c} | {m['acceptance_rate']:.3f} | {m['mean_acceptance_length']:.2f} / "
                     f"{_f(m.get('timed_subset_mean_acceptance_length'))} | {pos or '–'} | "
                     f"{_f(m.get('zero_acceptance_share'))} | {_f(m.get('speedup'))}{_ci(m.get('speedup_ci95'))} |")
    drawn = ev[spec[0]].get("timed_sample")
    if drawn:
        kinds = ", ".join(f"{k} {v['timed']} of {v['questions']}" for k, v in drawn["by_stratum"].items())
        lines += ["", f"Timed questions: {drawn['n']} of {drawn['of']}, drawn at random (seed {drawn['seed']}) "
                  f"stratified by question kind: {kinds}."]
    swept = [c for c in spec if ev[c].get("k_sweep")]
    if swept:
        ks = [r["k"] for r in ev[swept[0]]["k_sweep"]]
        n = ev[swept[0]]["k_sweep"][0]["questions"]
        src = ev[swept[0]].get("k_sweep_source") or {}
        where = f"validation questions (`{src['file']}`, never the test set)" if src.get("file") else "questions"
        lines += ["", f"Draft-length sweep on {n} {where}: mean accepted length / predicted speedup (measured draft "
                  "cost c, the target's measured verify cost for k + 1 tokens; it leaves out the prompt's prefill "
                  "and the decoding loop's own per-round work, so it ranks the k's rather than promising a "
                  "figure):", "",
                  "| config | " + " | ".join(f"k = {k}" for k in ks) + " | best k |",
                  "|---|" + "---|" * (len(ks) + 1)]
        for c in swept:
            rows = ev[c]["k_sweep"]
            best = max(rows, key=lambda r: r["predicted_speedup"] or 0)["k"]
            lines.append(f"| {c} | " + " | ".join(f"{r['mean_acceptance_length']:.2f} / {_f(r['predicted_speedup'])}x"
                                                  for r in rows) + f" | {best} |")
    return lines + [""]


def _cmp(ev: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
    return ev["_comparisons"].get(f"{a}_vs_{b}")


def _acc_sentence(c: dict[str, Any] | None, a: str, b: str) -> str:
    if c is None:
        return f"{a} vs {b}: not evaluated."
    sig = "significant" if c["significant_at_0.05"] else "not significant"
    return (f"{a} vs {b}: accuracy {c['accuracy_diff']:+.3f} [{c['accuracy_diff_ci95'][0]:+.3f}, "
            f"{c['accuracy_diff_ci95'][1]:+.3f}], McNemar p={c['p_value']:.3f} ({sig} at 0.05; "
            f"{c['only_a_correct']} questions only {a} solved, {c['only_b_correct']} only {b}).")


def _speed_sentence(c: str, m: dict[str, Any], untrained: dict[str, Any] | None) -> str:
    """Hypothesis 2 for one speculative configuration: speed, its prediction, acceptance,
    exactness."""
    timed = f" on {m['timed_n']} timed questions" if m.get("timed_n") is not None else ""
    costs = (f"predicted {_f(m.get('predicted_speedup'))}x, efficiency {_f(m.get('efficiency'))}; draft cost c "
             f"{_f(m.get('cost_ratio_c'), '{:.3f}')}, verify cost {_f(m.get('verify_cost'))} decode steps")
    if m.get("draft_vocab_coverage") is not None and m.get("draft_vocab"):
        costs += f", draft vocabulary coverage {m['draft_vocab_coverage']:.3f}"
    how = f" (simulated exactly on all {m['n']} questions)" if m.get("acceptance_source", "").startswith("simulated") \
        else ""
    vs = f" vs {untrained['acceptance_rate']:.3f} with the untrained draft" if untrained else ""
    exact = f"{m['diverging_outputs']} of {m['compared_n']} of its own outputs differ from plain greedy"
    if m.get("simulation_matches_engine") is not None:
        exact += f", the simulation matched the engine's counts on {m['simulation_matches_engine']} of {m['timed_n']}"
    if m.get("throughput_speedup"):
        exact += f"; throughput speedup {m['throughput_speedup']:.2f}x"
    return (f"{c}: speedup {m['speedup']:.2f}x{_ci(m['speedup_ci95'])}{timed} ({costs}), acceptance{how} "
            f"{m['acceptance_rate']:.3f}{vs}; {exact}.")


def _trained_vs_base(sc: str, ev: dict[str, Any]) -> str:
    return f"- **{sc}**: " + " ".join(_acc_sentence(_cmp(ev, x, "base"), x, "base") for x in ("cot", "cod"))


def _speculative(sc: str, ev: dict[str, Any]) -> str:
    parts = []
    for c in ("cot_sd", "cod_sd", "cot_sd_eagle", "cod_sd_eagle"):
        if ev.get(c):
            plain, m = c.split("_")[0], ev[c]
            if m.get("acceptance_source", "").startswith("simulated"):
                # no test to run: the answers are the plain ones (the timed ones checked identical)
                acc = (f"Accuracy identical to {plain} by construction: this engine's speculative answers are the plain "
                       f"ones except on the {m.get('timed_n', 0)} timed questions, whose outputs equal the plain "
                       f"ones token for token ({m['compared_n'] - m['diverging_outputs']} of {m['compared_n']}).")
            else:
                acc = _acc_sentence(_cmp(ev, c, plain), c, plain)
            parts += [_speed_sentence(c, m, ev.get(f"{plain}_sd_untrained")), acc]
    return f"- **{sc}**: " + " ".join(parts)


def _cod_vs_cot(sc: str, ev: dict[str, Any]) -> str:
    c = _cmp(ev, "cod", "cot")
    if c is None:
        return f"- **{sc}**: not evaluated."
    return (f"- **{sc}**: CoD uses {c['output_tokens_ratio']:.2f}x the tokens of CoT "
            f"[{c['output_tokens_ratio_ci95'][0]:.2f}, {c['output_tokens_ratio_ci95'][1]:.2f}] on the same "
            f"questions. " + _acc_sentence(c, "cod", "cot"))


def hypotheses(evals: dict[str, dict[str, Any]]) -> list[str]:
    """The three hypotheses, each with its figures per scenario."""
    return ["## Hypotheses", "", "### 1. Fine-tuning on reasoning traces raises accuracy", "",
            *[_trained_vs_base(sc, ev) for sc, ev in evals.items()],
            "", "### 2. Speculative decoding cuts time without changing accuracy", "",
            *[_speculative(sc, ev) for sc, ev in evals.items()],
            "", "### 3. Chain of draft cuts tokens with little accuracy loss", "",
            *[_cod_vs_cot(sc, ev) for sc, ev in evals.items()], ""]


def caveats(evals: dict[str, dict[str, Any]]) -> list[str]:
    """What the reader must know to read the figures, from the run's own metrics: sample
    size, truncation, weak answer extraction, divergence, and how each engine measured
    what (the engine, device, dtype and models each configuration's metrics record)."""
    out = []
    for sc, ev in evals.items():
        if any(ev[c]["n"] < SMALL_N for c in _configs(ev)):
            out.append(f"{sc}: n={min(ev[c]['n'] for c in _configs(ev))} test questions: confidence intervals are "
                       f"wide; differences of a few questions are not evidence.")
        # a speculative configuration whose answers are its plain twin's (simulated) adds nothing here
        own = [c for c in _configs(ev) if not ev[c].get("acceptance_source", "").startswith("simulated")]
        cut = [f"{c} {ev[c]['truncation_rate']:.0%}" for c in own if ev[c]["truncation_rate"] > 0.05]
        if cut:
            out.append(f"{sc}: outputs cut at max_new_tokens: {', '.join(cut)}.")
        weak = [f"{c} {_weak(ev[c]):.0%}" for c in own if _weak(ev[c]) > 0.1]
        if weak:
            out.append(f"{sc}: answers found only by the last-number fallback or not at all: {', '.join(weak)}.")
        for c in _configs(ev):
            m = ev[c]
            if m.get("diverging_outputs"):
                plain = c.split("_")[0]
                cmp = _cmp(ev, c, plain)
                out.append(f"{sc}/{c}: {m['diverging_outputs']} of {m['compared_n']} speculative outputs differ from "
                           f"plain output ({m.get('dtype', '?')}: a (k+1)-token verify and a one-token step round "
                           "differently)" + (f"; accuracy vs {plain}: McNemar p={cmp['p_value']:.3f}" if cmp else "")
                           + ".")
    spec = [ev[c] for ev in evals.values() for c in _configs(ev) if ev[c].get("num_speculative_tokens")]
    if spec:
        out += _how_measured(spec[0])
    return sorted(set(out), key=out.index)


def _weak(m: dict[str, Any]) -> float:
    paths = m.get("extraction_paths", {})
    return (paths.get("last_number", 0) + paths.get("none", 0)) / m["n"]


def _how_measured(m: dict[str, Any]) -> list[str]:
    """The measurement protocol of a speculative configuration's metrics, by engine."""
    who = (f"target `{m.get('target_model')}`, draft `{m.get('draft_model')}`, {m.get('dtype', '?')}, "
           f"engine {m.get('engine', '?')} on {m.get('device', '?').upper()}")
    if m.get("acceptance_source", "").startswith("simulated"):
        how = (f"What is measured how ({who}): accuracy and tokens of every configuration on all {m['n']} test "
               f"questions (each answer decoded once, batched; a speculative configuration's answers are the plain "
               f"answers except on its timed questions, where its own output is used and must equal the plain one); "
               f"acceptance simulated exactly on all {m['n']} questions (the draft run as in speculative decoding "
               f"against the target's known output); latency, speedup, c and verify cost timed on {m['timed_n']} "
               f"questions at batch 1, plain and speculative alternating per prompt, where the engine's own counts "
               f"are checked against the simulation. Decoding: {m.get('decode_loop')} loop, "
               f"{m.get('cpu_kernels', 'default')} kernels"
               + (" (cpu_kernels auto: decided once for the whole run by the kernels stage, metrics/kernels.json)"
                  if m.get("cpu_kernels_setting") == "auto" else "")
               + f", draft weights {m.get('draft_quant', 'none')}, draft head "
               f"over " + (f"{m['draft_vocab']} tokens." if m.get("draft_vocab") else "the full vocabulary."))
    else:
        how = (f"What is measured how ({who}): every configuration decodes every one of the {m['n']} test questions "
               f"itself (plain and speculative each in batches: accuracy, tokens, and vLLM's own per-request counts "
               f"for acceptance); throughput speedup = batched speculative over batched plain tokens/s; latency and "
               f"speedup timed on {m['timed_n']} questions at batch 1, plain and speculative in separate engine runs "
               f"(one engine alive at a time); vLLM does not time the draft, so c, verify cost and Leviathan's "
               f"prediction are not reported.")
    out = [how]
    if m.get("not_applied"):
        out.append(f"Settings not applied on {m.get('device', '?').upper()}: " + "; ".join(
            f"{k} ({why})" for k, why in sorted(m["not_applied"].items())) + ".")
    if m.get("device") == "cpu":
        out.append(f"Timings come from a CPU run ({m.get('engine')} engine, one request at a time for latency): they "
                   f"compare speculative with plain decoding of the same engine on the same prompts and say nothing "
                   f"about GPU speedups of the paper-scale models.")
    return out


def headline(evals: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """metrics/headline.json, the review view (`make diff`): per scenario and configuration,
    accuracy; for a plain configuration its mean output tokens, for a speculative one its
    acceptance rate, mean accepted length and speedup. A speculative configuration's tokens
    are its plain twin's (its output is the same, checked by the divergence count), so they
    are left out to keep the view short (3 scenarios, 2 speculative variants per style: 66
    values; 90 with the opt-in KD draft everywhere). Nothing here moves between two runs of the same code but the speedup."""
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


FIGURES = ("report_accuracy_vs_tokens", "report_speedup", "report_acceptance", "report_speedup_vs_length",
           "report_training_curves")


def figures(evals: dict[str, dict[str, Any]], train_dir: Path, out: Path) -> list[Path]:
    """Draw the four report figures (PNG, named as in FIGURES) into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    draw = {"report_accuracy_vs_tokens": lambda: _accuracy_vs_tokens(plt, evals),
            "report_speedup": lambda: _speedup(plt, evals),
            "report_acceptance": lambda: _acceptance(plt, evals),
            "report_speedup_vs_length": lambda: _speedup_vs_length(plt, evals),
            "report_training_curves": lambda: _training_curves(plt, train_dir)}
    paths = []
    for name in FIGURES:
        fig = draw[name]()
        fig.tight_layout()
        paths.append(out / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def _accuracy_vs_tokens(plt: Any, evals: dict[str, dict[str, Any]]) -> Any:
    fig, axes = plt.subplots(1, len(evals), figsize=(4.8 * len(evals), 3.8), squeeze=False)
    for ax, (sc, ev) in zip(axes[0], evals.items(), strict=True):
        # speculative configurations return their plain twin's answers (greedy, exact): one
        # point each would sit on top of it
        for c in (c for c in _configs(ev) if not ev[c].get("num_speculative_tokens")):
            m = ev[c]
            lo, hi = m["accuracy_ci95"]
            ax.errorbar(m["mean_output_tokens"], m["accuracy"], yerr=[[m["accuracy"] - lo], [hi - m["accuracy"]]],
                        fmt="o", capsize=3, label=c)
        ax.set(title=f"{sc}: accuracy vs output tokens", xlabel="mean output tokens", ylabel="accuracy",
               ylim=(-0.02, 1.02))
    axes[0][-1].legend(fontsize=7, loc="best", title="(+ _sd: same answers)", title_fontsize=7)
    return fig


def _bars(ax: Any, labels: list[str], vals: list[float], **kw: Any) -> None:
    ax.bar(range(len(vals)), vals, **kw)
    ax.set_xticks(range(len(vals)), labels, fontsize=6, rotation=45, ha="right")


def _speedup(plt: Any, evals: dict[str, dict[str, Any]]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ms = [(f"{sc}\n{c}", ev[c]) for sc, ev in evals.items() for c in _configs(ev) if ev[c].get("speedup") is not None]
    errs = [[m["speedup"] - m["speedup_ci95"][0] for _, m in ms], [m["speedup_ci95"][1] - m["speedup"] for _, m in ms]]
    _bars(ax, [label for label, _ in ms], [m["speedup"] for _, m in ms], yerr=errs, capsize=3, color="tab:blue")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(title="Speedup over plain greedy (geometric mean of per-question ratios, 95% CI)", ylabel="speedup")
    return fig


def _acceptance(plt: Any, evals: dict[str, dict[str, Any]]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    per_pos = [(sc, c, ev[c]["acceptance_per_position"]) for sc, ev in evals.items() for c in _configs(ev)
               if ev[c].get("acceptance_per_position")]
    if per_pos:
        for sc, c, v in per_pos:
            ax.plot(range(1, len(v) + 1), v, marker="o", label=f"{sc}/{c}")
        ax.set(title="Acceptance per draft position", xlabel="draft position", ylabel="accepted share of drafts")
        ax.legend(fontsize=6)
        return fig
    rows = [(f"{sc}\n{c}", ev[c]["acceptance_rate"]) for sc, ev in evals.items() for c in _configs(ev)
            if ev[c].get("acceptance_rate") is not None]
    _bars(ax, [r[0] for r in rows], [r[1] for r in rows], color="tab:green")
    ax.set(title="Acceptance rate (accepted / proposed); per-position figures need the vllm engine",
           ylabel="acceptance rate")
    return fig


def _speedup_vs_length(plt: Any, evals: dict[str, dict[str, Any]]) -> Any:
    """Speedup against mean accepted length (tokens per verify step): each timed
    speculative configuration's measured speedup, the k sweep's predicted speedups, and
    the model's line speedup = L / (k c + v) with its break-even point (speedup 1) for the
    median measured c and verify cost v at the configured k."""
    import statistics

    fig, ax = plt.subplots(figsize=(7, 4.2))
    timed = [(sc, c, ev[c]) for sc, ev in evals.items() for c in _configs(ev) if ev[c].get("speedup") is not None]
    for sc, c, m in timed:
        ax.scatter(m["mean_acceptance_length"], m["speedup"], marker="o", s=22, label=f"{sc}/{c} measured")
    pred = [(r["mean_acceptance_length"], r["predicted_speedup"]) for ev in evals.values() for c in _configs(ev)
            for r in ev[c].get("k_sweep") or [] if r.get("predicted_speedup") is not None]
    if pred:
        ax.scatter(*zip(*pred, strict=True), marker="x", s=14, color="grey", label="k sweep, predicted")
    costs = [(m["cost_ratio_c"], m["verify_cost"], m["num_speculative_tokens"]) for _, _, m in timed
             if m.get("cost_ratio_c") is not None and m.get("verify_cost") is not None]
    if costs:
        c = statistics.median(x[0] for x in costs)
        v = statistics.median(x[1] for x in costs)
        k = costs[0][2]
        even = k * c + v
        xs = [1 + i * k / 50 for i in range(51)]
        ax.plot(xs, [x / even for x in xs], color="black", lw=0.8,
                label=f"L / (k c + v): k={k}, c={c:.3f}, v={v:.2f}")
        ax.axvline(even, color="tab:red", lw=0.8, ls=":", label=f"break-even L = {even:.2f}")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(title="Speedup vs mean accepted length", xlabel="mean accepted length L (tokens per verify step)",
           ylabel="speedup over plain greedy")
    ax.legend(fontsize=5, loc="upper left")
    return fig


def _training_curves(plt: Any, train_dir: Path) -> Any:
    roles = [r for r in ("target", "draft", "draft_kd") if (train_dir / r).is_dir()] or ["target", "draft"]
    fig, axes = plt.subplots(1, len(roles), figsize=(5 * len(roles), 3.8), squeeze=False)
    for ax, role in zip(axes[0], roles, strict=True):
        for run in sorted((train_dir / role).glob("*")):
            f = run / "plots/metrics/train/loss.tsv"
            if f.exists():
                with f.open() as fh:
                    rows = list(csv.DictReader(fh, delimiter="\t"))
                ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], label=run.name)
        ax.set(title=f"Training loss: {role}s", xlabel="logged step", ylabel="loss")
        ax.legend(fontsize=6)
    return fig


def calibration_note(profile: str) -> list[str]:
    """The local profile's conditions were chosen by design (docs/local-profile.md): its
    sample problems were mixed until the untrained and trained targets reached the
    easy / medium / hard accuracies. A reader must not take its hypothesis-1 verdict as
    evidence about training."""
    if profile != "local":
        return []
    return ["**The local profile is calibrated by design.** Its sample problems were mixed until the untrained "
            "and trained 135M targets reached the design's easy / medium / hard conditions (docs/local-profile.md), "
            "so its hypothesis-1 verdicts demonstrate that the pipeline measures and tests what the design asks; "
            "they are not evidence that training raises accuracy. The paper profile's verdicts are.", ""]


def summary(evals: dict[str, dict[str, Any]], setup: dict[str, Any], prepare: dict[str, Any],
            figs: list[Path], rel: Path, times: dict[str, dict[str, Any]] | None = None,
            claims: ClaimsConfig | None = None) -> str:
    """`setup`: the params the header names, by dotted key (meta.profile, models.target,
    models.draft, generation.engine, generation.max_new_tokens,
    generation.num_speculative_tokens, data.source); `times`: the stages' wall times
    (specdraft.report.times.load_times), tabulated by family before the caveats; `claims`:
    the declared tests behind the verdicts (params `claims`; default: ClaimsConfig's)."""
    claims = claims or ClaimsConfig()
    s = setup
    lines = ["# specdraft: results", "",
             f"Profile **{s['meta.profile']}**; target `{s['models.target']}`, draft `{s['models.draft']}`; "
             f"engine **{s['generation.engine']}**, greedy, max_new_tokens {s['generation.max_new_tokens']}, "
             f"{s['generation.num_speculative_tokens']} draft tokens per round; data source `{s['data.source']}`.", "",
             # the verdicts first, right after the title and the profile line
             *verdict_table(evals, claims), "",
             "Verdicts by the rules of `specdraft.report.verdicts`: 95 % intervals (accuracy differences: Tango's "
             "score interval). " + claims_statement(evals, claims) + " Hypothesis 2 rests on the evidence the engine "
             "has (hf: exact identity on the timed questions; vLLM: the decoded answers). The figures behind each "
             "follow.", "",
             *calibration_note(s["meta.profile"]),
             f"How precise each accuracy comparison is (an interval narrower than {MATTERS * 100:.0f} points tells "
             "no difference from one that matters):", "",
             *[x for x in (resolution_line(sc, ev) for sc, ev in evals.items()) if x], "",
             "| scenario | train rows | test rows |", "|---|---|---|"]
    for sc, p in prepare.items():
        lines.append(f"| {sc} | {p['n_train']} | {p['n_test']} |")
    lines.append("")
    for sc, p in prepare.items():
        lines += [f"**Shortfall, {sc}:** {w} (prepare.allow_shortfall)." for w in p.get("warnings", [])]
    if any(p.get("warnings") for p in prepare.values()):
        lines.append("")
    for sc, ev in evals.items():
        lines += [f"## {sc}", ""] + table(ev) + [""] + drafts_table(ev)
    lines += hypotheses(evals)
    lines += times_table(times or {})
    cav = caveats(evals)
    lines += ["## Caveats", ""] + [f"- {c}" for c in cav] + [""]
    lines += ["## Figures", ""] + [f"![{p.stem}]({p.relative_to(rel)})" for p in figs] + [""]
    return "\n".join(lines)
