"""Stage report: reports/summary.md, reports/figures/report_*.png and metrics/headline.json.

Reads metrics/eval/ (every configuration and the comparisons), metrics/prepare/ and the
training curves in metrics/train/ (folders named on the command line). headline.json is
the review view of two runs (`make diff`): accuracy, tokens, acceptance and speedup only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from specdraft.config import get, load_params
from specdraft.io import read_json, write_json, write_text
from specdraft.report.summary import figures, headline, load_eval, summary
from specdraft.stages._cli import run


def main(args: argparse.Namespace) -> None:
    params = load_params()
    scenarios = list(get(params, "scenarios"))
    setup = {k: get(params, k) for k in ("meta.profile", "models.target", "models.draft", "generation.engine",
                                          "generation.max_new_tokens", "generation.num_speculative_tokens",
                                          "data.source")}
    evals = load_eval(scenarios, args.eval)
    prepare = {sc: read_json(args.prepare / f"{sc}.json") for sc in scenarios}
    figs = figures(evals, args.train, args.figures)
    write_text(args.out, summary(evals, setup, prepare, figs, args.out.parent))
    write_json(args.headline, headline(evals))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--eval", required=True, type=Path, help="input folder: <scenario>/<config>.json metrics")
    p.add_argument("--prepare", required=True, type=Path, help="input folder: <scenario>.json data counts")
    p.add_argument("--train", required=True, type=Path, help="input folder: training curves (dvclive)")
    p.add_argument("--out", required=True, type=Path, help="output: the summary (markdown)")
    p.add_argument("--figures", required=True, type=Path, help="output folder: report_*.png")
    p.add_argument("--headline", required=True, type=Path, help="output: the review view of the metrics (json)")
    run(main, p)
