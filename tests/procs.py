"""Helpers for tests that start processes which may outlive them (DVC's queue workers).

Why: `dvc queue start` returns at once but leaves daemons behind (a forked helper per worker
and the `dvc exp queue-worker` it watches) that inherit its stdout and stderr. Run with
captured output (`subprocess.run(capture_output=True)`), the call returns only when every
holder of the pipe has closed it, so one worker that stays alive after its queue is empty
(as one did on CI, after logging "shutting down due to empty queue") hung a test for 22
minutes. Hence: such commands write to a file, never to a pipe (`start_detached`); every
wait has a deadline and says what was still running when it ran out (`wait_until`); and
whatever is left under the test's folder is stopped when the test ends (`stop_workers`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A `wait_until` deadline passed (an AssertionError: pytest reports a failure, not an error)."""


def start_detached(cmd: Sequence[str], log: Path, *, timeout: float, cwd: Path | str | None = None,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command that may leave daemons behind (`dvc queue start`), its stdout and stderr
    appended to `log`, stdin from /dev/null.

    Waits for the command itself only (at most `timeout` seconds), never for what it leaves
    running: with no pipe there is nothing for a daemon to hold open, so a daemon that never
    exits cannot keep this call from returning. The daemons inherit the file and write to it.
    Raises WaitTimeout (with the log's tail) if the command itself outlives `timeout`.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            return subprocess.run(list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:  # run() has killed the command by now
            raise WaitTimeout(f"{' '.join(map(str, cmd))} still running after {timeout:.0f}s (killed); "
                              f"its output:\n{tail(log)}") from None


def tail(path: Path, n: int = 3000) -> str:
    """The last n characters of a text file ('' if it is missing)."""
    try:
        return path.read_text(errors="replace")[-n:]
    except FileNotFoundError:
        return ""


def wait_until(poll: Callable[[], T], done: Callable[[T], Any] = bool, *, timeout: float, what: str,
               interval: float = 1.0, describe: Callable[[T], str] = str) -> T:
    """Call `poll()` until `done(value)` holds; return that value.

    `poll` runs at least once (so the caller always has a value, never an unbound name) and
    again every `interval` seconds until `timeout` seconds have passed; then WaitTimeout says
    what was awaited (`what`) and what the last poll saw (`describe(value)`: e.g. the queue
    status, or the processes still running). The deadline is checked between polls, so `poll`
    must be bounded itself (a subprocess with a timeout, never a bare read of a pipe).
    """
    start = time.monotonic()
    while True:
        value = poll()
        if done(value):
            return value
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}; still:\n{describe(value)}")
        time.sleep(min(interval, left))


def is_dvc_queue(argv: Sequence[str]) -> bool:
    """A DVC queue process: `dvc exp queue-worker ...`, or the helper that `dvc queue start`
    forks to watch a worker (its command line is that of `dvc queue start`)."""
    return any(Path(a).name == "dvc" for a in argv) and ("queue-worker" in argv or "queue" in argv)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def processes_under(folder: Path | str, match: Callable[[Sequence[str]], bool] = is_dvc_queue) -> list[psutil.Process]:
    """Live processes whose working directory is `folder` or inside it and whose command line
    `match`es: the queue workers of the repository in `folder` and none of another one. The
    test process and its ancestors are never included; processes we may not inspect are skipped."""
    folder = os.path.realpath(folder)
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for p in psutil.process_iter():
        if p.pid in me:
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE or not _inside(p.cwd(), folder) or not match(p.cmdline()):
                continue
        except (psutil.Error, OSError):  # gone meanwhile, or not ours to look at
            continue
        found.append(p)
    return found


def describe(procs: Sequence[psutil.Process]) -> str:
    """One line per process: pid and command line (for failure messages)."""
    lines = []
    for p in procs:
        try:
            lines.append(f"pid {p.pid}: {' '.join(p.cmdline())}")
        except psutil.Error:
            lines.append(f"pid {p.pid}: (gone)")
    return "\n".join(lines) or "(none)"


def _dead(p: psutil.Process) -> bool:
    """Gone, or a zombie: dead, waiting for its adoptive parent to reap it (not every
    container's init does so at once)."""
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stop_workers(folder: Path | str, match: Callable[[Sequence[str]], bool] = is_dvc_queue, *, wait: float = 0.0,
                 grace: float = 5.0) -> list[str]:
    """Stop what `processes_under(folder, match)` finds, with every process under them (a
    worker's stage processes): first up to `wait` seconds for them to exit by themselves
    (after `dvc queue stop`, say), then SIGTERM, then SIGKILL after `grace` seconds.

    Meant for a `finally` or a fixture finalizer, so that a test leaves nothing running, pass or
    fail. Returns the processes it had to signal (pid and command line), empty if none; raises
    WaitTimeout if any is still alive after SIGKILL.
    """
    deadline = time.monotonic() + wait
    procs = processes_under(folder, match)
    while procs and time.monotonic() < deadline:
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        procs = processes_under(folder, match)
    if not procs:
        return []
    tree: dict[int, psutil.Process] = {}
    for p in procs:
        tree[p.pid] = p
        try:
            tree.update((c.pid, c) for c in p.children(recursive=True))
        except psutil.Error:
            pass
    signalled = describe(list(tree.values())).splitlines()
    for sig in ("terminate", "kill"):
        for p in tree.values():
            try:
                getattr(p, sig)()
            except psutil.Error:
                pass
        t = time.monotonic()
        while not all(_dead(p) for p in tree.values()) and time.monotonic() - t < grace:
            time.sleep(0.05)
        if all(_dead(p) for p in tree.values()):
            return signalled
    alive = [p for p in tree.values() if not _dead(p)]
    raise WaitTimeout(f"still alive after SIGKILL:\n{describe(alive)}")
