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
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    stats, dist, warnings = analyze(list(get(params, "scenarios")), tok, prompts, max_length, n_train, args.teacher,
                                    args.teacher_metrics)
    figs = figures(dist, args.figures)
    write_text(args.report, markdown(stats, warnings, max_length, figs, args.report.parent))
    write_json(args.metrics, {"scenarios": headline(stats), "warnings": len(warnings)})
    for w in warnings:
        log.warning(w)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokenizer", required=True, type=Path, help="input: the target's folder (its tokenizer)")
    p.add_argument("--teacher", required=True, type=Path, help="input: folder of <style>/<scenario>.jsonl answers")
    p.add_argument("--teacher-metrics", required=True, type=Path, help="input: folder of the teacher's metrics")
    p.add_argument("--report", required=True, type=Path, help="output: the data report (markdown)")
    p.add_argument("--figures", required=True, type=Path, help="output folder: data_*.png")
    p.add_argument("--metrics", required=True, type=Path, help="output: headline numbers (json)")
    run(main, p)
