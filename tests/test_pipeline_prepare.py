"""The real DVC CLI runs the prepare stages in a fresh clone."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import clone_env, clone_worktree, venv_bin


def _dvc(repo, *args, timeout=600):
    p = subprocess.run([venv_bin("dvc"), *args], cwd=repo, capture_output=True, text=True, timeout=timeout,
                       env=clone_env(repo))
    assert p.returncode == 0, f"dvc {' '.join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.mark.slow  # integration: kept out of test-fast (3-minute budget), run by make test / CI
def test_dvc_repro_prepare_then_up_to_date(tmp_path):
    repo = clone_worktree(tmp_path / "repo")
    _dvc(repo, "repro", "prepare")
    for sc in ("gsm8k", "math_algebra_l12", "math_intalg_l34"):
        m = json.loads((repo / f"metrics/prepare/{sc}.json").read_text())
        assert m["source"] == "sample" and m["n_train"] == m["n_train_requested"]
        assert sum(1 for _ in (repo / f"data/prepared/{sc}/test.jsonl").open()) == m["n_test"]
    t = time.monotonic()
    out = _dvc(repo, "repro", "prepare").stdout
    assert "up to date" in out
    print(f"second dvc repro prepare: {time.monotonic() - t:.2f}s")


@pytest.mark.slow  # integration: kept out of test-fast (3-minute budget), run by make test / CI
def test_dvc_exp_run_real_data_source(tmp_path, shared_data):
    repo = clone_worktree(tmp_path / "repo")
    _dvc(repo, "exp", "run", "prepare", "-S", f"data.source=dir:{shared_data}", "-S", "prepare.n_test=100")
    m = json.loads((repo / "metrics/prepare/gsm8k.json").read_text())
    assert m["source"] == f"dir:{shared_data}" and m["pool_size"] >= 7400
    test_ids = [json.loads(x)["id"] for x in (repo / "data/prepared/gsm8k/test.jsonl").open()]
    train_ids = [json.loads(x)["id"] for x in (repo / "data/prepared/gsm8k/train.jsonl").open()]
    assert len(test_ids) == 100 and all(i.startswith("gsm8k/test/") for i in test_ids)
    assert all(i.startswith("gsm8k/train/") for i in train_ids)
    # composed from conf/ with the override: the local profile's other values stay
    params = (repo / "params.yaml").read_text()
    assert "profile: local" in params and f"source: dir:{shared_data}" in params


@pytest.mark.slow  # integration: a clone and two DVC dry runs (7 s); make test / CI run it
def test_dry_run_paper_profile_composes(tmp_path):
    """`dvc exp run --dry -S profile=paper` composes the paper profile and lists the plan.

    In a clone without pipeline outputs, DVC's dry run works in a temporary copy and stops
    at the first stage whose input another (not really run) stage would write; `--force`
    lists every stage without looking at outputs.
    """
    repo = clone_worktree(tmp_path / "repo")
    out = _dvc(repo, "exp", "run", "--dry", "--force", "-S", "profile=paper").stdout
    for stage in ("prepare@gsm8k", "cot@math_intalg_l34", "base_models", "train_target@gsm8k-cod",
                  "distill@math_algebra_l12-cot", "train_draft@gsm8k-cot", "evaluate@gsm8k-cod", "evaluate_base@gsm8k",
                  "compare@gsm8k", "analyze", "report"):
        assert f"Running stage '{stage}'" in out, stage
    # composed from the paper profile: the launcher param reaches the training command
    assert "python -m specdraft.stages.train_target --scenario gsm8k --style cot" in out
    # the composition is real: an unknown profile fails to compose
    bad = subprocess.run([venv_bin("dvc"), "exp", "run", "--dry", "--force", "-S", "profile=nope"], cwd=repo,
                         capture_output=True, text=True, env=clone_env(repo), timeout=600)
    assert bad.returncode != 0 and "profile" in bad.stdout + bad.stderr
