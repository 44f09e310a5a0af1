"""Check the project's GPU paths in one go on a GPU machine: `make gpu-check` (PLAN=1: the plan).

    python -m specdraft.tools.gpu_check [--plan] [--json metrics/gpu_check.json] [--workdir .gpu-check]

Why: the project is built and tested on CPU machines. Its GPU paths (CUDA torch, the hf
engine on cuda, vLLM for CUDA, the tests marked `gpu`) run only where a GPU is lent, for
minutes at a time, often on a machine that reaches no network. This is the one prepared
script for such a machine: it runs the checks that need the GPU, each under its own time
budget so that the whole stays inside ten minutes, records each as (stage, device,
seconds, pass/fail, note), prints them as a table, writes them as JSON (`--json`, for
whatever collects the machine's files) and exits 0 only when every check passed, 1
otherwise.

Without a CUDA GPU (`nvidia-smi -L`, then torch.cuda.is_available() in .venv and in this
interpreter) it stops at once, before anything is installed, with exit 2 and a one-line
reason. `--plan` prints the steps on any machine. It needs only the standard library, so
it runs before `make setup-gpu` (with PYTHONPATH=src, as the Makefile calls it).

The steps (`--plan` prints them with their commands and budgets):

1. setup-gpu: `make setup-gpu`, unless .venv already holds a CUDA torch and .venv-vllm
   vLLM for CUDA (it needs the package index: on a machine without network the
   environments must be there already). An environment holding a CPU build is reported,
   not replaced: `make setup-gpu` keeps an existing one (`make clean` first).
2. pipeline-cuda: the local profile's chain of one scenario and style (`evaluate@gsm8k-cot`
   and the stages it needs: training, distillation, the hf engine) at small counts, with
   `dvc exp run` in a scratch copy of this checkout; every evaluation metrics file it
   writes must say device cuda.
3. rehearsal-cuda: the paper profile's rehearsal (specdraft.rehearsal.run: fake Hub and
   Gemini, Qwen stand-ins) through the same chain on vLLM for CUDA; its own checks must
   pass and its metrics say cuda. The whole plan (`make rehearse-paper`, every stage) takes
   longer than the lease.
4. gpu-tests: `pytest -m gpu` under .venv; a test skipped there counts as a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from specdraft.rehearsal.run import clone_worktree

ROOT = Path(__file__).resolve().parents[3]
VENV, VLLM_VENV = ".venv", ".venv-vllm"
DEADLINE_S = 570  # every step together, inside a 10-minute lease
MIN_STEP_S = 20  # a step with less time left than this is not started
SCENARIO = "gsm8k"
TARGET = f"evaluate@{SCENARIO}-cot"  # one scenario and style: the stages it needs run too
# Sizes only, as the end-to-end test's run (tests/conftest.py PIPELINE_OVERRIDES).
SMALL = ["prepare.n_train=8", "prepare.n_test=3", "generation.max_new_tokens=24", "train_target.epochs=1",
         "train_draft.epochs=1"]
# The device the stages must use ({device}: the Context's, cuda). An override whose key conf/
# does not define is left out (Hydra refuses unknown keys) and named in the step's note; the
# metrics are checked anyway.
DEVICE_OVERRIDES = ["runtime.device={device}"]


@dataclass
class Result:
    """One row of the table: a step as it ran."""

    stage: str
    device: str
    seconds: float
    result: str  # pass | fail
    note: str


@dataclass
class Context:
    """What the steps share: the checkout, their scratch folder, the device the metrics
    must name, and the environments found ready (filled by setup-gpu)."""

    root: Path
    workdir: Path
    device: str = "cuda"
    ready: set[str] = field(default_factory=set)  # of VENV, VLLM_VENV


Outcome = tuple[bool, str, str]  # (passed, device, note)


@dataclass(frozen=True)
class Step:
    name: str
    command: str  # as --plan shows it
    budget_s: int
    needs: tuple[str, ...]  # environments that must be ready
    run: Callable[[Context, float], Outcome]


# --- running commands -------------------------------------------------------------------


@dataclass
class Ran:
    returncode: int | None  # None: stopped at its time limit
    output: str  # stdout and stderr together (also in the log file)


def run_command(cmd: list[str], cwd: Path, timeout_s: float, log: Path, env: dict[str, str] | None = None) -> Ran:
    """Run `cmd` in its own process group, output to `log`; at `timeout_s` the group is
    stopped (TERM, then KILL), and whatever of it is left when the command ends is killed,
    so no stage or engine process outlives its step."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
        _stop_group(proc, grace_s=10 if rc is None else 0)
    return Ran(rc, log.read_text(errors="replace"))


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """TERM the process group (when there is a grace period), then KILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL) if grace_s else (signal.SIGKILL,):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the group is gone
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    proc.wait()


def tail(text: str, lines: int = 3, width: int = 300) -> str:
    """The last non-empty lines of `text`, on one line."""
    kept = [x.strip() for x in text.splitlines() if x.strip()][-lines:]
    return " | ".join(kept)[-width:]


def failure_note(ran: Ran, timeout_s: float, log: Path) -> str:
    what = f"timed out after {timeout_s:.0f} s" if ran.returncode is None else f"exit {ran.returncode}"
    return f"{what} (log: {log}): {tail(ran.output)}"


def venv_env(root: Path, src: Path) -> dict[str, str]:
    """This environment with .venv's tools first on PATH and `src` importable."""
    return {**os.environ, "PATH": f"{root / VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(src), "DVC_NO_ANALYTICS": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


# --- is there a GPU ---------------------------------------------------------------------


def torch_probe(python: Path | str, timeout_s: float = 180) -> tuple[str | None, str | None, bool]:
    """(torch version, its CUDA version, cuda available) in that interpreter; version None
    when torch does not import there."""
    code = "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())"
    try:
        p = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None, None, False
    words = p.stdout.split()
    if p.returncode != 0 or len(words) != 3:
        return None, None, False
    return words[0], None if words[1] == "None" else words[1], words[2] == "True"


def nvidia_gpus() -> tuple[list[str] | None, str]:
    """The GPUs `nvidia-smi -L` lists (None: it is not there or failed), and what it said."""
    if shutil.which("nvidia-smi") is None:
        return None, "nvidia-smi not found"
    try:
        p = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None, "nvidia-smi -L timed out"
    gpus = [x.strip() for x in p.stdout.splitlines() if x.startswith("GPU ")]
    if p.returncode != 0 or not gpus:
        return None, f"nvidia-smi -L: exit {p.returncode}, {tail(p.stdout + p.stderr, 1) or 'no GPU listed'}"
    return gpus, f"{len(gpus)} GPU(s)"


def find_gpu(root: Path) -> tuple[list[str] | None, str]:
    """The GPUs of this machine, or None and why not: nvidia-smi first, else torch in .venv
    and in this interpreter (whichever exist; nothing is installed to ask)."""
    gpus, said = nvidia_gpus()
    if gpus is not None:
        return gpus, said
    reasons = [said]
    pythons = [root / VENV / "bin" / "python"] if (root / VENV / "bin" / "python").exists() else []
    if Path(sys.prefix).resolve() != (root / VENV).resolve():
        pythons.append(Path(sys.executable))
    for py in pythons:
        version, _, available = torch_probe(py)
        if available:
            return [f"torch {version} in {py}"], "torch sees a CUDA GPU"
        reasons.append(f"torch.cuda.is_available() is False in {py}" if version else f"no torch in {py}")
    return None, "; ".join(reasons)


# --- the steps ----------------------------------------------------------------------------


@dataclass
class EnvState:
    ready: bool
    detail: str
    cpu_build: bool = False


def env_state(root: Path, venv: str) -> EnvState:
    """Whether `venv` holds a CUDA build of torch that sees the GPU (.venv-vllm: and vLLM)."""
    python = root / venv / "bin" / "python"
    if not python.exists():
        return EnvState(False, f"{venv} missing")
    version, cuda, available = torch_probe(python)
    if version is None:
        return EnvState(False, f"{venv}: torch does not import")
    if cuda is None:
        return EnvState(False, f"{venv} holds a CPU build of torch ({version})", cpu_build=True)
    if not available:
        return EnvState(False, f"{venv}: torch {version} does not see the GPU")
    if venv == VLLM_VENV:
        p = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('vllm'))"],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            return EnvState(False, f"{venv}: no vllm (for CUDA) installed")
        return EnvState(True, f"{venv}: vllm {p.stdout.strip()}, torch {version}")
    return EnvState(True, f"{venv}: torch {version}")


