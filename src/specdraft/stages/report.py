"""Stage report: reports/summary.md, reports/figures/report_*.png, metrics/headline.json
and metrics/stage_times.json.

Reads metrics/eval/ (every configuration and the comparisons), metrics/prepare/, the
training curves in metrics/train/ and every stage's wall time in metrics/time/ (folders
named on the command line). headline.json is the review view of two runs (`make diff`):
accuracy, tokens, acceptance and speedup only; stage_times.json, shown beside it, the time
per stage family and in all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from specdraft.config import get, load_params, section
from specdraft.io import read_json, write_json, write_text
from specdraft.report.summary import figures, headline, load_eval, summary
from specdraft.report.times import load_times, stage_times_metrics
from specdraft.report.verdicts import ClaimsConfig
from specdraft.stages._cli import run


def main(args: argparse.Namespace) -> None:
    params = load_params()
    scenarios = list(get(params, "scenarios"))
    setup = {k: get(params, k) for k in ("meta.profile", "models.target", "models.draft", "generation.engine",
                                          "generation.max_new_tokens", "generation.num_speculative_tokens",
                                          "data.source")}
    evals = load_eval(scenarios, args.eval)
    prepare = {sc: read_json(args.prepare / f"{sc}.json") for sc in scenarios}
    times = load_times(args.stage_times)
    figs = figures(evals, args.train, args.figures)
    claims = section(ClaimsConfig, "claims", params)
    write_text(args.out, summary(evals, setup, prepare, figs, args.out.parent, times, claims))
    write_json(args.headline, headline(evals))
    write_json(args.stage_times_out, stage_times_metrics(times))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--eval", required=True, type=Path, help="input folder: <scenario>/<config>.json metrics")
    p.add_argument("--prepare", required=True, type=Path, help="input folder: <scenario>.json data counts")
    p.add_argument("--train", required=True, type=Path, help="input folder: training curves (dvclive)")
    p.add_argument("--out", required=True, type=Path, help="output: the summary (markdown)")
    p.add_argument("--figures", required=True, type=Path, help="output folder: report_*.png")
    p.add_argument("--headline", required=True, type=Path, help="output: the review view of the metrics (json)")
    p.add_argument("--stage-times", required=True, type=Path, help="input folder: every stage's wall time")
    p.add_argument("--stage-times-out", required=True, type=Path,
                   help="output: the time per stage family and in all (json)")
    run(main, p)
