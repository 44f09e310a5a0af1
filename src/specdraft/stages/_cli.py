"""What every stage entry point shares: argument parsing and clean error reporting."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from specdraft.io import InputError, StageError


def run(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser) -> None:
    """Parse args, run `main`, and turn expected errors into a one-line message and exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = parser.parse_args()
    try:
        main(args)
    except (InputError, StageError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


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
