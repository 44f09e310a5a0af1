"""Stage analyze: reports/data.md, reports/figures/data_*.png and metrics/data.json.

Reads data/teacher/ (all scenarios, both styles) and the target's tokenizer. Params read:
scenarios, prompts, prepare.n_train, train_target.max_length.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from specdraft.config import get, load_params, section
from specdraft.io import write_json, write_text
from specdraft.prompts import PromptsConfig
from specdraft.report.analyze import analyze, figures, headline, markdown
from specdraft.stages._cli import run

log = logging.getLogger("analyze")


def main(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    params = load_params()
    prompts = section(PromptsConfig, "prompts", params)
    max_length = int(get(params, "train_target.max_length"))
    n_train = int(get(params, "prepare.n_train"))
    tok = AutoTokenizer.from_pretrained("models/base/target")
    stats, dist, warnings = analyze(list(get(params, "scenarios")), tok, prompts, max_length, n_train)
    figs = figures(dist, Path("reports/figures"))
    write_text("reports/data.md", markdown(stats, warnings, max_length, figs, Path("reports")))
    write_json("metrics/data.json", {"scenarios": headline(stats), "warnings": len(warnings)})
    for w in warnings:
        log.warning(w)


if __name__ == "__main__":
    run(main, argparse.ArgumentParser(description=__doc__))
