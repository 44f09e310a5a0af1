"""Stage report: reports/summary.md and reports/figures/report_*.png.

Reads metrics/eval/ (every configuration and the comparisons), metrics/prepare/ and the
training curves in metrics/train/. Params read: meta, models, generation, data.source,
scenarios.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from specdraft.config import get, load_params
from specdraft.io import read_json, write_text
from specdraft.report.summary import figures, load_eval, summary
from specdraft.stages._cli import run


def main(args: argparse.Namespace) -> None:
    params = load_params()
    scenarios = list(get(params, "scenarios"))
    setup = {k: get(params, k) for k in ("meta.profile", "models.target", "models.draft", "generation.engine",
                                          "generation.max_new_tokens", "generation.num_speculative_tokens",
                                          "data.source")}
    evals = load_eval(scenarios)
    prepare = {sc: read_json(Path("metrics/prepare") / f"{sc}.json") for sc in scenarios}
    figs = figures(evals, Path("metrics/train"), Path("reports/figures"))
    write_text("reports/summary.md", summary(evals, setup, prepare, figs, Path("reports")))


if __name__ == "__main__":
    run(main, argparse.ArgumentParser(description=__doc__))
