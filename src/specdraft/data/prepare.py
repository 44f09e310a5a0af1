"""Select the test and training questions of one scenario, leak-free.

Order matters: the test set is drawn first from the evaluation split, then the training
rows from the pool (the `pool_splits`) minus every question that is in the test set,
compared on normalised text, so no question can be trained on and tested on even when
the pool includes the rest of the test split (MATH Intermediate Algebra L3-4 has only
641 training rows, fewer than the paper's 1000). What the pool has left after training
and validation, then the data's extra split, are the `extra` questions: the drafts may
learn the target's answers to them (distill.extra_questions), the target never sees them.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Any

from specdraft.answers import extract_gold
from specdraft.config import setting
from specdraft.data.sources import DataConfig, RawRow, has_split, load_split
from specdraft.io import InputError


@dataclasses.dataclass(frozen=True)
class ScenarioConfig:
    """A scenario is data only: a dataset, its splits and filters on raw fields."""

    dataset: str
    test_split: str
    pool_splits: list[str]
    filters: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    hub_configs: list[str] = dataclasses.field(default_factory=list)  # e.g. MATH subjects


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    n_train: int = setting(ge=1)
    n_test: int = setting(ge=1)
    # Validation questions for every tuned choice (the draft length k): drawn from the pool
    # after the training questions, so adding them leaves the training set unchanged, and
    # never from the test split, so no test question picks a setting.
    n_val: int = setting(0, ge=0)
    seed: int = 0
    # Fewer rows than asked for is an error unless allowed (then a warning in the metrics
    # and the report): a silent shortfall changes what the experiment measures.
    allow_shortfall: bool = False


@dataclasses.dataclass
class Prepared:
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    stats: dict[str, Any]
    val: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    extra: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def normalize_question(q: str) -> str:
    """Text used to detect the same question twice: case and spacing folded.

    Symbols are kept: in MATH, "x - (5)" and "x - (-5)" are different questions.
    """
    return re.sub(r"\s+", " ", q.lower()).strip()


def _apply_filters(rows: list[RawRow], filters: dict[str, list[str]], where: str) -> list[RawRow]:
    if not rows:
        return rows
    for field, allowed in filters.items():
        present = sorted({str(r.record.get(field)) for r in rows if field in r.record})
        if not present:
            raise InputError(f"{where}: filter field {field!r} is not in the data")
        unknown = [v for v in allowed if str(v) not in present]
        if unknown:
            raise InputError(f"{where}: unknown {field} {unknown[0]!r}; valid: {present}")
        keep = {str(v) for v in allowed}
        rows = [r for r in rows if str(r.record.get(field)) in keep]
    return rows


# The fields that name a question's kind, first found wins: the shipped sample data's
# generator (`template`), MATH's difficulty (`level`; a scenario is one subject). GSM8K has
# neither: its questions form one stratum.
STRATUM_FIELDS = ("template", "level")


def stratum(record: dict[str, Any]) -> str | None:
    """The question's kind, by which evaluation draws its timed questions (one of each kind
    at least): the first of STRATUM_FIELDS the record has, or None."""
    return next((str(record[f]) for f in STRATUM_FIELDS if record.get(f) not in (None, "")), None)


def prepare(name: str, sc: ScenarioConfig, data: DataConfig, cfg: PrepareConfig) -> Prepared:
    if sc.dataset not in data.datasets:
        raise InputError(f"scenarios.{name}.dataset: unknown dataset {sc.dataset!r}; valid: {sorted(data.datasets)}")
    ds = data.datasets[sc.dataset]
    where = f"scenarios.{name}"

    def load(split: str) -> list[RawRow]:
        rows = load_split(sc.dataset, ds, split, data.source, data.sample_dir, sc.hub_configs)
        return _apply_filters(rows, sc.filters, where)

    def to_row(r: RawRow) -> dict[str, Any] | None:
        sol = str(r.record[ds.solution_field])
        ans = extract_gold(sol, ds.answer_format)
        if ans is None:
            return None
        return {"id": r.id, "scenario": name, "source_split": r.split,
                "question": str(r.record[ds.question_field]).strip(), "solution": sol, "answer": ans,
                "format": ds.answer_format, "stratum": stratum(r.record)}

    stats: dict[str, Any] = {"source": data.source, "dataset": sc.dataset}
    test_rows = load(sc.test_split)
    test_all = [x for x in map(to_row, test_rows) if x]
    stats["test_no_gold"] = len(test_rows) - len(test_all)
    rng = random.Random(cfg.seed)
    test_all = _dedupe(test_all)
    rng.shuffle(test_all)
    test = test_all[: cfg.n_test]
    test_ids = {r["id"] for r in test}
    test_q = {normalize_question(r["question"]) for r in test}

    pool: list[dict[str, Any]] = []
    no_gold = 0
    for split in sc.pool_splits:
        raw = load(split)
        conv = [x for x in map(to_row, raw) if x]
        no_gold += len(raw) - len(conv)
        pool.extend(conv)
    before = len(pool)
    pool = [r for r in _dedupe(pool)
            if r["id"] not in test_ids and normalize_question(r["question"]) not in test_q]
    stats["pool_removed_overlap_or_duplicate"] = before - len(pool)
    stats["pool_no_gold"] = no_gold
    rng.shuffle(pool)
    train = pool[: cfg.n_train]
    val = pool[cfg.n_train: cfg.n_train + cfg.n_val]
    split = data.extra_split if data.extra_split and has_split(sc.dataset, data.extra_split, data.source,
                                                                 data.sample_dir) else None
    extra = pool[cfg.n_train + cfg.n_val:] + _extra_split(load, to_row, split, test + pool, cfg.seed)
    if not train or not test:
        raise InputError(f"{where}: empty selection (train {len(train)}, test {len(test)} rows) "
                         f"from source {data.source!r} with filters {sc.filters}")
    short = {k: (asked, got) for k, asked, got in (("n_train", cfg.n_train, len(train)),
                                                     ("n_test", cfg.n_test, len(test)),
                                                     ("n_val", cfg.n_val, len(val))) if got < asked}
    if short and not cfg.allow_shortfall:
        raise InputError(f"{where}: " + "; ".join(f"prepare.{k} is {a} but only {g} rows are available"
                                                  for k, (a, g) in short.items())
                         + " (pool: the splits " + ", ".join(sc.pool_splits) + " after filters, without test rows); "
                         "ask for fewer, or set prepare.allow_shortfall: true to go on with what there is")
    stats["warnings"] = [f"prepare.{k}: {g} of {a} rows available" for k, (a, g) in short.items()]
    stats.update(pool_size=len(pool), n_train_requested=cfg.n_train, n_train=len(train),
                 n_test_requested=cfg.n_test, n_test=len(test), n_val_requested=cfg.n_val, n_val=len(val),
                 shortfall=max(0, cfg.n_train - len(train)), test_shortfall=max(0, cfg.n_test - len(test)),
                 test_split=sc.test_split, pool_splits=list(sc.pool_splits), n_extra=len(extra),
                 extra_split=split)
    # Stable order on disk (sorted by id) so a re-run with the same seed is byte-identical;
    # the extra questions in the order drawn, so that their first N are a random sample.
    return Prepared(sorted(train, key=lambda r: r["id"]), sorted(test, key=lambda r: r["id"]), stats,
                    sorted(val, key=lambda r: r["id"]), extra)


def _extra_split(load, to_row, split: str | None, taken: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The rows of `split` that are not already test or pool questions, shuffled by their
    own random stream (the train/val/test draw does not change when the split appears)."""
    if not split:
        return []
    seen = {normalize_question(r["question"]) for r in taken}
    ids = {r["id"] for r in taken}
    rows = [r for r in _dedupe([x for x in map(to_row, load(split)) if x])
            if r["id"] not in ids and normalize_question(r["question"]) not in seen]
    random.Random(seed).shuffle(rows)
    return rows


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for r in rows:
        k = normalize_question(r["question"])
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out
