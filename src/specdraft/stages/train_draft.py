"""Stage train_draft@<scenario>-<style>: SFT of models/base/draft on the target's answers.

Reads data/distilled/<scenario>-<style>.jsonl; writes the merged draft to
models/draft/<scenario>-<style>/ and curves, final losses and the draft's acceptance on
the target's held-out outputs (trained and untrained draft, teacher-forced simulation of
greedy speculative decoding) to metrics/train/draft/<scenario>-<style>/.
Params read: train_draft, generation.num_speculative_tokens, prompts, runtime.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from specdraft.config import RuntimeConfig, apply_runtime, get, load_params, section
from specdraft.io import read_json, read_jsonl, write_json
from specdraft.prompts import PromptsConfig
from specdraft.stages._cli import run
from specdraft.stages._models import BASE, CKPT, draft_dir, split_name, target_dir
from specdraft.train.acceptance import simulated_acceptance
from specdraft.train.sft import TrainConfig, build_examples, split, train_and_save

log = logging.getLogger("train_draft")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    rt = section(RuntimeConfig, "runtime", params)
    scenario, style = split_name(args.name)
    cfg = section(TrainConfig, "train_draft", params)
    apply_runtime(dataclasses.replace(rt, threads=cfg.threads or rt.threads))
    prompts = section(PromptsConfig, "prompts", params)
    k = int(get(params, "generation.num_speculative_tokens"))
    rows = read_jsonl(Path("data/distilled") / f"{args.name}.jsonl", ["id", "question", "response"])
    live = Path("metrics/train/draft") / args.name
    m = train_and_save(BASE / "draft", rows, prompts, style, "response", cfg, draft_dir(args.name),
                       CKPT / "draft" / args.name, live)
    # Acceptance on the held-out share (the same split the trainer used for eval loss).
    _, val_ex = split(build_examples(rows, prompts, style, "response"), cfg.val_share, cfg.seed)
    val_q = {e["prompt"][-1]["content"] for e in val_ex}
    held = [r for r in rows if r["question"].strip() in val_q] or rows
    for which, d in (("trained", draft_dir(args.name)), ("untrained", BASE / "draft")):
        sim = simulated_acceptance(target_dir(args.name), d, held, style, prompts, k)
        m[f"acceptance_{which}"] = sim["acceptance_rate"]
        m[f"mean_acceptance_length_{which}"] = sim["mean_acceptance_length"]
    m["acceptance_rows"] = len(held)
    metrics_path = live / "metrics.json"
    write_json(metrics_path, {**read_json(metrics_path), **m})
    log.info("%s: loss %.3f -> %.3f; acceptance %.3f (untrained %.3f) at k=%d", args.name, m["train_loss_first"],
             m["train_loss_last"], m["acceptance_trained"], m["acceptance_untrained"], k)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True, help="<scenario>-<style>")
    run(main, p)
