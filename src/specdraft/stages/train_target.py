"""Stage train_target@<scenario>-<style>: LoRA SFT of models/base/target on the teacher data.

Reads the final teacher set of the style (questions accepted in both passes); writes the
merged model (and its adapter) to models/target/<scenario>-<style>/ and curves and final
losses to metrics/train/target/<scenario>-<style>/. Params read: train_target, prompts,
runtime. Multi-GPU: train_target.launcher (accelerate configs in conf/accelerate/).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from specdraft.config import RuntimeConfig, apply_runtime, load_params, section
from specdraft.prompts import PromptsConfig
from specdraft.stages._cli import run
from specdraft.stages._models import BASE, CKPT, split_name, target_dir
from specdraft.teacher.core import training_rows
from specdraft.train.sft import TrainConfig, train_and_save

log = logging.getLogger("train_target")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    rt = section(RuntimeConfig, "runtime", params)
    scenario, style = split_name(args.name)
    cfg = section(TrainConfig, "train_target", params)
    apply_runtime(dataclasses.replace(rt, threads=cfg.threads or rt.threads))
    prompts = section(PromptsConfig, "prompts", params)
    rows = training_rows("data/teacher", scenario, style)
    m = train_and_save(BASE / "target", rows, prompts, style, "response", cfg, target_dir(args.name),
                       CKPT / "target" / args.name, Path("metrics/train/target") / args.name)
    log.info("%s: %d steps, train loss %.3f -> %.3f, eval loss %s", args.name, m["steps"], m["train_loss_first"],
             m["train_loss_last"], m["eval_loss"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--name", required=True, help="<scenario>-<style>")
    run(main, p)
