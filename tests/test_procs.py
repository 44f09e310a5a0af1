"""tests/procs.py: a queue worker that never exits cannot hang a test (fast, no DVC).

The pretend `dvc queue start` below does what the real one does on POSIX: it starts a
worker in a session of its own that inherits its stdout and stderr, and returns at once.
The worker (`python -c <sleep 600> dvc exp queue-worker`: its command line is what
procs.is_dvc_queue looks for) never exits, like the one that hung CI for 22 minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from procs import WaitTimeout, describe, processes_under, start_detached, stop_workers, wait_until

WORKER = "import time; time.sleep(600)"
QUEUE_START = f"""
import subprocess, sys
w = subprocess.Popen([sys.executable, "-c", {WORKER!r}, "dvc", "exp", "queue-worker"], start_new_session=True)
print("worker", w.pid, flush=True)
"""


@pytest.fixture
def repo(tmp_path):
    """A folder standing for a test's repository; whatever runs in it is stopped at the end."""
    folder = tmp_path / "repo"
    folder.mkdir()
    yield folder
    stop_workers(folder)


def _worker_pids(text: str) -> list[int]:
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("worker ")]


@pytest.mark.timeout(60)
def test_a_worker_that_never_exits_cannot_hang_a_test(repo, tmp_path):
    # the trap is real: captured output waits for the worker, which holds the pipe
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", QUEUE_START], cwd=repo, capture_output=True, timeout=3)

    # output to a file: the call returns as soon as the command does, the worker still running
    log = tmp_path / "queue-start.log"
    t = time.monotonic()
    done = start_detached([sys.executable, "-c", QUEUE_START], log, timeout=30, cwd=repo)
    assert done.returncode == 0 and time.monotonic() - t < 15, log.read_text()
    (pid,) = _worker_pids(log.read_text())
    assert psutil.Process(pid).is_running()
    workers = processes_under(repo)
    assert pid in {p.pid for p in workers} and len(workers) == 2, describe(workers)  # with the trap's one

    # waiting for the workers to go: a timeout within seconds, naming what still runs
    t = time.monotonic()
    with pytest.raises(WaitTimeout) as err:
        wait_until(lambda: processes_under(repo), lambda ps: not ps, timeout=3, interval=0.2,
                   what="queue workers to exit", describe=describe)
    elapsed = time.monotonic() - t
    assert 3 <= elapsed < 15, elapsed
    assert f"pid {pid}: " in str(err.value) and "queue-worker" in str(err.value), err.value

    # the cleanup stops both (SIGTERM is enough for a sleeping python) and nothing is left
    stopped = stop_workers(repo)
    assert len(stopped) == 2 and any(s.startswith(f"pid {pid}: ") for s in stopped), stopped
    assert processes_under(repo) == []
    try:
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, not yet reaped by init
    except psutil.NoSuchProcess:
        pass


@pytest.mark.timeout(60)
def test_cleanup_leaves_other_folders_and_other_commands_alone(repo, tmp_path):
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    cmd = [sys.executable, "-c", WORKER, "dvc", "exp", "queue-worker"]
    procs = [subprocess.Popen(cmd, cwd=elsewhere),  # a worker of another repository
             subprocess.Popen([sys.executable, "-c", WORKER, "not-a-worker"], cwd=repo)]
    try:
        assert stop_workers(repo) == []
        assert all(p.poll() is None for p in procs)
        assert [p.pid for p in processes_under(elsewhere)] == [procs[0].pid]
        assert os.getpid() not in {p.pid for p in processes_under(os.sep, lambda argv: True)}  # never itself
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)


def test_wait_until_polls_at_least_once_and_returns_what_it_saw():
    calls = []

    def poll():
        calls.append(1)
        return len(calls)

    assert wait_until(poll, lambda n: n >= 3, timeout=10, interval=0.01, what="three polls") == 3
    calls.clear()
    with pytest.raises(WaitTimeout, match="waiting for nothing; still:\n1"):
        wait_until(poll, lambda n: False, timeout=0, what="nothing")
    assert calls == [1]  # a zero timeout still polls once: the caller always has a value
