"""Stages evaluate_base@<scenario> and evaluate@<scenario>-<style>.

`evaluate_base` evaluates the untrained target (prompted with eval.base_style) and writes
configuration `base`. `evaluate` evaluates the trained target of a style and, in the
same process, each speculative variant in params `eval.variants` (sd: the trained draft;
sd_untrained: the untrained base draft): configurations <style> and <style>_<variant>.
See specdraft.evaluate.run for what is decoded, simulated and timed.

Each configuration writes data/eval/<scenario>/<config>.jsonl (per-question predictions)
and metrics/eval/<scenario>/<config>.json. Resumable: plain answers and timed runs are
appended to partial files as they finish.

    python -m specdraft.stages.evaluate --scenario gsm8k [--style cot]
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
    evaluate_target,
    plain_metrics,
    resolve_models,
    speculative_metrics,
    throughput_speedup,
)
from specdraft.generate.api import GenerationConfig
from specdraft.generate.resume import Resumable, fingerprint, model_fingerprint
from specdraft.io import read_jsonl, write_json, write_jsonl
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
    style = check_style(args.style or cfg.base_style)
    name = args.style or "base"
    target, drafts = resolve_models(Path("models"), args.scenario, args.style, cfg.variants)
    rows = read_jsonl(Path("data/prepared") / args.scenario / "test.jsonl", ["id", "question", "answer"])
    draft_data = None
    if drafts and gen.draft_vocab:  # the restricted head ranks the draft's training tokens
        distilled = read_jsonl(Path("data/distilled") / f"{args.scenario}-{style}.jsonl", ["question", "response"])
        draft_data = ([r["response"] for r in distilled], [r["question"] for r in distilled])
    # (settings read only with drafts stay unread without them: dvc.yaml declares what is read)
    fp = fingerprint([model_fingerprint(target, *drafts.values()), gen, prompts, style,
                      cfg.timed_prompts if drafts else 0, draft_data])
    partial = PARTIAL / "eval" / args.scenario
    resume_plain = Resumable(partial / f"{name}.plain.jsonl", fp)
    resume_timed = Resumable(partial / f"{name}.timed.jsonl", fp)
    preds = evaluate_target(target, drafts, rows, style, prompts, gen, cfg, resume_plain, resume_timed, draft_data)

    common = {"style": style, "target": str(target), "engine": gen.engine, "max_new_tokens": gen.max_new_tokens,
              "cpu_kernels": gen.cpu_kernels}
    if drafts:  # batch-1 timing runs through the decode loop
        common["decode_loop"] = gen.decode_loop
    out = {name: {"config": name, **common, "draft": None, **plain_metrics(preds["plain"])}}
    for v, d in drafts.items():
        m = {"config": config_name(style, v), **common, "draft": str(d), "draft_quant": gen.draft_quant,
             "draft_vocab": gen.draft_vocab, **speculative_metrics(preds[v], gen.num_speculative_tokens, cfg.seed)}
        if cfg.throughput and gen.engine == "vllm":
            m.update(throughput_speedup(target, d, rows, style, prompts, gen, cfg.batch_size))
        else:
            m["throughput_speedup"] = None  # the hf engine drafts at batch 1 only
        out[m["config"]] = m
    for config, m in out.items():
        write_jsonl(Path("data/eval") / args.scenario / f"{config}.jsonl", preds["plain" if config == name else
                                                                               config[len(style) + 1:]])
        write_json(Path("metrics/eval") / args.scenario / f"{config}.json", m)
    resume_plain.close()
    resume_timed.close()
    for config, m in out.items():
        if config != name:
            check_divergence(m, cfg.max_diverging_share, f"{args.scenario}/{config}")
        log.info("%s/%s: accuracy %.3f, %.1f tokens%s", args.scenario, config, m["accuracy"], m["mean_output_tokens"],
                 f", acceptance {m['acceptance_rate']:.3f}, speedup {m['speedup']:.2f}x" if "speedup" in m else "")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", required=True)
    p.add_argument("--style", help="cot or cod: the trained target and its speculative variants (omit: base)")
    run(main, p)