def _states(ctx: Context) -> dict[str, EnvState]:
    states = {v: env_state(ctx.root, v) for v in (VENV, VLLM_VENV)}
    ctx.ready = {v for v, s in states.items() if s.ready}
    return states


def step_setup(ctx: Context, timeout_s: float) -> Outcome:
    states = _states(ctx)
    details = "; ".join(s.detail for s in states.values())
    if all(s.ready for s in states.values()):
        return True, "cuda", f"already set up: {details}"
    if any(s.cpu_build for s in states.values()):
        return False, "-", f"{details}: make setup-gpu keeps an existing environment; `make clean`, then rerun"
    log = ctx.workdir / "setup-gpu.log"
    ran = run_command(["make", "setup-gpu"], ctx.root, timeout_s, log)
    states = _states(ctx)
    details = "; ".join(s.detail for s in states.values())
    if ran.returncode != 0:
        return False, "-", f"{failure_note(ran, timeout_s, log)}; now: {details}"
    return all(s.ready for s in states.values()), "cuda", f"installed: {details}"


def device_overrides(root: Path, device: str) -> tuple[list[str], list[str]]:
    """DEVICE_OVERRIDES for `device`, split into those conf/ defines a key for and those it
    does not."""
    wanted = [o.format(device=device) for o in DEVICE_OVERRIDES]
    try:
        import yaml
    except ImportError:  # cannot tell here: pass them all, Hydra names an unknown key
        return wanted, []
    docs = [yaml.safe_load(f.read_text()) or {} for f in [root / "conf" / "config.yaml",
                                                          *sorted((root / "conf" / "profile").glob("*.yaml"))]]

    def defined(key: str) -> bool:
        for doc in docs:
            node = doc
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                return True
        return False

    kept = [o for o in wanted if defined(o.split("=", 1)[0])]
    return kept, [o for o in wanted if o not in kept]


