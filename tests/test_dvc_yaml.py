"""dvc.yaml matches the code it runs: code deps from the import graph, params keys from
what each stage reads (the keys are checked against a real run in test_pipeline_e2e.py;
here, that the recording itself is right)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pipeline_deps as pd
from conftest import venv_bin


def test_no_import_cycle_among_specdraft_modules():
    g = pd.graph()
    assert "specdraft.generate.hf_engine" in g and "specdraft.generate.api" in g["specdraft.generate.engine"]
    assert pd.cycles(g) == []
    # the finder does see a cycle when there is one
    assert pd.cycles({**g, "specdraft.generate.greedy": {"specdraft.generate.hf_engine"}}) \
        == [["specdraft.generate.greedy", "specdraft.generate.hf_engine"]]


def test_every_stage_depends_on_exactly_the_code_it_imports():
    """Missing: a change there would leave a stale result; extra: a needless re-run."""
    assert pd.code_mismatches() == []


def test_the_code_check_names_missing_and_extra_deps(tmp_path, root):
    text = (root / "dvc.yaml").read_text()
    text = text.replace("      - src/specdraft/report/summary.py\n", "      - src/specdraft/teacher/gemini.py\n", 1)
    (tmp_path / "dvc.yaml").write_text(text)
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    subprocess.run([venv_bin("dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, check=True, timeout=120)
    problems = pd.code_mismatches(tmp_path)
    assert "report: missing dep src/specdraft/report/summary.py (imported by the stage)" in problems
    assert any(p.startswith("report: extra dep src/specdraft/teacher/gemini.py") for p in problems)
    assert len(problems) == 2, problems


def test_params_reads_are_recorded_per_key(tmp_path, root):
    """Field reads, mapping entries and `get` are recorded; validation, fingerprints and
    unread fields are not."""
    code = """
from specdraft.config import load_params, section, get
from specdraft.generate.api import GenerationConfig
from specdraft.generate.resume import fingerprint
from specdraft.prompts import PromptsConfig, messages
params = load_params()
gen = section(GenerationConfig, "generation", params)
prompts = section(PromptsConfig, "prompts", params)
fingerprint([gen, prompts])
messages(prompts, "cod", "q")
gen.max_new_tokens
gen.vllm.max_num_seqs
get(params, "eval.seed")
"""
    env = {**os.environ, "SPECDRAFT_TRACE_PARAMS": str(tmp_path / "t")}
    subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True, timeout=300)
    (trace,) = (tmp_path / "t").glob("*.json")
    keys = json.loads(trace.read_text())["keys"]
    assert keys == ["eval.seed", "generation.max_new_tokens", "generation.vllm.max_num_seqs", "prompts.fewshot.cod",
                    "prompts.system.cod"]


def test_the_params_check_names_missing_and_extra_keys(tmp_path, root):
    """A trace that read a key the stage does not declare, and missed one it declares."""
    (tmp_path / "t").mkdir()
    st = next(s for s in pd.stages(root) if s.addressing == "compare@gsm8k")
    argv = st.cmd.split()[st.cmd.split().index("-m") + 1:]
    Path(tmp_path / "t" / "x.json").write_text(json.dumps({"argv": argv, "keys": ["eval.seed", "eval.variants"]}))
    problems = [p for p in pd.params_mismatches(tmp_path / "t", root) if p.startswith("compare@gsm8k:")]
    assert problems == ["compare@gsm8k: reads params key eval.variants but does not declare it",
                        "compare@gsm8k: declares params key eval.comparisons but never reads it"]


def test_the_kd_draft_is_opt_in_per_scenario(tmp_path, root):
    """No KD stage by default; train_draft_kd.scenarios adds train_draft_kd and evaluate_kd
    for exactly those scenarios (their code deps exact too), evaluate_kd writing only its
    own configuration; an unknown scenario name is refused before any stage runs."""
    import pytest
    import yaml

    from specdraft.io import InputError
    from specdraft.schema import check_all

    assert not [s.name for s in pd.stages(root) if "kd" in s.name]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train_draft_kd"]["scenarios"] = ["math_algebra_l12"]
    (tmp_path / "dvc.yaml").write_text((root / "dvc.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([venv_bin("dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, check=True, timeout=120)
    kd = sorted(s.name for s in pd.stages(tmp_path) if "kd" in s.name)
    assert kd == [f"{st}@math_algebra_l12-{y}" for st in ("evaluate_kd", "train_draft_kd") for y in ("cod", "cot")]
    assert pd.code_mismatches(tmp_path) == []
    stage = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["evaluate_kd"]
    assert stage["outs"] == ["data/eval/${item.scenario}/${item.style}_sd_kd.jsonl"]
    assert "--variant sd_kd=kd" in stage["cmd"] and "eval.variants" not in stage["params"]
    params["train_draft_kd"]["scenarios"] = ["gsm8k", "gsm9k"]
    with pytest.raises(InputError, match=r"train_draft_kd.scenarios: \['gsm9k'\] not in scenarios"):
        check_all(params)


def test_every_stage_writes_its_time_to_a_declared_uncached_metric(root):
    """Time is a metric (specdraft.stages._cli --times): each stage's own file, declared as
    a git-tracked metric so `dvc metrics diff` sees it, under metrics/time/ where the report
    reads it (the report's own outside it: it reads that folder)."""
    import yaml

    seen = []
    for st in pd.stages(root):
        words = st.cmd.split()
        assert "--times" in words, f"{st.name}: no --times in its cmd"
        path = words[words.index("--times") + 1]
        metric = [o for o in st.outs if o.def_path == path]
        assert metric and metric[0].metric and not metric[0].use_cache, f"{st.name}: {path} not an uncached metric"
        want = "metrics/report_time.json" if st.name == "report" else \
            f"metrics/time/{st.name.replace('@', '/')}.json"
        assert path == want, (st.name, path)
        seen.append(path)
    assert len(seen) == len(set(seen))
    report = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["report"]
    assert "metrics/time" in report["deps"]
