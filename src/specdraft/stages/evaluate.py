"""Stages evaluate_base@<scenario>, evaluate_plain@<scenario>-<style> and
evaluate_sd@<scenario>-<style>-<variant>, one configuration each.

Configurations: `base` (untrained target, CoT prompt), `cot`/`cod` (trained targets), and
<style>_<variant> for each speculative variant in params `eval.variants` (sd: the trained
draft; sd_untrained: the untrained base draft). Writes
data/eval/<scenario>/<config>.jsonl (per-sample predictions) and
metrics/eval/<scenario>/<config>.json. Resumable. Params read: eval, generation, prompts,
runtime.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from specdraft.config import RuntimeConfig, apply_runtime, load_params, section
from specdraft.evaluate.run import (
    EvalConfig,
    check_divergence,
    config_name,
    metrics,
    resolve_models,
    run_config,
    throughput_speedup,
)
from specdraft.generate.engine import GenerationConfig
from specdraft.generate.resume import Resumable, fingerprint, model_fingerprint
from specdraft.io import InputError, read_jsonl, write_json, write_jsonl
from specdraft.prompts import PromptsConfig, check_style
from specdraft.stages._cli import run
from specdraft.stages._models import PARTIAL

log = logging.getLogger("evaluate")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    apply_runtime(section(RuntimeConfig, "runtime", params))
    cfg = section(EvalConfig, "eval", params)
    gen = section(GenerationConfig, "generation", params)
    prompts = section(PromptsConfig, "prompts", params)
    if args.style is None:  # the untrained target
        name, style = "base", check_style(cfg.base_style)
        target, draft = resolve_models(args.scenario, None, None)
    elif args.variant is None:  # a trained target alone
        name, style = check_style(args.style), args.style
        target, draft = resolve_models(args.scenario, style, None)
    else:
        style = check_style(args.style)
        if args.variant not in cfg.variants:
            raise InputError(f"unknown variant {args.variant!r}; valid: {sorted(cfg.variants)}")
        name = config_name(style, args.variant)
        target, draft = resolve_models(args.scenario, style, cfg.variants[args.variant])
    rows = read_jsonl(Path("data/prepared") / args.scenario / "test.jsonl", ["id", "question", "answer"])
    draft_data = None
    if draft is not None and gen.draft_vocab:  # the restricted head ranks the draft's training tokens
        distilled = read_jsonl(Path("data/distilled") / f"{args.scenario}-{style}.jsonl", ["question", "response"])
        draft_data = ([r["response"] for r in distilled], [r["question"] for r in distilled])
    fp = fingerprint([model_fingerprint(target, draft), gen, prompts, style, draft_data])
    resume = Resumable(PARTIAL / "eval" / args.scenario / f"{name}.jsonl", fp)
    preds = run_config(target, draft, rows, style, prompts, gen, resume, draft_data)
    m = {"config": name, "style": style, "target": str(target), "draft": str(draft) if draft else None,
         "engine": gen.engine, "max_new_tokens": gen.max_new_tokens, "decode_loop": gen.decode_loop,
         "cpu_kernels": gen.cpu_kernels, **({"draft_quant": gen.draft_quant, "draft_vocab": gen.draft_vocab}
                                            if draft else {}),
         **metrics(preds, gen.num_speculative_tokens if draft else None, cfg.seed)}
    if draft is not None:
        if cfg.throughput and gen.engine == "vllm":
            m.update(throughput_speedup(target, draft, rows, style, prompts, gen, cfg.batch_size))
        else:
            m["throughput_speedup"] = None  # the hf engine drafts at batch 1 only
    write_jsonl(Path("data/eval") / args.scenario / f"{name}.jsonl", preds)
    write_json(Path("metrics/eval") / args.scenario / f"{name}.json", m)
    resume.close()
    check_divergence(m, cfg.max_diverging_share, f"{args.scenario}/{name}")
    log.info("%s/%s: accuracy %.3f, %.1f tokens%s", args.scenario, name, m["accuracy"], m["mean_output_tokens"],
             f", acceptance {m['acceptance_rate']:.3f}, speedup {m['speedup']:.2f}x" if draft else "")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", required=True)
    p.add_argument("--style", help="cot or cod (omit with --variant for the base configuration)")
    p.add_argument("--variant", help="a key of eval.variants; omit for the untrained base target")
    run(main, p)
