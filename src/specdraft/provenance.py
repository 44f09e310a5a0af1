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
