"""What every stage entry point shares: argument parsing and clean error reporting."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

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
