"""Resumable generation loops (distillation, evaluation).

Rows are appended to a partial file outside DVC's outputs (DVC deletes outputs before a
stage runs) as soon as each is computed; a rerun after a crash skips the ids already
there. The partial file starts with a fingerprint of everything that determines the rows
(model contents, prompts, generation settings, the kernel path), so a stale partial from other settings is
discarded rather than mixed in. The finished rows are written to the real output
atomically and the partial file is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from specdraft.io import JsonlAppender, read_jsonl

log = logging.getLogger("resume")


def model_fingerprint(*dirs: str | Path | None) -> list[str]:
    """Content hashes of the model folders (specdraft.provenance.content_hash): changes
    when a model's weights change, even to the same sizes, and not when a checkout only
    touches their modification times."""
    from specdraft.provenance import content_hash

    return [content_hash(d) for d in dirs if d is not None]


def fingerprint(obj: Any) -> str:
    """Whether partial results were computed with these settings. It looks at every field
    of the settings given, which is not a use of them (specdraft.config.untraced)."""
    from specdraft.config import untraced

    with untraced():
        return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Resumable:
    """Rows already computed (by id) and an appender for new ones."""

    def __init__(self, partial: str | Path, fp: str):
        self.path = Path(partial)
        self.fp = fp
        self.done: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            rows = read_jsonl(self.path, tolerate_partial_last_line=True)
            if rows and rows[0].get("_fingerprint") == fp:
                self.done = {r["id"]: r for r in rows[1:] if "id" in r}
                log.info("resuming: %d rows already computed in %s", len(self.done), self.path)
            else:
                log.info("discarding %s (other settings)", self.path)
                self.path.unlink()
        fresh = not self.path.exists()
        self._app = JsonlAppender(self.path)
        if fresh:
            self._app.write({"_fingerprint": fp})

    def add(self, row: dict[str, Any]) -> None:
        self._app.write(row)
        self.done[row["id"]] = row

    def close(self, remove: bool = True) -> None:
        self._app.close()
        if remove and self.path.exists():
            os.unlink(self.path)
