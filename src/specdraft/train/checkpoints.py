"""Checkpoints of an interrupted training: when one may be resumed, and its curves cut back.

Checkpoints live outside DVC's outputs (DVC deletes outputs before a stage runs), so an
interrupted training resumes from its last checkpoint when the stage runs again, but only
when the checkpoint was made with the same settings, data, base model (and KD teacher)
and number of processes: a fingerprint written beside the checkpoints (`RUN_FILE`). Models
are identified by their content (specdraft.provenance.content_hash), not their file
sizes, which a retrain of the same architecture shares.

The training curves (dvclive, one row per optimizer step, `step` = the trainer's global
step) run ahead of the last checkpoint by however many steps were logged before the
crash; on resume they are cut back to the checkpoint's step (`cut_back_curves`), so a
resumed run logs each step once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from specdraft.provenance import content_hash

log = logging.getLogger("sft")

RUN_FILE = "specdraft-run.json"  # beside the checkpoints: what they were trained with


def run_fingerprint(cfg: Any, examples: list[dict], model_dir: str | Path, world_size: int,
                    teacher_dir: str | Path | None = None, extra: dict | None = None) -> dict:
    """What a checkpoint must have been made with to be resumed: the settings that change
    training (not how often it logs or saves, nor the thread count), the training data, the
    base model's and the KD teacher's content, and the number of processes (which shards
    the data)."""
    from specdraft.config import untraced

    with untraced():  # a fingerprint looks at every setting; that is not a use of them
        settings = {k: v for k, v in dataclasses.asdict(cfg).items()
                    if k not in ("logging_steps", "save_steps", "threads", "launcher")}
    if extra:
        settings.update(extra)
    return {"settings": settings, "world_size": world_size, "model": content_hash(model_dir),
            "teacher": None if teacher_dir is None else content_hash(teacher_dir),
            "data": hashlib.sha256(json.dumps(examples, sort_keys=True).encode()).hexdigest()}


def resume_point(ckpt_dir: Path, fingerprint: dict) -> str | None:
    """The last checkpoint in ckpt_dir if it was made with `fingerprint`, else None; a
    checkpoint made otherwise is named with what changed (the caller removes it)."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last is None:
        return None
    f = ckpt_dir / RUN_FILE
    saved = json.loads(f.read_text()) if f.is_file() else {}
    if saved == fingerprint:
        return last
    changed = sorted(k for k in {**saved.get("settings", {}), **fingerprint["settings"]}
                     if saved.get("settings", {}).get(k) != fingerprint["settings"].get(k))
    changed += [k for k in ("world_size", "model", "teacher", "data") if saved.get(k) != fingerprint[k]]
    log.warning("not resuming from %s: it was made with other %s; training starts over", last,
                ", ".join(changed) or "settings (no record)")
    return None


def checkpoint_step(checkpoint: str | Path) -> int:
    """The global step a checkpoint was saved at (its trainer_state.json)."""
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])


def _step_of(row: str, col: int, width: int) -> float:
    """A row's step; a torn row (the crash cut its write) counts as past every step."""
    cells = row.split("\t")
    try:
        return int(cells[col]) if len(cells) == width and cells[-1] != "" else float("inf")
    except ValueError:
        return float("inf")


def cut_back_curves(live_dir: Path, step: int) -> int:
    """Drop every row logged after `step` (and any row torn by the crash) from the dvclive
    curves under live_dir (the .tsv files of plots/metrics, whose `step` column is the
    trainer's global step), atomically per file; returns how many rows were dropped."""
    from specdraft.io import write_text

    dropped = 0
    for f in sorted((live_dir / "plots" / "metrics").rglob("*.tsv")):
        header, *rows = f.read_text().splitlines()
        col = header.split("\t").index("step")
        kept = [r for r in rows if _step_of(r, col, len(header.split("\t"))) <= step]
        if len(kept) != len(rows):
            dropped += len(rows) - len(kept)
            write_text(f, "\n".join([header, *kept]) + "\n")
    if dropped:
        log.info("resume: %d curve rows logged after step %d dropped from %s", dropped, step, live_dir)
    return dropped
