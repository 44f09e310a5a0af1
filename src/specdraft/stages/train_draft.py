"""Stages train_draft@<scenario>-<style> and train_draft_kd@<scenario>-<style>: the draft
distilled from the trained target, on the target's answers to its training questions.

`--objective sft` (train_draft): cross-entropy on the answers' tokens. `--objective kd`
(train_draft_kd): the divergence from the target's token distribution at the same
positions (specdraft.train.trainers.distribution_loss, settings in train_draft_kd); both use
train_draft's steps, learning rate and data, so the two drafts differ in the loss only.

Reads data/distilled/<scenario>-<style>.jsonl; writes the draft to --out and curves, final
losses and the draft's acceptance on the target's held-out outputs (trained and untrained
draft, teacher-forced simulation of greedy speculative decoding) to --live.
Params read: train_draft (and train_draft_kd for kd), generation.num_speculative_tokens,
prompts, runtime.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from specdraft.config import RuntimeConfig, apply_runtime, get, load_params, section
from specdraft.io import read_jsonl
from specdraft.prompts import PromptsConfig
from specdraft.schema import check_all
from specdraft.stages._cli import run
from specdraft.stages._models import CKPT, add_name_args, run_name
from specdraft.train.settings import KDSettings, TrainConfig
from specdraft.train.sft import train_and_save

log = logging.getLogger("train_draft")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    check_all(params)  # every section, before minutes of work
    rt = section(RuntimeConfig, "runtime", params)
    cfg = section(TrainConfig, "train_draft", params)
    apply_runtime(dataclasses.replace(rt, threads=cfg.threads or rt.threads))
    prompts = section(PromptsConfig, "prompts", params)
    k = int(get(params, "generation.num_speculative_tokens"))
    kd = section(KDSettings, "train_draft_kd", params) if args.objective == "kd" else None
    if kd is not None:  # the distributions are compared token id by token id
        from transformers import AutoTokenizer

        from specdraft.generate.models import check_tokenizers

        check_tokenizers(AutoTokenizer.from_pretrained(args.target), AutoTokenizer.from_pretrained(args.base))
    rows = read_jsonl(args.data, ["id", "question", "response"])
    name = run_name(args)
    # the held-out acceptance is measured after training, on the training device
    # (specdraft.train.finish: in a fresh process under FSDP / DeepSpeed)
    m = train_and_save(args.base, rows, prompts, args.style, "response", cfg, args.out,
                       CKPT / ("draft" if kd is None else "draft-kd") / name, args.live, teacher_dir=args.target, kd=kd,
                       acceptance_k=k)
    if m is None:  # another rank of a multi-process run: the main process writes
        return
    log.info("%s (%s): loss %.3f -> %.3f; acceptance %.3f (untrained %.3f) at k=%d", name, args.objective,
             m["train_loss_first"],
             m["train_loss_last"], m["acceptance_trained"], m["acceptance_untrained"], k)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_name_args(p)
    p.add_argument("--base", required=True, type=Path, help="input: the untrained draft's folder")
    p.add_argument("--target", required=True, type=Path,
                   help="input: the trained target's folder (its tokenizer; its distribution for kd)")
    p.add_argument("--objective", choices=("sft", "kd"), default="sft",
                   help="sft: the target's answers' tokens; kd: the target's token distribution")
    p.add_argument("--data", required=True, type=Path, help="input: the target's distilled answers")
    p.add_argument("--out", required=True, type=Path, help="output: the trained draft's folder")
    p.add_argument("--live", required=True, type=Path, help="output: training curves and metrics (dvclive)")
    run(main, p)
