"""Small, strict file helpers shared by every stage.

Why this module exists: a pipeline that runs for hours must never leave a half-written
file behind (DVC would cache it, the next stage would read it), and bad input must be
reported with the file, line and field so that a researcher can fix it in one look.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad input data or settings; the message names the file, line and field."""


class StageError(RuntimeError):
    """A stage cannot go on (missing key, cost guard, failed job); its message says what to do."""


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of `path` and rename it over `path` on success.

    The rename is atomic on POSIX, so readers see either the old file or the new one,
    never a partial one; on an exception the temporary file is removed and the old
    file is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling folder to fill; renamed over `path` on success, removed on an
    exception (the old folder is then left as it was). For model folders, which a reader
    must never see half-written."""
    import shutil

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically, pretty-printed with sorted keys so diffs stay readable."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as JSON lines atomically; returns the number of rows written."""
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(
    path: str | os.PathLike, required: Sequence[str] = (), *, tolerate_partial_last_line: bool = False,
    text_fields: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Read a UTF-8 JSONL file; every row must be an object holding the `required` fields,
    and each of `text_fields` must be a non-empty string.

    `tolerate_partial_last_line` is for append-only resume files: a crash can cut the
    last line, which is then dropped (and regenerated) instead of failing the run.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    rows: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        raw_lines = fh.readlines()
    lines = []
    for lineno, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise InputError(f"{path}:{lineno}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if tolerate_partial_last_line and lineno == len(lines) and not line.endswith("\n"):
                break
            raise InputError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        missing = [f for f in required if f not in row]
        if missing:
            raise InputError(f"{path}:{lineno}: missing field {missing[0]!r} (required: {list(required)})")
        for f in text_fields:
            if not isinstance(row.get(f), str) or not row[f].strip():
                raise InputError(f"{path}:{lineno}: field {f!r} must be a non-empty string, got {row.get(f)!r}")
        rows.append(row)
    return rows


class JsonlAppender:
    """Append-only JSONL writer for resumable loops.

    Each row is flushed and fsynced as soon as it is computed, so a crash loses at most
    the row in flight; `read_jsonl(..., tolerate_partial_last_line=True)` reads it back.
    The caller renames the finished file into place (see `finalize`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            # Drop a partial last line left by a crash so appends start on a fresh line.
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                with self.path.open("r+b") as fh:
                    fh.truncate(cut)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
