"""The whole local pipeline, end to end, with the real DVC CLI in a fresh clone.

Smaller counts through `dvc exp run -S` (the path a researcher uses) keep it to minutes;
every stage runs, and the outputs are checked for sane values, not just existence.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from conftest import clone_env, venv_bin
from pipeline_deps import params_mismatches
from specdraft.io import read_jsonl

CONFIGS = ["base", "cot", "cod", "cot_sd", "cod_sd", "cot_sd_eagle", "cod_sd_eagle", "cot_sd_untrained",
           "cod_sd_untrained"]
KD_CONFIGS = ["cot_sd_kd", "cod_sd_kd"]  # opt-in: train_draft_kd.scenarios=[gsm8k] (conftest)
SCENARIOS = ["gsm8k", "math_algebra_l12", "math_intalg_l34"]


@pytest.mark.slow
def test_local_pipeline_end_to_end(local_pipeline):
    """The run itself is the session fixture `local_pipeline` (conftest.py): `dvc exp run`
    with PIPELINE_OVERRIDES in a fresh clone, every stage recording the params it read."""
    p, repo, trace = local_pipeline.proc, local_pipeline.repo, local_pipeline.trace
    assert p.returncode == 0, p.stdout[-5000:] + p.stderr[-5000:]

    # every stage ran and is recorded
    stages = set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])
    listed = subprocess.run([venv_bin("dvc"), "stage", "list", "--name-only"], cwd=repo, env=clone_env(repo),
                            capture_output=True, text=True, check=True, timeout=300).stdout.split()
    assert set(listed) <= stages, set(listed) - stages
    status = subprocess.run([venv_bin("dvc"), "status"], cwd=repo, env=clone_env(repo), capture_output=True,
                            text=True, check=True, timeout=600).stdout
    assert "up to date" in status

    # dvc.yaml declares exactly the params keys each stage read (specdraft.config records them)
    assert params_mismatches(trace, repo) == []

    # teacher data: CoD shorter than CoT
    data = json.loads((repo / "metrics/data.json").read_text())
    for sc in SCENARIOS:
        d = data["scenarios"][sc]
        assert d["rows"] == 8 and d["cod_tokens_mean"] < d["cot_tokens_mean"]

    # the kernel path: decided once, with both paths timed; distillation ran it too
    kernels = json.loads((repo / "metrics/kernels.json").read_text())
    assert kernels["cpu_kernels"] in ("default", "onednn") and set(kernels["probe"]["forward_ms"]) == {
        "default", "onednn"}
    for sc in SCENARIOS:
        for style in ("cot", "cod"):
            dm = json.loads((repo / f"metrics/distill/{sc}-{style}.json").read_text())
            assert dm["cpu_kernels"] == kernels["cpu_kernels"]
            # the drafts' extra questions: answered by the target, counted apart from its own
            rows = read_jsonl(repo / f"data/distilled/{sc}-{style}.jsonl")
            extra = [r["id"] for r in rows if r.get("extra")]
            prepared = [r["id"] for r in read_jsonl(repo / f"data/prepared/{sc}/extra.jsonl")]
            assert dm["n"] == 8 and dm["extra"]["n"] == 4 and extra and set(extra) <= set(prepared[:4])

    # evaluation metrics: sane ranges for every scenario and configuration
    for sc in SCENARIOS:
        assert (repo / f"metrics/eval/{sc}/cot_sd_kd.json").exists() == (sc == "gsm8k")  # only where opted in
        for c in CONFIGS + (KD_CONFIGS if sc == "gsm8k" else []):
            m = json.loads((repo / f"metrics/eval/{sc}/{c}.json").read_text())
            assert m["n"] == 3 and 0.0 <= m["accuracy"] <= 1.0
            assert m["accuracy_ci95"][0] <= m["accuracy"] <= m["accuracy_ci95"][1]
            assert 0 < m["mean_output_tokens"] <= 24
            assert c == "base" or m["tokens_per_s"] > 0  # base is decoded batched only, not timed
            # cpu_kernels: auto: the one path the kernels stage chose for the whole run
            assert m["cpu_kernels"] == kernels["cpu_kernels"] and m["cpu_kernels_setting"] == "auto"
            assert m["device"] == "cpu" and m["applied"]["generation.cpu_kernels"] == kernels["cpu_kernels"]
            assert m["not_applied"] == {}
            if c.endswith(("_sd", "_sd_eagle", "_sd_kd")):  # the trained drafts' k sweep, k = 1..5, exact simulation
                assert [r["k"] for r in m["k_sweep"]] == [1, 2, 3, 4, 5]
                assert all(len(r["acceptance_per_position"]) == r["k"] and r["predicted_speedup"] > 0
                           for r in m["k_sweep"])
            if c.endswith(("_sd", "_sd_eagle", "_sd_kd", "_sd_untrained")):
                assert 0.0 <= m["acceptance_rate"] <= 1.0 and m["mean_acceptance_length"] >= 1.0
                assert m["speedup"] > 0 and m["speedup_ci95"][0] <= m["speedup"] <= m["speedup_ci95"][1]
                assert m["diverging_outputs"] == 0  # greedy speculative == plain, fp32 hf engine
                # acceptance simulated on every question; the engine's own counts agree where timed
                assert m["simulation_matches_engine"] == m["timed_n"] == 3
                # the timed questions' draw is recorded by question kind (the sample's templates)
                drawn = m["timed_sample"]
                assert drawn["n"] == 3 and sum(v["timed"] for v in drawn["by_stratum"].values()) == 3
                assert "None" not in drawn["by_stratum"] and m["timed_subset_mean_acceptance_length"] >= 1.0
                # k is tuned off the test set: every speculative configuration names the
                # validation questions its sweep ran on, none of them a test question
                src = m["k_sweep_source"]
                assert src == {"file": f"data/prepared/{sc}/val.jsonl", "questions": 4, "split": "validation"}
                val_ids = {json.loads(x)["id"] for x in (repo / src["file"]).read_text().splitlines()}
                test_ids = {json.loads(x)["id"] for x in (repo / f"data/prepared/{sc}/test.jsonl").read_text().splitlines()}
                assert len(val_ids) == 4 and not val_ids & test_ids
        comp = json.loads((repo / f"metrics/eval/{sc}/comparisons.json").read_text())
        assert {"cot_vs_base", "cod_vs_cot", "cot_sd_vs_cot_sd_untrained"} <= set(comp)
        assert all(0.0 <= v["p_value"] <= 1.0 for v in comp.values())

    # the shared checker's verdicts agree with math-verify's own on every stored prediction
    from math_verify import parse, verify

    checked = 0
    for f in (repo / "data/eval").rglob("*.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if r["extracted"] is None:
                assert r["correct"] is False
                continue
            mv = bool(verify(parse(f"${r['answer']}$"), parse(f"${r['extracted']}$")))
            assert mv == r["correct"], (f.name, r["answer"], r["extracted"])
            checked += 1
    print(f"math-verify cross-check: {checked} predictions agree")

    # training curves and final losses
    for role in ("target", "draft", "draft_kd"):
        for sc in SCENARIOS if role != "draft_kd" else ["gsm8k"]:
            for style in ("cot", "cod"):
                m = json.loads((repo / f"metrics/train/{role}/{sc}-{style}/metrics.json").read_text())
                assert m["steps"] >= 1 and m["train_loss_first"] > 0
                assert role != "draft_kd" or m["objective"] == "kd"
    # the EAGLE-3 heads: trained on the target's features, saved in speculators' layout
    for sc in SCENARIOS:
        for style in ("cot", "cod"):
            m = json.loads((repo / f"metrics/train/draft_eagle/{sc}-{style}/metrics.json").read_text())
            assert m["train_loss_first"] > 0 and m["k"] == 4
            assert m["rows_train"] + m["rows_held_out"] == 8 + 4  # training answers + distill.extra_questions
            cfg = json.loads((repo / f"models/draft_eagle/{sc}-{style}/config.json").read_text())
            assert cfg["speculators_model_type"] == "eagle3" and cfg["draft_vocab_size"] == m["draft_vocab"]
    # reports name every configuration; figures are PNG images
    summary = (repo / "reports/summary.md").read_text()
    for c in CONFIGS + KD_CONFIGS:
        assert f"| {c} |" in summary
    assert "## Hypotheses" in summary and "## Caveats" in summary
    for f in (repo / "reports/figures").glob("*.png"):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((repo / "reports/figures").glob("*.png"))) == 8
    assert "Draft-length sweep" in summary and "| cot_sd_kd |" in summary
    assert "CoD/CoT" in (repo / "reports/data.md").read_text()

    # time as a metric: every stage but the report recorded its wall time where the report
    # reads it, and the report's totals add them up
    times = json.loads((repo / "metrics/stage_times.json").read_text())
    assert set(times["stage_s"]) == set(listed) - {"report"}  # dvc.lock also keeps stages since removed
    assert all(t > 0 for t in times["stage_s"].values())
    assert abs(times["total_s"] - sum(times["stage_s"].values())) < 0.5
    assert times["family_s"]["evaluate"] == round(sum(v for k, v in times["stage_s"].items()
                                                      if k.startswith("evaluate@")), 1)
    # the sum of the stages' own times accounts for the run (DVC's own work is the rest;
    # a reused run, SPECDRAFT_REUSE_PIPELINE, has no wall time of its own)
    assert not local_pipeline.seconds or 0.5 * local_pipeline.seconds < times["total_s"] <= local_pipeline.seconds
    assert "## Where the time goes" in summary and "| **total** |" in summary
    assert json.loads((repo / "metrics/report_time.json").read_text())["wall_s"] > 0
