"""What callers of the generation package see: its settings, one result type, and the
`Engine` protocol that the hf and vllm engines implement.

Kept apart from the engines so that the vllm environment (.venv-vllm), the evaluation
statistics and the stage CLIs can use these types without importing either engine's
stack; `specdraft.generate.engine.make_engine` builds an engine from the settings.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

from specdraft.io import InputError

ENGINES = ("hf", "vllm")
LOOPS = ("specdraft", "transformers")


@dataclasses.dataclass(frozen=True)
class VLLMSettings:
    max_num_seqs: int = 16
    max_model_len: int = 2048
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    enforce_eager: bool = False


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Section `generation` of params.yaml: shared by distillation, evaluation, benchmark."""

    engine: str = "hf"  # hf | vllm
    max_new_tokens: int = 256
    batch_size: int = 8
    num_speculative_tokens: int = 2
    dtype: str = "float32"
    # hf engine, batch-1 decoding: `specdraft` (specdraft.generate.greedy, plain and
    # speculative in one lean loop) or `transformers` (model.generate / assisted generation).
    decode_loop: str = "specdraft"
    # hf engine on a CPU: `onednn` packs fp32 linear weights once for oneDNN
    # (specdraft.generate.cpu_kernels); `default` is torch's own path. Ignored on a GPU.
    cpu_kernels: str = "default"
    # The draft only (specdraft.generate.draft): dynamic int8 weights (CPU), and a head over
    # the draft_vocab most frequent tokens of its training data (0: the full vocabulary).
    draft_quant: str = "none"
    draft_vocab: int = 0
    vllm: VLLMSettings = dataclasses.field(default_factory=VLLMSettings)

    def __post_init__(self) -> None:
        from specdraft.generate.cpu_kernels import KERNELS
        from specdraft.generate.draft import QUANT

        for key, value, valid in (("engine", self.engine, ENGINES), ("decode_loop", self.decode_loop, LOOPS),
                                  ("cpu_kernels", self.cpu_kernels, KERNELS), ("draft_quant", self.draft_quant, QUANT)):
            if value not in valid:
                raise InputError(f"params.yaml: generation.{key}: {value!r} unknown; valid: {list(valid)}")
        for key in ("max_new_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise InputError(f"params.yaml: generation.{key}: must be >= 1, got {getattr(self, key)}")
        if self.num_speculative_tokens < 1 or self.draft_vocab < 0:
            raise InputError("params.yaml: generation.num_speculative_tokens must be >= 1 and "
                             f"generation.draft_vocab >= 0 (0: full vocabulary), got {self.num_speculative_tokens} "
                             f"and {self.draft_vocab}")


@dataclasses.dataclass
class GenOutput:
    """One generated answer. Speculative fields are None for plain decoding."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    output_tokens: int
    latency_s: float
    truncated: bool
    rounds: int | None = None
    proposed: int | None = None
    accepted: int | None = None
    draft_forward_s: float | None = None  # time inside the draft's forward calls (hf engine)
    target_forward_s: float | None = None  # time inside the target's (verify) forward calls

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("token_ids")
        return d



class Engine(Protocol):
    """Greedy generation from rendered prompts. `speculative=True` decodes with the
    engine's draft; outputs are token-identical to plain decoding either way."""

    name: str
    cfg: GenerationConfig
    tokenizer: Any
    draft_subset: list[int] | None

    def render(self, msgs: list[dict[str, str]]) -> str: ...

    def generate(self, prompts: list[str], batch_size: int | None = None) -> list[GenOutput]: ...

    def generate_one(self, prompt: str, speculative: bool = False) -> GenOutput: ...


def check_model_dir(path: str | Path) -> Path:
    """A saved model folder, or a clear error naming it."""
    if not (Path(path) / "config.json").is_file():
        raise InputError(f"model folder {path} not found (no config.json): run the stage that builds it")
    return Path(path)
