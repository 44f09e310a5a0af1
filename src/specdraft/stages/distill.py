"""Stage distill@<scenario>-<style>: the trained target answers its training questions.

Writes data/distilled/<scenario>-<style>.jsonl (the target's text, extracted answer,
correctness) and metrics/distill/<scenario>-<style>.json. Greedy, the same system prompt
and max_new_tokens as evaluation. Resumable: finished rows are not generated again.
Params read: generation, distill, prompts, runtime.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from specdraft.config import RuntimeConfig, apply_runtime, load_params, section
from specdraft.generate.api import GenerationConfig
from specdraft.generate.resume import Resumable, fingerprint, model_fingerprint
from specdraft.io import write_json, write_jsonl
from specdraft.prompts import PromptsConfig
from specdraft.stages._cli import run
from specdraft.stages._models import PARTIAL, split_name, target_dir
from specdraft.teacher.core import training_rows
from specdraft.train.distill import DistillConfig, distill

log = logging.getLogger("distill")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    apply_runtime(section(RuntimeConfig, "runtime", params))
    scenario, style = split_name(args.name)
    gen = section(GenerationConfig, "generation", params)
    cfg = section(DistillConfig, "distill", params)
    prompts = section(PromptsConfig, "prompts", params)
    rows = training_rows("data/teacher", scenario, style)
    tdir = target_dir(args.name)
    fp = fingerprint([model_fingerprint(tdir), gen, prompts, style])
    resume = Resumable(PARTIAL / "distill" / f"{args.name}.jsonl", fp)
    kept, metrics = distill(tdir, rows, style, prompts, gen, cfg, resume)
    write_jsonl(Path("data/distilled") / f"{args.name}.jsonl", kept)
    write_json(Path("metrics/distill") / f"{args.name}.json", metrics)
    resume.close()
    log.info("%s: accuracy %.3f on %d training questions, %.1f tokens", args.name, metrics["accuracy"],
             metrics["n"], metrics["mean_output_tokens"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True, help="<scenario>-<style>")
    run(main, p)
