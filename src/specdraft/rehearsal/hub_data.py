"""The paper profiles' datasets in the Hub's own layout, for the rehearsal's fake Hub.

openai/gsm8k: config `main`, fields question/answer, `main/{train,test}-00000-of-00001.parquet`.
EleutherAI/hendrycks_math: one config per subject (algebra, intermediate_algebra, ...),
fields problem/level/type/solution (no id field), `<subject>/{train,test}-00000-of-00001.parquet`.
Each repository's README.md carries the dataset card's YAML header that `datasets` reads
for its configs and splits, as on the Hub.

The rows are the real GSM8K and MATH files of ../shared/data when that folder exists, else
the project's own sample problems (data/sample, the same schemas), so the rehearsal runs
on any machine and says which it served.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

GSM8K_FIELDS = ("question", "answer")
MATH_FIELDS = ("problem", "level", "type", "solution")


def subject(math_type: str) -> str:
    """MATH's `type` as its hub config name: 'Counting & Probability' -> 'counting_and_probability'."""
    return re.sub(r"\W+", "_", math_type.replace("&", "and")).strip("_").lower()


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_parquet(rows: list[dict[str, Any]], fields: tuple[str, ...], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({f: [str(r[f]) for r in rows] for f in fields}), path)


def _card(configs: dict[str, dict[str, int]], fields: tuple[str, ...]) -> str:
    """The card's YAML header: features, split sizes (which `datasets` verifies) and data files."""
    import yaml

    card = {"license": "mit",
            "dataset_info": [{"config_name": c, "features": [{"name": f, "dtype": "string"} for f in fields],
                              "splits": [{"name": s, "num_examples": n} for s, n in splits.items()]}
                             for c, splits in configs.items()],
            "configs": [{"config_name": c, "data_files": [{"split": s, "path": f"{c}/{s}-*"} for s in splits]}
                        for c, splits in configs.items()]}
    return f"---\n{yaml.safe_dump(card, sort_keys=False)}---\n"


def write_gsm8k(source: Path, repo: Path) -> int:
    """source/gsm8k/{train,test}.jsonl -> repo in openai/gsm8k's layout; returns rows written."""
    sizes = {}
    for split in ("train", "test"):
        rows = _read(source / "gsm8k" / f"{split}.jsonl")
        _write_parquet(rows, GSM8K_FIELDS, repo / "main" / f"{split}-00000-of-00001.parquet")
        sizes[split] = len(rows)
    (repo / "README.md").write_text(_card({"main": sizes}, GSM8K_FIELDS), encoding="utf-8")
    return sum(sizes.values())


def write_math(source: Path, repo: Path) -> int:
    """source/math/{train,test}.jsonl -> repo in EleutherAI/hendrycks_math's layout, split by
    subject; the files' extra fields (unique_id) are not on the hub and are dropped."""
    by_subject: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for split in ("train", "test"):
        for r in _read(source / "math" / f"{split}.jsonl"):
            by_subject.setdefault(subject(r["type"]), {"train": [], "test": []})[split].append(r)
    for sub, splits in sorted(by_subject.items()):
        for split, rows in splits.items():
            _write_parquet(rows, MATH_FIELDS, repo / sub / f"{split}-00000-of-00001.parquet")
    sizes = {sub: {split: len(rows) for split, rows in splits.items()} for sub, splits in sorted(by_subject.items())}
    (repo / "README.md").write_text(_card(sizes, MATH_FIELDS), encoding="utf-8")
    return sum(sum(s.values()) for s in sizes.values())


def gold_index(source: Path) -> dict[str, dict[str, str]]:
    """Question text -> {solution, format}: what the rehearsal's Gemini stand-in answers from."""
    out = {}
    for split in ("train", "test"):
        for r in _read(source / "gsm8k" / f"{split}.jsonl"):
            out[r["question"].strip()] = {"solution": r["answer"], "format": "gsm8k"}
        for r in _read(source / "math" / f"{split}.jsonl"):
            out[r["problem"].strip()] = {"solution": r["solution"], "format": "math"}
    return out
