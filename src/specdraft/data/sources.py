"""Where the raw problems come from: the hub, a folder of JSONL files, or the shipped sample.

All three return rows in the datasets' original schemas (GSM8K: question/answer; MATH:
problem/level/type/solution), so the rest of the pipeline never knows which source ran.
`data.source` selects one:

- `hub`: datasets.load_dataset(<hub_path>, <config>, split=...), ids and revision in params.
- `dir:PATH`: PATH/<dataset>/<split>.jsonl (README, "Data and scenarios").
- `sample`: the same layout under data/sample/ (written by specdraft.data.sample).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from specdraft.answers import GOLD_FORMATS
from specdraft.config import setting
from specdraft.io import InputError, read_jsonl


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """One source dataset: where it lives and which fields hold what."""

    hub_path: str
    question_field: str
    solution_field: str
    answer_format: str = setting(choices=GOLD_FORMATS)  # gsm8k ('#### N') or math (\boxed{})
    hub_configs: list[str] = dataclasses.field(default_factory=list)
    hub_revision: str | None = None
    id_field: str | None = None  # a stable id in the data itself (MATH: unique_id)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Section `data` of params.yaml."""

    source: str = setting(pattern=r"hub|sample|dir:.+")  # hub, sample or dir:PATH
    sample_dir: str = "data/sample"
    datasets: dict[str, DatasetConfig] = dataclasses.field(default_factory=dict)
    # A split whose questions only the drafts see (distill.extra_questions), after the rest
    # of the training pool, read where a file source has it: the sample generator's `extra`
    # on `local`; a real copy of the datasets has none (the rest of its pool is thousands).
    extra_split: str | None = None


@dataclasses.dataclass(frozen=True)
class RawRow:
    """A raw record and its stable id (source split + index, or the data's own id)."""

    id: str
    split: str
    record: dict[str, Any]


def resolve_dir(source: str, sample_dir: str) -> Path | None:
    """The folder a file-based source reads, or None for the hub (`source` is checked where
    params become settings: DataConfig)."""
    if source == "hub":
        return None
    return Path(sample_dir) if source == "sample" else Path(source.removeprefix("dir:"))


def has_split(name: str, split: str, source: str, sample_dir: str) -> bool:
    """Whether a file source holds `split` of dataset `name` (the hub: assumed so)."""
    folder = resolve_dir(source, sample_dir)
    return folder is None or (folder / name / f"{split}.jsonl").exists()


def load_split(
    name: str, ds: DatasetConfig, split: str, source: str, sample_dir: str,
    hub_configs: list[str] | None = None,
) -> list[RawRow]:
    """Every row of one split of one dataset, with stable ids."""
    folder = resolve_dir(source, sample_dir)
    required = [ds.question_field, ds.solution_field]
    if folder is not None:
        base = folder / name
        if not base.is_dir():
            raise InputError(f"data.source={source!r}: folder {base} not found")
        valid = sorted(p.stem for p in base.glob("*.jsonl"))
        path = base / f"{split}.jsonl"
        if not path.exists():
            raise InputError(f"{base}: unknown split {split!r}; valid: {valid}")
        recs = read_jsonl(path, required, text_fields=required)
        return [RawRow(_row_id(name, None, split, i, r, ds, f"{path}:{i + 1}"), split, r) for i, r in enumerate(recs)]
    return _load_hub(name, ds, split, hub_configs or ds.hub_configs)


def _row_id(name: str, config: str | None, split: str, i: int, rec: dict[str, Any], ds: DatasetConfig,
            where: str) -> str:
    """The data's own id (`id_field`), else <dataset>[/<config>]/<split>/<index>: stable for a
    pinned revision or a fixed file. A named id field that a row lacks is an error, not a
    silent fall-back to the index."""
    if ds.id_field:
        if not rec.get(ds.id_field):
            raise InputError(f"{where}: no field {ds.id_field!r} (data.datasets.{name}.id_field; set it to null for "
                             f"data without one); the row has {sorted(rec)}")
        return f"{name}/{rec[ds.id_field]}"
    return "/".join(p for p in (name, config, split, str(i)) if p)


def _load_hub(name: str, ds: DatasetConfig, split: str, configs: list[str]) -> list[RawRow]:
    import datasets  # imported here: the sample and dir sources never need it

    rows: list[RawRow] = []
    configs = configs or [None]  # type: ignore[list-item]
    for config in configs:
        try:
            d = datasets.load_dataset(ds.hub_path, config, split=split, revision=ds.hub_revision)
        except ValueError as e:  # datasets raises ValueError for an unknown split
            raise InputError(f"hub {ds.hub_path} ({config}): {e}") from None
        missing = [f for f in (ds.question_field, ds.solution_field) if f not in d.column_names]
        if missing:
            raise InputError(f"hub {ds.hub_path} ({config}) split {split}: missing field {missing[0]!r}")
        tag = config if len(configs) > 1 else None
        for i, r in enumerate(d):
            for f in (ds.question_field, ds.solution_field):
                if not isinstance(r[f], str) or not r[f].strip():
                    raise InputError(f"hub {ds.hub_path} ({config}) split {split} row {i}: field {f!r} must be a "
                                     f"non-empty string, got {r[f]!r}")
            rows.append(RawRow(_row_id(name, tag, split, i, dict(r), ds,
                                       f"hub {ds.hub_path} ({config}@{ds.hub_revision or 'latest'}) split {split} row {i}"),
                               split, dict(r)))
    return rows