def eval_devices(metrics_dir: Path, since: float) -> dict[str, str | None]:
    """The `device` of each evaluation metrics file written since `since` (a copy of the
    checkout also holds the committed run's files)."""
    return {f.stem: json.loads(f.read_text()).get("device") for f in sorted(metrics_dir.glob("*.json"))
            if f.stem != "comparisons" and f.stat().st_mtime >= since}


def check_devices(metrics_dir: Path, since: float, want: str) -> Outcome:
    devices = eval_devices(metrics_dir, since)
    seen = ",".join(sorted({str(d) for d in devices.values()})) or "-"
    if not devices:
        return False, seen, f"no evaluation metrics written in {metrics_dir}"
    wrong = sorted(k for k, d in devices.items() if d != want)
    if wrong:
        return False, seen, f"device is not {want} in {', '.join(wrong)}"
    return True, seen, f"{len(devices)} configurations ({', '.join(devices)}) say device {want}"


def _dropped_note(dropped: list[str]) -> str:
    return f"; left out (not in conf/): {', '.join(dropped)}" if dropped else ""


def _flags(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("-S", o)]


def step_pipeline(ctx: Context, timeout_s: float) -> Outcome:
    work = ctx.workdir / "pipeline"
    shutil.rmtree(work, ignore_errors=True)
    repo = clone_worktree(work / "repo", ctx.root)
    kept, dropped = device_overrides(ctx.root, ctx.device)
    cmd = [str(ctx.root / VENV / "bin" / "dvc"), "exp", "run", *_flags([*SMALL, *kept]), TARGET]
    log, since = work / "dvc.log", time.time()
    ran = run_command(cmd, repo, timeout_s, log, {**venv_env(ctx.root, repo / "src"), "HF_HUB_OFFLINE": "1"})
    if ran.returncode != 0:
        return False, "-", failure_note(ran, timeout_s, log) + _dropped_note(dropped)
    ok, device, note = check_devices(repo / "metrics" / "eval" / SCENARIO, since, ctx.device)
    return ok, device, note + _dropped_note(dropped)


def step_rehearsal(ctx: Context, timeout_s: float) -> Outcome:
    work = ctx.workdir / "rehearsal"
    kept, dropped = device_overrides(ctx.root, ctx.device)
    cmd = [str(ctx.root / VENV / "bin" / "python"), "-m", "specdraft.rehearsal.run", "--profile", "paper",
           "--workdir", str(work), *_flags(kept), TARGET]
    log, since = ctx.workdir / "rehearsal.log", time.time()
    ran = run_command(cmd, ctx.root, timeout_s, log, venv_env(ctx.root, ctx.root / "src"))
    summary_file = work / "rehearsal.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    failed = [name for name, ok in summary.get("checks", {}).items() if not ok]
    if ran.returncode != 0 or not summary.get("ok"):
        why = f"rehearsal checks failed: {', '.join(failed)}; " if failed else ""
        return False, "-", why + failure_note(ran, timeout_s, log) + _dropped_note(dropped)
    ok, device, note = check_devices(work / "repo" / "metrics" / "eval" / SCENARIO, since, ctx.device)
    return ok, device, f"{len(summary['checks'])} rehearsal checks pass; {note}{_dropped_note(dropped)}"


