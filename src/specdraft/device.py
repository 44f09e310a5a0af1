"""Which settings apply on the device a stage runs on: one function, `resolve`.

Why: the committed local profile is tuned for a CPU (int8 draft weights, packed oneDNN
kernels, two threads) and the paper profile for GPUs (flash attention). A researcher who
clones the project on a GPU workstation and types `make repro` must get a valid run, not
an error from a CPU-only option; and a reader of the metrics must see which options took
effect. So each stage resolves (settings, device) once into what is applied, logs what was
not applied and why, and records both in its metrics (`applied`, `not_applied`). Nothing
else in the code decides per device.

- `runtime.device`: `auto` (CUDA when torch finds a GPU, else the CPU), `cpu` or `cuda`.
- CPU only: `generation.draft_quant` (torch dynamic int8), `generation.cpu_kernels` (the
  run's kernel path, decided once by the `kernels` stage: specdraft.generate.cpu_kernels).
- CUDA only: `generation.attn_implementation` `flash_attention_2` (needs the flash-attn
  package and bf16/fp16 weights); `auto` there means flash attention where it can run,
  else PyTorch's SDPA. On the CPU `auto` is SDPA.
- Both: `runtime.threads` (the CPU threads of the process).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from typing import Any

from specdraft.io import InputError

log = logging.getLogger("device")

DEVICES = ("auto", "cpu", "cuda")
ATTENTION = ("auto", "sdpa", "eager", "flash_attention_2")


def find_device(setting: str, cuda_available: bool | None = None) -> str:
    """'cpu' or 'cuda' for runtime.device. `cuda_available` is asked of torch unless given
    (tests pass it to plan a GPU run on a CPU machine)."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if setting == "auto":
        return "cuda" if cuda_available else "cpu"
    if setting == "cuda" and not cuda_available:
        raise InputError("params.yaml: runtime.device: cuda, but torch finds no CUDA GPU here (use auto or cpu)")
    return setting


def flash_attention_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a stage applies on `device`: the generation settings as they take effect
    (`generation`, e.g. draft_quant none on a GPU) and a record for the metrics."""

    device: str
    generation: Any  # specdraft.generate.api.GenerationConfig, resolved
    applied: dict[str, Any]
    not_applied: dict[str, str]  # setting -> why it was not applied

    def record(self) -> dict[str, Any]:
        return {"device": self.device, "applied": dict(self.applied), "not_applied": dict(self.not_applied)}


def resolve(gen: Any, device: str, kernels: str | None = None, drafts: bool = False, threads: int | None = None,
            flash_attn: bool | None = None) -> Plan:
    """The generation settings `gen` (GenerationConfig) as they apply on `device`.

    `kernels`: the run's CPU kernel path from the kernels stage ('default' or 'onednn');
    None keeps gen.cpu_kernels (an engine built outside the pipeline, e.g. the benchmark,
    where 'auto' times both at engine start). `drafts`: the stage loads drafts, so the
    draft-only settings are read (a stage without drafts does not read them: dvc.yaml
    declares exactly what each stage reads). Only the vLLM engine ignores the hf-engine
    options, and says so here too."""
    from specdraft.config import untraced

    applied: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    changes: dict[str, Any] = {}
    if threads is not None:
        applied["runtime.threads"] = threads
    hf = gen.engine == "hf"
    flash = flash_attention_available() if flash_attn is None else flash_attn

    attn = gen.attn_implementation
    if not hf:
        skipped["generation.attn_implementation"] = "vllm chooses its own attention backend"
        attn = "auto"
    elif device == "cuda":
        if attn == "auto":
            attn = "flash_attention_2" if flash and gen.dtype in ("bfloat16", "float16") else "sdpa"
        elif attn == "flash_attention_2" and not flash:
            raise InputError("params.yaml: generation.attn_implementation: flash_attention_2, but the flash-attn "
                             "package is not installed (make setup-gpu installs it where a wheel exists); use auto")
        applied["generation.attn_implementation"] = attn
    else:
        if attn == "flash_attention_2":
            skipped["generation.attn_implementation"] = "flash_attention_2 runs on CUDA only; sdpa on the CPU"
            attn = "sdpa"
        elif attn == "auto":
            attn = "sdpa"
        applied["generation.attn_implementation"] = attn
    changes["attn_implementation"] = attn

    cpu_kernels = gen.cpu_kernels
    if not hf:
        skipped["generation.cpu_kernels"] = "an hf-engine option; vllm runs its own kernels"
        cpu_kernels = "default"
    elif device != "cpu":
        skipped["generation.cpu_kernels"] = f"a CPU path; torch's own kernels on {device}"
        cpu_kernels = "default"
    else:
        cpu_kernels = kernels or cpu_kernels
        applied["generation.cpu_kernels"] = cpu_kernels
    changes["cpu_kernels"] = cpu_kernels

    if drafts:
        quant = gen.draft_quant
        if not hf and quant != "none":
            skipped["generation.draft_quant"] = "an hf-engine option; vllm runs the draft as saved"
            quant = "none"
        elif device != "cpu" and quant != "none":
            skipped["generation.draft_quant"] = f"{quant} is a CPU path (torch dynamic quantisation); none on {device}"
            quant = "none"
        else:
            applied["generation.draft_quant"] = quant
        changes["draft_quant"] = quant
    with untraced():  # replace() copies every field: that is not a use of them
        resolved = dataclasses.replace(gen, **changes)
    for key, why in skipped.items():
        log.info("%s not applied on %s: %s", key, device, why)
    return Plan(device=device, generation=resolved, applied=applied, not_applied=skipped)


def read_kernels(path: Any) -> str:
    """The kernel path the kernels stage decided for this run (models/kernels.json)."""
    import json
    from pathlib import Path

    f = Path(path)
    try:
        decision = json.loads(f.read_text())
        return decision["cpu_kernels"]
    except FileNotFoundError:
        raise InputError(f"{f}: not found: run the kernels stage (dvc repro kernels)") from None
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{f}: expected a JSON object with field 'cpu_kernels'") from None
