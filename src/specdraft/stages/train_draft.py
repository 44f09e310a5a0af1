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
from specdraft.schema import check_all
from specdraft.stages._cli import run
from specdraft.stages._models import CKPT, add_name_args, run_name
from specdraft.train.acceptance import held_out_acceptance
from specdraft.train.sft import TrainConfig, train_and_save

log = logging.getLogger("train_draft")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    check_all(params)  # every section, before minutes of work
    rt = section(RuntimeConfig, "runtime", params)
    cfg = section(TrainConfig, "train_draft", params)
    apply_runtime(dataclasses.replace(rt, threads=cfg.threads or rt.threads))
    prompts = section(PromptsConfig, "prompts", params)
    k = int(get(params, "generation.num_speculative_tokens"))
    rows = read_jsonl(args.data, ["id", "question", "response"])
    name = run_name(args)
    m = train_and_save(args.base, rows, prompts, args.style, "response", cfg, args.out, CKPT / "draft" / name,
                       args.live)
    if m is None:  # another rank of a multi-process run: the main process writes
        return
    m.update(held_out_acceptance(rows, prompts, args.style, cfg, args.target, args.out, args.base, k))
    metrics_path = args.live / "metrics.json"
    write_json(metrics_path, {**read_json(metrics_path), **m})
    log.info("%s: loss %.3f -> %.3f; acceptance %.3f (untrained %.3f) at k=%d", name, m["train_loss_first"],
             m["train_loss_last"], m["acceptance_trained"], m["acceptance_untrained"], k)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_name_args(p)
    p.add_argument("--base", required=True, type=Path, help="input: the untrained draft's folder")
    p.add_argument("--target", required=True, type=Path, help="input: the trained target's folder (its tokenizer)")
    p.add_argument("--data", required=True, type=Path, help="input: the target's distilled answers")
    p.add_argument("--out", required=True, type=Path, help="output: the trained draft's folder")
    p.add_argument("--live", required=True, type=Path, help="output: training curves and metrics (dvclive)")
    run(main, p)
