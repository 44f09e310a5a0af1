"""Stage tokenizer: the target's tokenizer as a folder (models/tokenizer).

Params read: models.target, models.target_revision. The teacher stages count each answer's
training length with it (an answer longer than train_target.max_length is rejected there,
never truncated in training) and analyze counts tokens with it; fetching it does not
wait for the target's weights (a 30 GB download in the paper profile).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from specdraft.config import section
from specdraft.generate.models import ModelsConfig, load_tokenizer
from specdraft.io import atomic_dir
from specdraft.stages._cli import run

log = logging.getLogger("tokenizer")


def main(args: argparse.Namespace) -> None:
    cfg = section(ModelsConfig, "models")
    tok = load_tokenizer(cfg.target, cfg.target_revision)
    with atomic_dir(args.out) as tmp:
        tok.save_pretrained(tmp)
    log.info("%s: %d tokens", cfg.target, len(tok))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, type=Path, help="output: the tokenizer's folder")
    run(main, p)
