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

from specdraft.config import setting
from specdraft.device import ATTENTION
from specdraft.generate.models import DTYPES
from specdraft.io import InputError

ENGINES = ("hf", "vllm")
LOOPS = ("specdraft", "transformers")
KERNELS = ("default", "onednn", "auto")  # specdraft.generate.cpu_kernels
QUANT = ("none", "int8")  # specdraft.generate.draft


@dataclasses.dataclass(frozen=True)
class VLLMSettings:
    max_num_seqs: int = setting(16, ge=1)
    max_model_len: int = setting(2048, ge=16)
    gpu_memory_utilization: float = setting(0.9, gt=0, le=1)
    tensor_parallel_size: int = setting(1, ge=1)
    # The draft's own tensor parallelism (vLLM speculative_config): Qwen2.5-0.5B's 14 heads
    # do not split over 4 GPUs, so a 4-way target keeps its draft on one.
    draft_tensor_parallel_size: int = setting(1, ge=1)
    enforce_eager: bool = False


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Section `generation` of params.yaml: shared by distillation, evaluation, benchmark."""

    engine: str = setting("hf", choices=ENGINES)
    max_new_tokens: int = setting(256, ge=1)
    batch_size: int = setting(8, ge=1)  # batched passes: plain answers, distillation, vLLM's speculative pass
    num_speculative_tokens: int = setting(2, ge=1)
    dtype: str = setting("float32", choices=DTYPES)
    # hf engine, batch-1 decoding: `specdraft` (specdraft.generate.greedy, plain and
    # speculative in one lean loop) or `transformers` (model.generate / assisted generation).
    decode_loop: str = setting("specdraft", choices=LOOPS)
    # hf engine, the `specdraft` loop: the prompts' shared first tokens (chat template,
    # system prompt, few-shot turns) are prefilled once per engine and every batch-1
    # decode, plain or speculative, starts from a copy of that KV cache (vLLM: its own
    # prefix caching). Off: each decode prefills its whole prompt.
    prefix_cache: bool = True
    # hf engine on a CPU: `onednn` packs fp32 linear weights once for oneDNN
    # (specdraft.generate.cpu_kernels); `default` is torch's own path; `auto` times both on
    # the target once per run (the kernels stage) and keeps the faster by a margin. Not applied on a GPU.
    cpu_kernels: str = setting("default", choices=KERNELS)
    # The draft only (specdraft.generate.draft): dynamic int8 weights (CPU), and a head over
    # the draft_vocab most frequent tokens of its training data (0: the full vocabulary).
    draft_quant: str = setting("none", choices=QUANT)
    draft_vocab: int = setting(0, ge=0)
    # hf engine: transformers' attention; `auto`: flash attention on CUDA where the package
    # and dtype allow, else SDPA (specdraft.device.resolve applies it per device)
    attn_implementation: str = setting("auto", choices=ATTENTION)
    vllm: VLLMSettings = dataclasses.field(default_factory=VLLMSettings)


@dataclasses.dataclass
class GenOutput:
    """One generated answer. Speculative fields are None for plain decoding.

    `accepted_hist[j]` counts the drafting rounds that accepted exactly j draft tokens (j =
    0..k): the per-request record vLLM keeps, from which every acceptance figure follows
    (specdraft.evaluate.stats.acceptance_stats). `simulated`: the counts come from the exact
    simulation on the known plain output, not from decoding (hf engine)."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    output_tokens: int
    latency_s: float
    truncated: bool
    rounds: int | None = None
    proposed: int | None = None
    accepted: int | None = None
    accepted_hist: list[int] | None = None
    draft_forward_s: float | None = None  # time inside the draft's forward calls (hf engine)
    target_forward_s: float | None = None  # time inside the target's (verify) forward calls
    simulated: bool = False

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("token_ids")
        return d


class Engine(Protocol):
    """Greedy generation from rendered prompts, plain (`draft=None`) or speculative with a
    named draft; speculative output is token-identical to plain output (checked by the
    evaluation). An engine is a context manager: leaving it releases its memory.

    `holds_all_drafts`: every draft is loaded beside the target at once (hf), so timed runs
    of several configurations can alternate per prompt; vLLM builds one engine per draft,
    one alive at a time, so its work is grouped by configuration instead."""

    name: str
    cfg: GenerationConfig
    tokenizer: Any
    draft_subset: list[int] | None
    holds_all_drafts: bool

    def render(self, msgs: list[dict[str, str]]) -> str: ...

    def generate(self, prompts: list[str], draft: str | None = None) -> list[GenOutput]: ...

    def generate_one(self, prompt: str, draft: str | None = None) -> GenOutput: ...

    def speculative_pass(self, prompts: list[str], plain: list[GenOutput], draft: str) -> list[GenOutput]:
        """Acceptance of `draft` on every prompt: exact simulation against the known plain
        outputs (hf), or decoded in a batch (vLLM, whose outputs are then its own)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...


def check_model_dir(path: str | Path) -> Path:
    """A saved model folder, or a clear error naming it."""
    if not (Path(path) / "config.json").is_file():
        raise InputError(f"model folder {path} not found (no config.json): run the stage that builds it")
    return Path(path)
