"""Run one step of a stage's real code at real shapes without the memory or the GPU, and
count what it holds and computes.

Why: the paper profile's GPU stages (a 14B target, 2048-token examples, 152k-token
vocabularies) cannot run on the CPU machines the project is built on, and arithmetic by
hand missed what the code actually keeps alive (that is how the EAGLE head's training
came to need more than 80 GB). Here the stage's own model classes, adapters, losses and
optimizer run on `meta` tensors, which carry shapes and dtypes but no data, under
torch's MemTracker (torch.distributed._tools.mem_tracker), which records every live
tensor by category (parameters, gradients, optimizer state, activations, temporaries)
and keeps the breakdown at the peak; FlopCounterMode counts the same step's FLOPs.

What differs from a CUDA run, and what is done about it (each stated in the plan):
- attention: PyTorch's SDPA on meta tensors decomposes into the math path, which
  materialises every T x T score matrix in fp32. On a GPU with bf16 inputs SDPA runs the
  flash or memory-efficient kernel, which keeps only the output and a per-row logsumexp
  (O(T)). `cuda_kernels()` swaps SDPA for a stand-in with exactly that footprint
  (`FlashAttention`); its FLOPs are counted by formula (4*B*H*Tq*Tk*D forward, halved
  when causal; backward 2.5x forward, as FlashAttention-2's paper counts).
- transformers' mask helpers skip work when a mask is all ones (a data-dependent check):
  `masking_utils.is_tracing` is made to say yes, so the mask is built as with padding.
- MemTracker installs a gradient hook on every parameter; frozen ones (a LoRA base)
  refuse hooks, so hooks go on trainable parameters only (`Tracker`).
- not modelled: the CUDA context and cuBLAS/NCCL workspaces (a fixed allowance,
  `CUDA_OVERHEAD_GIB`) and allocator fragmentation (the 10 % headroom a plan demands).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

GIB = 1024 ** 3
CUDA_OVERHEAD_GIB = 1.0  # CUDA context (~0.5 GiB on H100 with torch 2.x) + cuBLAS/NCCL workspaces
CATEGORIES = ("Parameter", "Buffer", "Gradient", "Optstate", "Activation", "Temp", "Other")


@dataclasses.dataclass
class Footprint:
    """Peak memory of one step by category (bytes) and its FLOPs."""

    peak: dict[str, float]
    flops: float

    @property
    def total(self) -> float:
        return sum(self.peak.get(c, 0.0) for c in CATEGORIES)

    def gib(self) -> dict[str, float]:
        return {c: round(self.peak.get(c, 0.0) / GIB, 3) for c in CATEGORIES if self.peak.get(c, 0.0)}


def _tracker_class():
    from torch.distributed._tools import mem_tracker as mt

    class Tracker(mt.MemTracker):
        """MemTracker whose gradient hooks go on trainable parameters only, and which keeps
        the step's peak only: its per-module peaks loop over every tracked module at every
        operator (minutes for a 48-layer model; a plan needs the step's peak alone)."""

        def _update_peak_stats(self, peak_state):
            for dev, snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < snap[mt._TOTAL_KEY]:
                    self._peak_mem[dev] = snap[mt._TOTAL_KEY]
                    self._peak_mem_snap[dev] = dict(snap)

        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            mem = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
            if install_grad_hooks:
                for p in module.parameters():
                    if p.requires_grad and self._param_to_grad_hook_handles.get(p, None) is None:
                        def grad(g, tracker=self):
                            tracker._update_and_maybe_create_winfos(g, mt._MemRefType.GRAD)

                        self._param_to_grad_hook_handles[p] = (
                            p.register_hook(grad), p.register_post_accumulate_grad_hook(lambda q, h=grad: h(q.grad)))
            return mem

    return Tracker


_ATTN_FLOPS = [0.0]  # attention FLOPs counted by formula while cuda_kernels() is active


def _flash_function():
    import torch

    class FlashAttention(torch.autograd.Function):
        """The memory a CUDA flash / memory-efficient SDPA kernel holds: the output, and for
        backward q, k, v, the output and a float32 logsumexp per query row; backward
        returns dq, dk, dv. No T x T matrix exists at any time."""

        @staticmethod
        def forward(ctx, q, k, v, causal):
            b, h, tq, d = q.shape
            out = torch.empty(b, h, tq, v.shape[-1], dtype=q.dtype, device=q.device)
            lse = torch.empty(b, h, tq, dtype=torch.float32, device=q.device)
            ctx.save_for_backward(q, k, v, out, lse)
            fwd = 4.0 * b * h * tq * k.shape[-2] * d * (0.5 if causal else 1.0)
            _ATTN_FLOPS[0] += fwd
            ctx.fwd = fwd
            return out

        @staticmethod
        def backward(ctx, grad):
            q, k, v, _, _ = ctx.saved_tensors
            _ATTN_FLOPS[0] += 2.5 * ctx.fwd
            return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), None

    return FlashAttention


@contextlib.contextmanager
def cuda_kernels() -> Iterator[None]:
    """Within: SDPA on meta tensors has a CUDA flash kernel's footprint, and transformers'
    mask helpers take the path they take with a padded batch (see the module docstring)."""
    import torch
    import torch.nn.functional as F
    from transformers import masking_utils

    flash = _flash_function()
    real_sdpa, real_tracing = F.scaled_dot_product_attention, masking_utils.is_tracing

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if q.device.type != "meta":
            return real_sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                             enable_gqa=enable_gqa)
        return flash.apply(q, k, v, is_causal or attn_mask is not None)

    F.scaled_dot_product_attention = sdpa
    torch.nn.functional.scaled_dot_product_attention = sdpa
    masking_utils.is_tracing = lambda *_a, **_k: True
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real_sdpa
        masking_utils.is_tracing = real_tracing


def measure(step: Callable[[], Any], track: list[Any]) -> Footprint:
    """Run `step` once under the tracker and the FLOP counter. `track`: modules and
    optimizers alive before the step (their parameters and states count from the start).
    Every device's figures are summed: a meta run has one device."""
    from torch.utils.flop_counter import FlopCounterMode

    tracker = _tracker_class()()
    tracker.track_external(*track)
    _ATTN_FLOPS[0] = 0.0
    counter = FlopCounterMode(display=False)
    with tracker, counter:
        step()
    snap = tracker.get_tracker_snapshot("peak")
    peak = {c: 0.0 for c in CATEGORIES}
    for per_device in snap.values():
        for k, v in per_device.items():
            name = getattr(k, "value", k)
            if name in peak:
                peak[name] += float(v)
    return Footprint(peak, float(counter.get_total_flops()) + _ATTN_FLOPS[0])


def gib(x: float) -> float:
    return round(x / GIB, 2)


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))
