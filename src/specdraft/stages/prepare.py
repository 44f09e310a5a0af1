"""Stage prepare@<scenario>: data/prepared/<scenario>/{train,test}.jsonl + metrics.

Params read: data.source, data.sample_dir, data.datasets.<dataset>, scenarios.<scenario>,
prepare.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from specdraft.config import get, load_params, section, untraced
from specdraft.data.prepare import PrepareConfig, ScenarioConfig, prepare
from specdraft.data.sources import DataConfig, DatasetConfig
from specdraft.io import InputError, write_json, write_jsonl
from specdraft.stages._cli import run

log = logging.getLogger("prepare")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    with untraced():  # which names exist is not a setting the stage uses
        scenarios, datasets = get(params, "scenarios"), get(params, "data.datasets")
    if args.scenario not in scenarios:
        raise InputError(f"unknown scenario {args.scenario!r}; valid: {sorted(scenarios)}")
    sc = section(ScenarioConfig, f"scenarios.{args.scenario}", params)
    ds_key = f"data.datasets.{sc.dataset}"
    if sc.dataset not in datasets:
        raise InputError(f"scenarios.{args.scenario}.dataset: unknown dataset {sc.dataset!r}; "
                         f"valid: {sorted(datasets)}")
    data = DataConfig(source=get(params, "data.source"), sample_dir=get(params, "data.sample_dir"),
                      datasets={sc.dataset: section(DatasetConfig, ds_key, params)})
    cfg = section(PrepareConfig, "prepare", params)
    out = prepare(args.scenario, sc, data, cfg)
    folder = Path(args.out) / args.scenario
    write_jsonl(folder / "test.jsonl", out.test)
    write_jsonl(folder / "train.jsonl", out.train)
    write_json(Path(args.metrics) / f"{args.scenario}.json", out.stats)
    log.info("%s: %d train (pool %d, shortfall %d), %d test", args.scenario, out.stats["n_train"],
             out.stats["pool_size"], out.stats["shortfall"], out.stats["n_test"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", required=True)
    p.add_argument("--out", default="data/prepared")
    p.add_argument("--metrics", default="metrics/prepare")
    run(main, p)
