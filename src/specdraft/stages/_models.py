"""Paths and config shared by the training, distillation and evaluation stage entry points."""

from __future__ import annotations

from pathlib import Path

from specdraft.io import InputError
from specdraft.prompts import STYLES

BASE = Path("models/base")
CKPT = Path(".specdraft/checkpoints")  # outside DVC outs: resumable
PARTIAL = Path(".specdraft/partial")


def split_name(name: str) -> tuple[str, str]:
    """'<scenario>-<style>' -> (scenario, style); scenarios may contain '_' but not '-'."""
    scenario, _, style = name.rpartition("-")
    if not scenario or style not in STYLES:
        raise InputError(f"expected <scenario>-<style> with style in {list(STYLES)}, got {name!r}")
    return scenario, style


def target_dir(name: str) -> Path:
    return Path("models/target") / name


def draft_dir(name: str) -> Path:
    return Path("models/draft") / name
