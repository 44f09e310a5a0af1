"""Scale-out paths, each run for real on this CPU machine (README: "Scaling out").

1. Training under `accelerate launch` with conf/accelerate/cpu_ddp.yaml (2 processes, gloo):
   the stage processes directly (tiny models; a crash and a resume) and once through
   dvc.yaml's `launcher` param on the real model.
2. The vllm engine through the pipeline: tests/test_rehearsal.py runs every vLLM stage of the
   paper profiles (re-run under .venv-vllm, resume, engine starts); the cross-engine answer
   checks on the real model are in tests/test_generate.py.
3. Queued experiments: `dvc exp run --queue` twice, `dvc queue start -j 2`.
4. A shared remote: `dvc push`, then a fresh clone's `dvc pull` is up to date.

1, 3 and 4 start from the session's pipeline run (conftest.local_pipeline), which the end-to-end
test checks; each leaves that repository's workspace as it found it.
"""

from __future__ import annotations

import filecmp
import json
import math
import os
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, clone_env, venv_bin
from procs import describe, processes_under, start_detached, stop_workers, tail, wait_until

pytestmark = pytest.mark.slow

CPU_DDP = "conf/accelerate/cpu_ddp.yaml"


def _training_workspace(ws: Path, n_rows: int) -> None:
    """params.yaml of the repository (small batches, frequent checkpoints) and teacher
    rows from the shipped GSM8K sample (its reference solutions as responses)."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["train_target"].update(batch_size=1, epochs=2, save_steps=5, val_share=0.1)
    p["train_draft"].update(batch_size=2, epochs=1, val_share=0.1)
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "params.yaml").write_text(yaml.safe_dump(p))
    sample = [json.loads(x) for x in (ROOT / "data/sample/gsm8k/train.jsonl").open()][:n_rows]
    rows = [{"id": f"q{i:03d}", "question": r["question"], "answer": r["answer"].split("####")[-1].strip(),
             "response": r["answer"], "response_ids": [28, 29, 30, 2]} for i, r in enumerate(sample)]
    for style in ("cot", "cod"):
        (ws / f"{style}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


# Run in a fresh process: load the merged target, generate, compare with base + adapter.
MERGE_CHECK = """
import json, sys, torch
from specdraft.train.finish import merge_adapter
from specdraft.generate.api import GenerationConfig
from specdraft.generate.hf_engine import HFEngine
base, out = sys.argv[1], sys.argv[2]
ref = merge_adapter(base, out + "/adapter", "float32").state_dict()
eng = HFEngine(out, None, GenerationConfig(max_new_tokens=8))
got = eng.model.state_dict()
diff = max(float((got[k].float() - ref[k].float()).abs().max()) for k in ref)
o = eng.generate_one(eng.render([{"role": "user", "content": "What is 2 + 3?"}]))
print(json.dumps([diff, o.output_tokens]))
"""


def _launch(stage: str, *args: str) -> list[str]:
    return [venv_bin("accelerate"), "launch", "--config_file", str(ROOT / CPU_DDP), "-m",
            f"specdraft.stages.{stage}", *args]


def _kill_tree(pid: int) -> int:
    """SIGKILL a launcher and every process under it, as a machine failure would. (torchrun
    starts its workers in sessions of their own: killing the launcher alone leaves them
    running.)"""
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in procs:
        p.kill()
    return len(procs)


def _suspend_tree(pid: int) -> list:
    """SIGSTOP a launcher and every process under it; returns them (to resume)."""
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in procs:
        p.suspend()
    return procs


def _late_by(ckpt: Path, curve: Path) -> int | None:
    """How many steps the curve runs past the last complete checkpoint (None while a
    checkpoint is half written, which a crash may also leave, but not this test)."""
    dirs = list(ckpt.glob("checkpoint-*"))
    if not dirs or not all((d / "trainer_state.json").exists() for d in dirs):
        return None
    last = max(int(d.name.split("-")[1]) for d in dirs)
    rows = [x for x in curve.read_text().splitlines()[1:] if x.strip()]
    return max(int(x.split("\t")[0]) for x in rows) - last if rows else None


def _generates(model_dir: Path, n: int = 8) -> list[int]:
    from specdraft.generate.api import GenerationConfig
    from specdraft.generate.hf_engine import HFEngine

    eng = HFEngine(model_dir, None, GenerationConfig(max_new_tokens=n))
    out = eng.generate_one(eng.render([{"role": "user", "content": "What is 2 + 3?"}]))
    return out.token_ids


def test_training_runs_data_parallel_on_two_cpu_processes(tiny_models, local_pipeline, tmp_path):
    ws = tmp_path / "ws"
    n_rows = 60
    _training_workspace(ws, n_rows)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PATH": f"{Path(venv_bin('python')).parent}:"
           f"{os.environ['PATH']}"}
    target_args = ["--scenario", "gsm8k", "--style", "cot", "--base", str(tiny_models / "target"), "--cot",
                   "cot.jsonl", "--cod", "cod.jsonl", "--out", "out/target", "--live", "live/target"]
    ckpt = ws / ".specdraft/checkpoints/target/gsm8k-cot"

    # a crash that lands late: every process of the run killed while the curve holds steps
    # logged after the last checkpoint (2 or more), which the resumed run must not log twice.
    # The processes are frozen before the state is read, so what is checked is what is killed.
    curve_file = ws / "live/target/plots/metrics/loss.tsv"
    t = time.monotonic()
    proc = subprocess.Popen(_launch("train_target", *target_args), cwd=ws, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    killed, late = 0, None
    try:
        while proc.poll() is None and time.monotonic() - t < 600:
            if list(ckpt.glob("checkpoint-*/trainer_state.json")) and curve_file.exists():
                frozen = _suspend_tree(proc.pid)
                late = _late_by(ckpt, curve_file)
                if late is not None and late >= 2:
                    killed = _kill_tree(proc.pid)
                    break
                for p in frozen:
                    p.resume()
            time.sleep(0.02)
    finally:
        if proc.poll() is None and not killed:
            _kill_tree(proc.pid)
        proc.wait(timeout=60)
    assert killed == 3, "expected the launcher and two ranks alive past a checkpoint"
    assert not (ws / "out/target").exists()

    # the rerun resumes from it, on two ranks that each take half of the examples
    done = subprocess.run(_launch("train_target", *target_args), cwd=ws, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"train_target, 2 CPU processes, crash + resume: {time.monotonic() - t:.0f}s")
    m = json.loads((ws / "live/target/metrics.json").read_text())
    n_train = m["train_rows"]
    assert n_train == n_rows - round(0.1 * n_rows)
    assert m["world_size"] == 2 and m["global_batch_size"] == 2 and m["resumed"] is True
    assert m["steps"] == 2 * math.ceil(n_train / 2)  # 2 epochs, batch 1 per rank: sharded, not duplicated
    logged = [int(x.split("\t")[0]) for x in curve_file.read_text().splitlines()[1:]]  # x: the global step
    assert logged == list(range(1, m["steps"] + 1)), (late, logged)  # one writer, one row per step, none twice
    assert not ckpt.exists()  # finished: the next run starts fresh
    # every rank saved (the adapter), one process merged it into the base reloaded unquantised:
    # in a fresh process the merged model loads, generates, and equals base + saved adapter
    check = subprocess.run([venv_bin("python"), "-c", MERGE_CHECK, str(tiny_models / "target"),
                            str(ws / "out/target")], env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    max_diff, generated = json.loads(check.stdout.strip().splitlines()[-1])
    assert max_diff <= 1e-6 and generated == 8

    # train_draft (full fine-tuning), then the draft's acceptance on the main process only
    done = subprocess.run(_launch("train_draft", "--scenario", "gsm8k", "--style", "cot", "--base",
                                  str(tiny_models / "draft"), "--target", str(tiny_models / "target"), "--data",
                                  "cot.jsonl", "--out", "out/draft", "--live", "live/draft"),
                          cwd=ws, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    m = json.loads((ws / "live/draft/metrics.json").read_text())
    assert m["world_size"] == 2 and m["steps"] == math.ceil(n_train / 2 / 2)
    assert 0.0 <= m["acceptance_trained"] <= 1.0 and m["acceptance_rows"] == n_rows - n_train
    assert len(_generates(ws / "out/draft")) == 8

    # FSDP (and DeepSpeed) cannot run on CPU processes: accelerate 1.15 would silently train
    # plain data parallel; the stage refuses instead, naming the reason
    fsdp = tmp_path / "cpu_fsdp.yaml"
    fsdp.write_text((ROOT / CPU_DDP).read_text().replace("distributed_type: MULTI_GPU", "distributed_type: FSDP")
                    + "fsdp_config:\n  fsdp_version: 2\n  fsdp_state_dict_type: FULL_STATE_DICT\n")
    cmd = [venv_bin("accelerate"), "launch", "--config_file", str(fsdp), "-m", "specdraft.stages.train_target",
           *target_args]
    done = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "the accelerate config asks for FSDP, but accelerate runs MULTI_CPU" in done.stderr

    # through dvc.yaml: the launcher param, on the real model, in a temporary experiment
    t = time.monotonic()
    launcher = f"train_target.launcher=accelerate launch --config_file {CPU_DDP}"
    p = local_pipeline.exp_run("--temp", "-n", "ddp-cpu", "train_target@gsm8k-cot", overrides=(launcher,))
    assert p.stdout.count("Running stage") == 1, p.stdout[-3000:]  # that stage only
    print(f"dvc exp run --temp train_target@gsm8k-cot under accelerate: {time.monotonic() - t:.0f}s")
    exp = _experiment(local_pipeline, "ddp-cpu")
    m = exp["metrics"]["metrics/train/target/gsm8k-cot/metrics.json"]["data"]
    assert m["world_size"] == 2 and m["steps"] == math.ceil(m["train_rows"] / 2 / 4)  # batch 4 per rank


def _exp_show(run) -> list[dict]:
    return json.loads(run.dvc("exp", "show", "--json").stdout)


def _experiment(run, name: str) -> dict:
    """The `data` (params, metrics) of one named experiment in `dvc exp show --json`."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") == name and "data" in node:
                found.append(node["data"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(_exp_show(run))
    assert len(found) == 1, f"experiment {name!r} found {len(found)} times in dvc exp show"
    return found[0]


QUEUE_BUSY = ("Queued", "Running")


def _queue_status(run) -> str:
    return run.dvc("queue", "status", timeout=120).stdout


def _wait_for_no_workers(run, timeout: float = 120) -> None:
    """DVC's own view: no queue worker active or idle (`dvc queue status`)."""
    wait_until(lambda: _queue_status(run), lambda s: "Worker status: 0 active, 0 idle" in s, timeout=timeout,
               interval=1, what="no queue workers (dvc queue status)",
               describe=lambda s: f"{s}\nprocesses:\n{describe(processes_under(run.repo))}")


@pytest.fixture
def queue_run(local_pipeline):
    """The session's pipeline run, its experiment queue stopped when the test ends, pass or
    fail: `dvc queue stop --kill`, then any queue process still running in its repository
    killed (procs.stop_workers). On CI a worker stayed alive after its queue was empty; left
    running it would keep its memory, and its old environment for the next queued run."""
    p = local_pipeline.proc
    if p.returncode != 0:  # queued runs would only repeat its failure, at length
        pytest.fail(f"the session's pipeline run failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    yield local_pipeline
    try:
        local_pipeline.dvc("queue", "stop", "--kill", check=False, timeout=120)
    except subprocess.TimeoutExpired:
        pass
    finally:
        left = stop_workers(local_pipeline.repo, wait=60)
    if left:
        warnings.warn("queue processes still running 60 s after `dvc queue stop --kill`, killed:\n"
                      + "\n".join(left), stacklevel=1)


def test_queued_experiments_run_two_at_a_time(queue_run, tmp_path):
    """Two variants of what compare@gsm8k tests (eval.comparisons: read by that stage only)."""
    run = queue_run
    variants = {"queued-a": [["cot", "base"]], "queued-b": [["cod", "base"], ["cod", "cot"]]}
    for name, pairs in variants.items():
        value = "[" + ",".join(f"[{a},{b}]" for a, b in pairs) + "]"
        run.exp_run("--queue", "-n", name, "compare@gsm8k", overrides=(f"eval.comparisons={value}",))
    trace = tmp_path / "trace"  # workers inherit the environment of `dvc queue start`
    _wait_for_no_workers(run)  # running workers would be reused, with their own environment
    t = time.monotonic()
    # its workers inherit its stdout and stderr: a file, never a pipe (tests/procs.py says why)
    log = tmp_path / "queue-start.log"
    started = start_detached([venv_bin("dvc"), "queue", "start", "-j", "2"], log, timeout=120, cwd=run.repo,
                             env=run.env(SPECDRAFT_TRACE_PARAMS=str(trace)))
    assert started.returncode == 0, tail(log)
    status = wait_until(lambda: _queue_status(run), lambda s: not any(x in s for x in QUEUE_BUSY), timeout=900,
                        interval=2, what="both queued experiments to finish (dvc queue status)",
                        describe=lambda s: f"{s}\nprocesses:\n{describe(processes_under(run.repo))}")
    print(f"two queued experiments, 2 workers: {time.monotonic() - t:.0f}s")
    run.dvc("queue", "stop", check=False)
    _wait_for_no_workers(run)
    done = {line.split()[1] for line in status.splitlines() if line.endswith("Success") and len(line.split()) > 2}
    assert set(variants) <= done, status + run.dvc("queue", "logs", "queued-a", check=False).stdout[-3000:]

    for name, pairs in variants.items():
        exp = _experiment(run, name)
        assert exp["params"]["params.yaml"]["data"]["eval"]["comparisons"] == pairs
        comp = exp["metrics"]["metrics/eval/gsm8k/comparisons.json"]["data"]
        assert sorted(comp) == sorted(f"{a}_vs_{b}" for a, b in pairs)
        assert all(0.0 <= v["p_value"] <= 1.0 for v in comp.values())
    # the stage processes of both experiments saw it (one trace per command line) and only
    # compare ran: everything upstream came from the cache
    traces = {json.loads(f.read_text())["argv"][0] for f in trace.glob("*.json")}
    assert traces == {"specdraft.stages.compare"}, traces
    assert "up to date" in run.dvc("status").stdout  # the workspace is untouched


def test_remote_push_then_fresh_clone_pulls_and_reproduces_nothing(local_pipeline, tmp_path):
    run = local_pipeline
    remote = tmp_path / "remote"
    run.dvc("remote", "add", "-d", "shared", str(remote))
    run.git("add", ".dvc/config")
    run.git("commit", "-qm", "shared remote")
    t = time.monotonic()
    pushed = run.dvc("push").stdout
    print(f"dvc push: {time.monotonic() - t:.0f}s ({pushed.strip().splitlines()[-1]})")
    assert any(remote.rglob("*")), pushed

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(run.repo), str(clone)], check=True, timeout=300)
    env = clone_env(clone)

    def dvc(*args):
        p = subprocess.run([venv_bin("dvc"), *args], cwd=clone, env=env, capture_output=True, text=True,
                           timeout=1800)
        assert p.returncode == 0, f"dvc {' '.join(args)}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        return p.stdout

    t = time.monotonic()
    dvc("pull")
    print(f"dvc pull in a fresh clone: {time.monotonic() - t:.0f}s")
    assert "Data and pipelines are up to date." in dvc("status")
    lock = (clone / "dvc.lock").read_text()
    t = time.monotonic()
    out = dvc("repro")
    print(f"dvc repro in the pulled clone: {time.monotonic() - t:.0f}s")
    assert "Running stage" not in out and (clone / "dvc.lock").read_text() == lock, out[-3000:]
    weights = "models/target/gsm8k-cot/model.safetensors"
    assert filecmp.cmp(clone / weights, run.repo / weights, shallow=False)
