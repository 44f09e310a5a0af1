"""Stage prepare@<scenario>: data/prepared/<scenario>/{train,val,test,extra}.jsonl + metrics.

Params read: data.source, data.sample_dir, data.extra_split, data.datasets.<dataset>,
scenarios.<scenario>, prepare.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from specdraft.config import get, load_params, section, untraced
from specdraft.data.prepare import PrepareConfig, ScenarioConfig, prepare
from specdraft.data.sources import DataConfig
from specdraft.io import InputError, write_json, write_jsonl
from specdraft.stages._cli import run

log = logging.getLogger("prepare")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    with untraced():  # which names exist is not a setting the stage uses
        scenarios = get(params, "scenarios")
    if args.scenario not in scenarios:
        raise InputError(f"unknown scenario {args.scenario!r}; valid: {sorted(scenarios)}")
    sc = section(ScenarioConfig, f"scenarios.{args.scenario}", params)
    data = section(DataConfig, "data", params)
    cfg = section(PrepareConfig, "prepare", params)
    out = prepare(args.scenario, sc, data, cfg)
    write_jsonl(args.test, out.test)
    write_jsonl(args.train, out.train)
    write_jsonl(args.val, out.val)
    write_jsonl(args.extra, out.extra)
    write_json(args.metrics, out.stats)
    log.info("%s: %d train (pool %d, shortfall %d), %d validation, %d test, %d extra", args.scenario,
             out.stats["n_train"], out.stats["pool_size"], out.stats["shortfall"], out.stats["n_val"],
             out.stats["n_test"], out.stats["n_extra"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", required=True)
    p.add_argument("--train", required=True, type=Path, help="output: the training questions (jsonl)")
    p.add_argument("--val", required=True, type=Path,
                   help="output: the validation questions, for tuned choices such as k (jsonl)")
    p.add_argument("--test", required=True, type=Path, help="output: the test questions (jsonl)")
    p.add_argument("--extra", required=True, type=Path,
                   help="output: questions only the drafts may see, in the order drawn (jsonl)")
    p.add_argument("--metrics", required=True, type=Path, help="output: counts and shortfall (json)")
    run(main, p)
