"""What the training, distillation and evaluation stage entry points share: their
scratch folders (outside DVC's outputs, which DVC deletes before a stage runs, so a
killed stage resumes from them) and the arguments that name a target and its data.

Pipeline paths themselves come from dvc.yaml, through each stage's command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from specdraft.prompts import STYLES

CKPT = Path(".specdraft/checkpoints")
PARTIAL = Path(".specdraft/partial")


def add_name_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", required=True)
    p.add_argument("--style", required=True, choices=STYLES)


def run_name(args: argparse.Namespace) -> str:
    """A name for this run's scratch files: <scenario>-<style>."""
    return f"{args.scenario}-{args.style}"
