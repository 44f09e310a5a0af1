"""Stage train_target@<scenario>-<style>: LoRA SFT of models/base/target on the teacher data.

Reads the final teacher set of the style (questions accepted in both passes); writes the
merged model (and its adapter) to models/target/<scenario>-<style>/ and curves and final
losses to metrics/train/target/<scenario>-<style>/. Params read: train_target, prompts,
runtime. Multi-GPU: params `launcher` (specdraft.train.launch, configs in conf/accelerate/).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from specdraft.config import RuntimeConfig, apply_runtime, load_params, section
from specdraft.prompts import PromptsConfig
from specdraft.schema import check_all
from specdraft.stages._cli import run
from specdraft.stages._models import CKPT, add_name_args, run_name
from specdraft.teacher.core import training_rows
from specdraft.train.settings import TrainConfig
from specdraft.train.sft import train_and_save

log = logging.getLogger("train_target")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    check_all(params)  # every section, before minutes of work
    rt = section(RuntimeConfig, "runtime", params)
    cfg = section(TrainConfig, "train_target", params)
    apply_runtime(dataclasses.replace(rt, threads=cfg.threads or rt.threads))
    prompts = section(PromptsConfig, "prompts", params)
    rows = training_rows(args.cot, args.cod, args.style)
    name = run_name(args)
    m = train_and_save(args.base, rows, prompts, args.style, "response", cfg, args.out, CKPT / "target" / name,
                       args.live)
    if m is None:  # another rank of a multi-process run: the main process writes
        return
    log.info("%s: %d steps, train loss %.3f -> %.3f, eval loss %s", name, m["steps"], m["train_loss_first"],
             m["train_loss_last"], m["eval_loss"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_name_args(p)
    p.add_argument("--base", required=True, type=Path, help="input: the untrained target's folder")
    p.add_argument("--cot", required=True, type=Path, help="input: accepted CoT answers of the scenario")
    p.add_argument("--cod", required=True, type=Path, help="input: accepted CoD answers of the scenario")
    p.add_argument("--out", required=True, type=Path, help="output: the trained (merged) target's folder")
    p.add_argument("--live", required=True, type=Path, help="output: training curves and metrics (dvclive)")
    run(main, p)
