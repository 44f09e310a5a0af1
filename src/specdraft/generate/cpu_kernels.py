"""fp32 linear layers through oneDNN with weights packed once (the CPU fast path).

Why: batch-1 decoding is memory-bound, so verifying k+1 tokens should cost about one
decode step. torch's default fp32 linear goes through MKL sgemm, which on this project's
CPUs (AMD EPYC, AVX-512, no AMX) is compute-bound at 1-8 rows: a 3-token forward of the
135M target costs ~2 one-token steps (`make bench-generate` measures it). oneDNN, also
inside torch, stays flat as rows grow when its weight is reordered ("packed") once into
its blocked layout instead of at every call.

The only way to reach that from Python without `torch.compile` (80-140 s of compilation
per input shape on this CPU) is the pair of mkldnn ops that inductor's own CPU freezing
pass emits: `mkldnn._reorder_linear_weight` and `mkldnn._linear_pointwise`. They are not
a public API, so they live here and nowhere else; `check_available` raises a clear error
when a torch release drops them, and tests/test_cpu_fast.py fails loudly in that case.

`cpu_kernels: auto` picks between the two by timing them where the code runs
(`choose_kernels`): which is faster depends on the CPU (on an AMD EPYC without AMX the
packed path verifies 3 tokens at ~1 decode step and torch's default at ~2; on an Intel
Xeon with AMX the default path was the faster one), so no single committed choice is right
everywhere. The timings and the choice go into the evaluation's metrics.

Numerics: still fp32 with the same inputs, only summed in another order, so results
differ from the default path in the last bits; greedy speculative output stays equal to
greedy plain output of the same kernels (tests check every combination).
"""

from __future__ import annotations

from typing import Any


def check_available() -> None:
    """Raise when this torch build cannot run the oneDNN path (no mkldnn, or the ops moved)."""
    import torch

    from specdraft.io import InputError

    missing = [op for op in ("_reorder_linear_weight", "_linear_pointwise")
               if not hasattr(torch.ops.mkldnn, op)]
    if not torch.backends.mkldnn.is_available() or missing:
        raise InputError(f"generation.cpu_kernels: 'onednn' needs torch built with oneDNN and the ops "
                         f"torch.ops.mkldnn.{{_reorder_linear_weight,_linear_pointwise}} (missing: {missing}, "
                         f"torch {torch.__version__}); use cpu_kernels: default")


def _packed_linear_class():
    import torch

    class PackedLinear(torch.nn.Module):
        """nn.Linear with its fp32 weight packed once for oneDNN (inference only)."""

        def __init__(self, linear: torch.nn.Linear):
            super().__init__()
            w = linear.weight.detach().float().contiguous()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            # No batch-size hint: a hint of 1 makes 3-row inputs ~2x slower (measured).
            self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(w), persistent=False)
            bias = None if linear.bias is None else linear.bias.detach().float().contiguous()
            self.register_buffer("bias", bias, persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, onednn packed"

    return PackedLinear


def pack_linears(model: Any) -> list[tuple[Any, str, Any]]:
    """Replace every fp32 nn.Linear in `model` (a CPU module) by a packed oneDNN linear, in
    place; returns (parent, name, original) for each, which `unpack_linears` puts back. Tied
    weights are packed as separate copies."""
    import torch

    check_available()
    cls = _packed_linear_class()
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32 \
                    and child.weight.device.type == "cpu":
                setattr(parent, name, cls(child))
                swapped.append((parent, name, child))
    return swapped


def unpack_linears(swapped: list[tuple[Any, str, Any]]) -> None:
    """Undo `pack_linears`: the original nn.Linear modules go back in place."""
    for parent, name, child in swapped:
        setattr(parent, name, child)


def forward_ms(model: Any, rows: list[int], context: int = 128, reps: int = 12) -> dict[int, float]:
    """Median milliseconds of one forward of r new tokens after a `context`-token KV cache,
    for each r in `rows`: the shapes of a decode step (r = 1) and a verify (r = k + 1) on
    this model. The row counts take turns within each repetition, so a burst of machine
    noise hits them alike instead of one of them. Token values do not change the time, so
    the ids are arbitrary."""
    import statistics
    import time

    import torch
    from transformers import DynamicCache

    ids = torch.arange(100, 100 + context + max(rows), device=model.device).unsqueeze(0) % model.config.vocab_size
    times: dict[int, list[float]] = {r: [] for r in rows}
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        model(input_ids=ids[:, :context], cache=cache, use_cache=True, logits_to_keep=1)
        for rep in range(reps + 2):  # two warm-up rounds
            for r in rows:
                t = time.perf_counter()
                model(input_ids=ids[:, context:context + r], cache=cache, use_cache=True, logits_to_keep=r)
                if rep >= 2:
                    times[r].append(time.perf_counter() - t)
                cache.crop(-r)
    return {r: statistics.median(v) * 1000 for r, v in times.items()}


def choose_kernels(model: Any, rows: list[int]) -> dict[str, Any]:
    """`cpu_kernels: auto`: time torch's default path and the packed oneDNN path on `model`
    at the shapes in `rows`, keep the one with the smaller summed time (packed in place, or
    restored), and return the choice with both timings. With oneDNN unavailable the
    default path is kept without timing the other."""
    from specdraft.io import InputError

    default = forward_ms(model, rows)
    try:
        swapped = pack_linears(model)
    except InputError as e:
        return {"choice": "default", "rows": rows, "forward_ms": {"default": default}, "onednn_unavailable": str(e)}
    onednn = forward_ms(model, rows)
    choice = "onednn" if sum(onednn.values()) < sum(default.values()) else "default"
    if choice == "default":
        unpack_linears(swapped)
    return {"choice": choice, "rows": rows, "forward_ms": {"default": default, "onednn": onednn}}
