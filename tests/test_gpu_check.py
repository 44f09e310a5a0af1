"""`make gpu-check` on a machine without a GPU: it refuses at once (exit 2, one line) and
prints its plan; its step runner stops a step at its budget and records every step."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specdraft.tools import gpu_check
from specdraft.tools.gpu_check import STEPS, Context, Step, run_command, run_steps, table

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def test_without_a_gpu_it_exits_2_with_one_line():
    if gpu_check.find_gpu(ROOT)[0] is not None:
        pytest.skip("this machine has a CUDA GPU: the check would run for real")
    p = _run(sys.executable, "-m", "specdraft.tools.gpu_check", "--json", "/nonexistent/never-written.json")
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA GPU here (")
    assert lines[0].endswith("); run it on a GPU machine") and p.stdout == ""


def test_plan_lists_every_step_on_any_machine():
    p = _run(sys.executable, "-m", "specdraft.tools.gpu_check", "--plan")
    assert p.returncode == 0, p.stderr
    for i, step in enumerate(STEPS, 1):
        assert f"{i}. {step.name}: " in p.stdout and f"[budget {step.budget_s} s]" in p.stdout
    assert sum(s.budget_s for s in STEPS) <= gpu_check.DEADLINE_S <= 600


def test_make_gpu_check_plan_sets_nothing_up():
    p = _run("make", "--no-print-directory", "gpu-check", "PLAN=1", timeout=60)
    assert p.returncode == 0, p.stderr
    assert [line.split(":")[0] for line in p.stdout.splitlines()[1:]] == [f"{i}. {s.name}" for i, s in
                                                                          enumerate(STEPS, 1)]


@pytest.mark.parametrize("script, returncode", [("sleep 60 & sleep 60", None), ("sleep 60 & exit 3", 3)])
def test_a_command_is_stopped_at_its_budget_and_leaves_no_process(tmp_path, script, returncode):
    t = time.monotonic()
    ran = run_command(["bash", "-c", f"echo $$ > pid; {script}"], tmp_path, 2, tmp_path / "log")
    assert ran.returncode == returncode and time.monotonic() - t < 15
    pgid, until = int((tmp_path / "pid").read_text()), time.monotonic() + 5
    while _alive_in_group(pgid) and time.monotonic() < until:  # SIGKILL lands asynchronously
        time.sleep(0.1)
    assert _alive_in_group(pgid) == []  # the background sleep too


def _alive_in_group(pgid: int) -> list[int]:
    """Processes of that group still running (killed ones may linger as zombies until reaped)."""
    import psutil

    alive = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
    return alive


def test_steps_run_within_the_deadline_and_skip_without_their_environment(tmp_path):
    def passes(ctx: Context, timeout: float) -> tuple[bool, str, str]:
        ctx.ready.add(".venv")
        return True, "cuda", f"within {timeout:.0f} s"

    def breaks(ctx: Context, timeout: float) -> tuple[bool, str, str]:
        raise RuntimeError("broken")

    steps = [Step("setup", "", 30, (), passes), Step("needs-venv", "", 500, (".venv",), passes),
             Step("needs-vllm", "", 30, (".venv-vllm",), passes), Step("breaks", "", 30, (), breaks)]
    results = run_steps(steps, Context(tmp_path, tmp_path), deadline_s=100)
    assert [(r.stage, r.result) for r in results] == [("setup", "pass"), ("needs-venv", "pass"),
                                                      ("needs-vllm", "fail"), ("breaks", "fail")]
    assert results[1].note == "within 100 s"  # its budget, cut to the time left
    assert results[2].note == "not run: .venv-vllm not set up" and results[3].note == "RuntimeError: broken"
    assert table(results).splitlines()[0].split() == ["stage", "device", "seconds", "result", "note"]


def test_on_a_gpu_machine_the_table_is_printed_and_written(tmp_path, monkeypatch, capsys):
    def fails(ctx: Context, timeout: float) -> tuple[bool, str, str]:
        return False, "cuda", "metrics say cpu"

    monkeypatch.setattr(gpu_check, "find_gpu", lambda root: (["GPU 0: NVIDIA H100 (UUID: x)"], "1 GPU(s)"))
    monkeypatch.setattr(gpu_check, "STEPS", [Step("only", "", 30, (), fails)])
    out = tmp_path / "out" / "gpu_check.json"
    assert gpu_check.main(["--json", str(out), "--workdir", str(tmp_path / "work")]) == 1
    report = json.loads(out.read_text())
    assert report["ok"] is False and report["gpus"] == ["GPU 0: NVIDIA H100 (UUID: x)"]
    assert report["steps"] == [{"stage": "only", "device": "cuda", "seconds": report["steps"][0]["seconds"],
                                "result": "fail", "note": "metrics say cpu"}]
    rows = [line.split()[:4] for line in capsys.readouterr().out.splitlines() if line.startswith("only ")]
    assert len(rows) == 1 and rows[0][:2] == ["only", "cuda"] and rows[0][3] == "fail"


def test_the_rehearsal_keeps_vllms_own_processes_on_a_gpu(tmp_path):
    """On the CPU the rehearsal runs vLLM in one process with a 1 GiB KV cache; on CUDA
    (runtime.device=cuda, as gpu-check's rehearsal step sets it) neither is forced, so each
    engine's core process exits with its engine and returns the GPU's memory."""
    from specdraft.rehearsal.run import stage_env

    cpu, cuda = stage_env(tmp_path), stage_env(tmp_path, cuda=True)
    assert cpu["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and cpu["VLLM_CPU_KVCACHE_SPACE"] == "1"
    import os

    for key in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE"):
        assert cuda.get(key) == os.environ.get(key)
    assert cuda["PYTHONPATH"] == cpu["PYTHONPATH"] == str(tmp_path / "repo" / "src")
