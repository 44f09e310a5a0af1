"""What every stage entry point shares: argument parsing, clean error reporting, and the
stage's own wall time as a metric (`--times`).

Why time is a metric: a change that makes the run slower is a regression like a lost
point of accuracy, and it is only seen when `dvc metrics diff` / `make diff` can show it.
Each stage writes its wall time and the machine it ran on to the file dvc.yaml names
(metrics/time/...); the report tabulates them by stage family.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from specdraft.io import InputError, StageError, write_json


def run(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser) -> None:
    """Parse args, run `main`, and turn expected errors into a one-line message and exit 2;
    on success, write the stage's wall time to --times when given."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    parser.add_argument("--times", type=Path, default=None,
                        help="output: this stage's wall time and the machine it ran on (metrics JSON)")
    args = parser.parse_args()
    try:
        main(args)
    except (InputError, StageError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.times is not None and os.environ.get("RANK", "0") == "0":  # one record per stage, not per rank
        write_json(args.times, stage_time())


def process_wall_s() -> float:
    """Seconds since this process started: interpreter start-up and imports included, and
    the part before an engine re-run (rerun_under keeps the process, so its start time)."""
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except (ImportError, OSError):  # psutil is a dependency of dvc; without it, since this import
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none: macOS)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_name() -> str:
    """The CPU's model name (`lscpu`'s), with its family and model where the name alone is
    vague: two "AMD EPYC" machines of different generations time differently."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info and "model" in info:
        name += f" (family {info['cpu family']}, model {info['model']})"
    return name


def stage_time() -> dict[str, Any]:
    """The stage's wall time with what it ran on: the CPU (name and core count), torch's
    thread count and the GPU when the stage used one. A timing without its machine cannot
    be compared (the same commit runs 1.3x slower on one 2-core CPU than on another)."""
    record: dict[str, Any] = {"wall_s": round(process_wall_s(), 1), "cpu": cpu_name(), "cores": os.cpu_count(),
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    torch = sys.modules.get("torch")  # only when the stage imported it: never import torch for this
    if torch is not None:
        record["threads"] = torch.get_num_threads()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            record["gpu"] = torch.cuda.get_device_name()
    return record


def rerun_under(python: str) -> NoReturn:
    """Replace this stage process by the same stage under another interpreter (the one
    its generation engine needs: specdraft.generate.engine.engine_python), with the same
    arguments, folder and this checkout's code first on its path."""
    module = sys.modules["__main__"].__spec__.name  # stages run as `python -m specdraft.stages.<stage>`
    src = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "SPECDRAFT_RERUN_FOR_ENGINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    logging.getLogger("stage").info("re-running %s under %s (its generation engine is installed there)", module,
                                    python)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(python, [python, "-m", module, *sys.argv[1:]], env)
