"""Where a model folder came from: `specdraft.json` beside its weights.

base_models writes the spec it loaded (`hf:Qwen/Qwen2.5-14B-Instruct`, its pinned revision,
the dtype); training writes its base's record and the method. Evaluation metrics name the
model they measured from it, however many stages lie between.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROVENANCE = "specdraft.json"


def write_provenance(folder: str | Path, record: dict[str, Any]) -> None:
    (Path(folder) / PROVENANCE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_provenance(folder: str | Path) -> dict[str, Any]:
    f = Path(folder) / PROVENANCE
    return json.loads(f.read_text()) if f.is_file() else {}


def model_spec(folder: str | Path) -> str | None:
    """The spec of the base model a folder descends from (`hf:Qwen/...`, `gguf:...`, or
    `self:<N> layers of <spec>`), following trained models back to their base."""
    p = read_provenance(folder)
    while "base" in p:
        p = p["base"]
    return p.get("spec")


HASH_CACHE = Path(".specdraft/hashes.json")  # scratch: outside DVC's outputs, per checkout


def content_hash(folder: str | Path, cache: Path | None = HASH_CACHE) -> str:
    """sha256 over a model folder's file names and bytes (weights, config, `specdraft.json`).

    Why content and not sizes: a retrain of the same architecture (another KD teacher, a
    re-pinned base of the same shape) has files of the same sizes, and a resume fingerprint
    built from sizes would accept a checkpoint made against other weights. Hashing a 14B
    model's 28 GB takes tens of seconds, so each file's digest is remembered in `cache`
    (keyed by path, size, inode and mtime) and computed again only when the file changes."""
    import hashlib

    folder = Path(folder)
    known: dict[str, Any] = {}
    if cache is not None and cache.is_file():
        try:
            known = json.loads(cache.read_text())
        except ValueError:  # a torn cache costs a re-hash, nothing else
            known = {}
    h = hashlib.sha256()
    changed = False
    for p in sorted(x for x in folder.rglob("*") if x.is_file()):
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_ino}|{st.st_mtime_ns}"
        digest = known.get(key)
        if digest is None:
            with open(p, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
            known[key] = digest
            changed = True
        h.update(f"{p.relative_to(folder).as_posix()}\0{digest}\n".encode())
    if cache is not None and changed:
        from specdraft.io import write_json

        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache, known)
    return h.hexdigest()
