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
    source = get(params, "data.source")
    if not isinstance(source, str):
        raise InputError(f"params.yaml: data.source: hub, sample or dir:PATH, got {source!r}")
    data = DataConfig(source=source, sample_dir=get(params, "data.sample_dir"),
                      datasets={sc.dataset: section(DatasetConfig, ds_key, params)})
    cfg = section(PrepareConfig, "prepare", params)
    out = prepare(args.scenario, sc, data, cfg)
    write_jsonl(args.test, out.test)
    write_jsonl(args.train, out.train)
    write_json(args.metrics, out.stats)
    log.info("%s: %d train (pool %d, shortfall %d), %d test", args.scenario, out.stats["n_train"],
             out.stats["pool_size"], out.stats["shortfall"], out.stats["n_test"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", required=True)
    p.add_argument("--train", required=True, type=Path, help="output: the training questions (jsonl)")
    p.add_argument("--test", required=True, type=Path, help="output: the test questions (jsonl)")
    p.add_argument("--metrics", required=True, type=Path, help="output: counts and shortfall (json)")
    run(main, p)