def step_gpu_tests(ctx: Context, timeout_s: float) -> Outcome:
    cmd = [str(ctx.root / VENV / "bin" / "python"), "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider"]
    log = ctx.workdir / "gpu-tests.log"
    ran = run_command(cmd, ctx.root, timeout_s, log, venv_env(ctx.root, ctx.root / "src"))
    summary = tail(ran.output, 1)
    if ran.returncode != 0:
        return False, "-", failure_note(ran, timeout_s, log)
    if "skipped" in summary:  # on a GPU machine a skipped GPU test hides a failure
        return False, "-", f"{summary} (log: {log})"
    return True, "cuda", summary


PYTEST_PLAN = f"{VENV}/bin/python -m pytest -m gpu -q -rs"
PLAN_DEVICE = [o.format(device="cuda") for o in DEVICE_OVERRIDES]
STEPS: list[Step] = [
    Step("setup-gpu", f"make setup-gpu  (skipped when {VENV} has CUDA torch and {VLLM_VENV} vLLM for CUDA)",
         150, (), step_setup),
    Step("pipeline-cuda", f"dvc exp run {' '.join(_flags([*SMALL, *PLAN_DEVICE]))} {TARGET}  "
         "(scratch copy; metrics/eval/gsm8k/*.json must say device cuda)", 180, (VENV,), step_pipeline),
    Step("rehearsal-cuda", f"{VENV}/bin/python -m specdraft.rehearsal.run --profile paper "
         f"{' '.join(_flags(PLAN_DEVICE))} {TARGET}  (vLLM for CUDA; rehearsal checks and device cuda)",
         180, (VENV, VLLM_VENV), step_rehearsal),
    Step("gpu-tests", PYTEST_PLAN + "  (a skipped test fails the step)", 60, (VENV,), step_gpu_tests),
]


# --- the run ------------------------------------------------------------------------------


def run_steps(steps: list[Step], ctx: Context, deadline_s: float = DEADLINE_S) -> list[Result]:
    """Each step under min(its budget, the time left); a step whose environments are not
    ready, or with too little time left, is recorded as failed without running."""
    start, results = time.monotonic(), []
    for step in steps:
        left = deadline_s - (time.monotonic() - start)
        missing = [v for v in step.needs if v not in ctx.ready]
        if missing:
            results.append(Result(step.name, "-", 0.0, "fail", f"not run: {', '.join(missing)} not set up"))
        elif left < MIN_STEP_S:
            results.append(Result(step.name, "-", 0.0, "fail", f"not run: {left:.0f} s left of {deadline_s:.0f} s"))
        else:
            print(f"gpu-check: {step.name} (up to {min(step.budget_s, left):.0f} s) ...", flush=True)
            t = time.monotonic()
            try:
                ok, device, note = step.run(ctx, min(step.budget_s, left))
            except Exception as e:  # a broken step is a failed check, not a lost table
                ok, device, note = False, "-", f"{type(e).__name__}: {e}"
            results.append(Result(step.name, device, round(time.monotonic() - t, 1), "pass" if ok else "fail", note))
    return results


def table(results: list[Result]) -> str:
    head = ("stage", "device", "seconds", "result", "note")
    rows = [head, *((r.stage, r.device, f"{r.seconds:.1f}", r.result, r.note) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)), row[4]])
                     for row in rows)


def plan_lines(steps: list[Step]) -> list[str]:
    return [f"{i}. {s.name}: {s.command}  [budget {s.budget_s} s]" for i, s in enumerate(steps, 1)]


def write_report(path: Path, gpus: list[str], results: list[Result], seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"ok": all(r.result == "pass" for r in results), "gpus": gpus, "seconds": round(seconds, 1),
              "deadline_s": DEADLINE_S, "steps": [asdict(r) for r in results]}
    path.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", action="store_true", help="print the steps and exit (any machine)")
    p.add_argument("--json", type=Path, default=ROOT / "metrics" / "gpu_check.json",
                   help="where the table goes as JSON (default metrics/gpu_check.json)")
    p.add_argument("--workdir", type=Path, default=ROOT / ".gpu-check",
                   help="scratch copies and logs, emptied first (default .gpu-check)")
    a = p.parse_args(argv)
    if a.plan:
        print(f"gpu-check plan (within {DEADLINE_S} s in all; a GPU machine only):")
        print("\n".join(plan_lines(STEPS)))
        return 0
    gpus, said = find_gpu(ROOT)
    if gpus is None:
        print(f"gpu-check: no CUDA GPU here ({said}); run it on a GPU machine", file=sys.stderr)
        return 2
    print(f"gpu-check: {'; '.join(gpus)}", flush=True)
    workdir = a.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    t0 = time.monotonic()
    results = run_steps(STEPS, Context(ROOT, workdir))
    print(table(results))
    write_report(a.json, gpus, results, time.monotonic() - t0)
    print(f"gpu-check: table written to {a.json}; logs in {workdir}")
    return 0 if all(r.result == "pass" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
