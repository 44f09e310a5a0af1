"""The GPUs a plan can be made for: memory as nvidia-smi reports it, dense bf16 tensor
throughput and memory bandwidth from the vendors' data sheets (SXM parts where there are
two), and the utilisation a plan assumes.

Utilisation: training at 40 % of peak bf16 FLOPs (model FLOPs utilisation reported for
LoRA/SFT of 7-70B models with FlashAttention-2 on H100 and A100 is 35-50 %); decoding
at 60 % of memory bandwidth (a decode step reads every weight once; vLLM reaches
60-80 % on a batch of 16). These turn counted FLOPs and bytes into hours: an estimate to
plan a lease with, not a measurement.
"""

from __future__ import annotations

import dataclasses

MFU = 0.40  # training: share of peak bf16 FLOPs
BANDWIDTH_USE = 0.60  # decoding: share of peak memory bandwidth
HEADROOM = 0.10  # a stage fits when its peak leaves at least this share of the GPU free


@dataclasses.dataclass(frozen=True)
class GPU:
    name: str
    memory_mib: int  # nvidia-smi's total
    bf16_tflops: float  # dense
    bandwidth_tbs: float

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def usable_gib(self) -> float:
        return self.memory_gib * (1 - HEADROOM)


GPUS = {g.name: g for g in (
    GPU("h100-80", 81559, 989.0, 3.35),
    GPU("h200", 143771, 989.0, 4.8),
    GPU("a100-80", 81920, 312.0, 2.04),
    GPU("a100-40", 40960, 312.0, 1.56),
    GPU("a40-48", 46068, 149.7, 0.696),
    GPU("l40s-48", 46068, 362.0, 0.864),
)}


def detect() -> tuple[GPU, int]:
    """(the visible GPU, how many): memory as torch reports it; throughput and bandwidth of
    the table's part whose name it carries (H100 figures for a part the table lacks, said
    in the name). Refuses when torch sees no CUDA GPU."""
    import torch

    from specdraft.io import InputError

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not n:
        raise InputError("no CUDA GPU visible to plan for: name one with --gpu (GPU=...), one of "
                         f"{sorted(GPUS)}")
    props = torch.cuda.get_device_properties(0)
    name = props.name.lower().replace(" ", "")
    known = {"h200": "h200", "h100": "h100-80", "a100": "a100-80" if props.total_memory > 60 * 2**30 else "a100-40",
             "a40": "a40-48", "l40s": "l40s-48"}
    like = next((GPUS[v] for k, v in known.items() if k in name), None)
    base = like or GPUS["h100-80"]
    label = f"{props.name} (visible)" if like else f"{props.name} (visible; H100 throughput assumed)"
    return GPU(label, props.total_memory // 2**20, base.bf16_tflops, base.bandwidth_tbs), n


def gpu(name: str) -> GPU:
    from specdraft.io import InputError

    if name not in GPUS:
        raise InputError(f"no GPU named {name!r} in specdraft.plan.gpus; there are {sorted(GPUS)}")
    return GPUS[name]
