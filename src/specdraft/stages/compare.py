"""Stage compare@<scenario>: metrics/eval/<scenario>/comparisons.json.

Params read: eval.comparisons, eval.seed. Pairs whose predictions are missing are an
error naming the file.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from specdraft.config import get, load_params
from specdraft.evaluate.compare import compare
from specdraft.io import read_jsonl, write_json
from specdraft.stages._cli import run

log = logging.getLogger("compare")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    pairs = get(params, "eval.comparisons")
    seed = int(get(params, "eval.seed"))
    folder = args.preds
    out = {}
    for a, b in pairs:
        pa = read_jsonl(folder / f"{a}.jsonl", ["id", "correct", "output_tokens"])
        pb = read_jsonl(folder / f"{b}.jsonl", ["id", "correct", "output_tokens"])
        out[f"{a}_vs_{b}"] = compare(pa, pb, f"{args.scenario}: {a} vs {b}", seed)
        c = out[f"{a}_vs_{b}"]
        log.info("%s: %s vs %s: accuracy %+.3f (p=%.3f), tokens x%.2f", args.scenario, a, b, c["accuracy_diff"],
                 c["p_value"], c["output_tokens_ratio"])
    write_json(args.out, out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", required=True)
    p.add_argument("--preds", required=True, type=Path, help="input folder: <config>.jsonl per configuration")
    p.add_argument("--out", required=True, type=Path, help="output: the comparisons (json)")
    run(main, p)
