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

`cpu_kernels: auto` picks between the two by timing them where the code runs: which is
faster depends on the CPU (on an AMD EPYC without AMX the packed path verifies 3 tokens
at ~1 decode step and torch's default at ~2; on an Intel Xeon with AMX the two were within
noise), so no single committed choice is right everywhere. Because the paths round
differently, the choice is made once per run and machine, by the `kernels` stage
(specdraft.stages.kernels), with the paths interleaved in the timing and a margin in
oneDNN's disfavour (`decide`); every stage whose outputs feed another reads that one
decision, so distillation and evaluation cannot run on different paths.

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


def forward_ms(model: Any, rows: list[int], context: int = 128, reps: int = 12, warmup: int = 2) -> dict[int, float]:
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
        for rep in range(reps + warmup):
            for r in rows:
                t = time.perf_counter()
                model(input_ids=ids[:, context:context + r], cache=cache, use_cache=True, logits_to_keep=r)
                if rep >= warmup:
                    times[r].append(time.perf_counter() - t)
                cache.crop(-r)
    return {r: statistics.median(v) * 1000 for r, v in times.items()}


# oneDNN must beat torch's default path by this share of the summed probe time to be
# chosen. Why a margin: the two paths differ in the last bits, which can flip a greedy
# near-tie, so the choice decides results, not only speed; where the paths are within
# noise of each other (an Intel Xeon with AMX: 87.9 vs 87.8 ms) a plain `min` is a coin
# toss between runs. Where oneDNN matters (AMD EPYC without AMX: ~45 % faster) it wins clearly.
ONEDNN_MARGIN = 0.10


def probe_paths(model: Any, rows: list[int], reps: int = 12, context: int = 128) -> dict[str, Any]:
    """Median forward milliseconds of both paths on `model` at each row count, the two
    paths taking turns within every repetition (and the row counts within each path), so a
    burst of machine noise or a frequency ramp hits both alike. The model is left on
    torch's default path. {'forward_ms': {'default': {r: ms}, 'onednn': {r: ms}}} or, where
    this torch cannot pack, only 'default' and the reason."""
    from specdraft.io import InputError

    try:
        swapped = pack_linears(model)
    except InputError as e:
        return {"rows": rows, "forward_ms": {"default": forward_ms(model, rows, context, reps)},
                "onednn_unavailable": str(e)}
    packed = [(parent, name, getattr(parent, name)) for parent, name, _ in swapped]
    samples: dict[str, list[dict[int, float]]] = {"default": [], "onednn": []}
    try:
        for rep in range(reps):
            order = ("default", "onednn") if rep % 2 == 0 else ("onednn", "default")
            for path in order:
                unpack_linears(swapped if path == "default" else packed)
                samples[path].append(forward_ms(model, rows, context, reps=1, warmup=1))
    finally:
        unpack_linears(swapped)
    import statistics

    return {"rows": rows, "reps": reps,
            "forward_ms": {p: {r: statistics.median(s[r] for s in v) for r in rows} for p, v in samples.items()}}


def decide(probe: dict[str, Any], margin: float = ONEDNN_MARGIN) -> str:
    """'onednn' when its summed time is below (1 - margin) of the default path's, else
    'default' (see ONEDNN_MARGIN)."""
    t = probe["forward_ms"]
    if "onednn" not in t:
        return "default"
    return "onednn" if sum(t["onednn"].values()) < (1 - margin) * sum(t["default"].values()) else "default"


def choose_kernels(model: Any, rows: list[int], timer: Any = probe_paths) -> dict[str, Any]:
    """Probe both paths on `model` at `rows` (`timer`: probe_paths, or a test's stand-in),
    apply the decision in place (packed, or left on the default path), and return the
    probe with its `choice`. The pipeline decides once per run in the kernels stage; the
    benchmark and engines built by hand with cpu_kernels: auto decide here."""
    probe = dict(timer(model, rows))
    probe["choice"] = decide(probe)
    probe["margin"] = ONEDNN_MARGIN
    if probe["choice"] == "onednn":
        pack_linears(model)
    return probe
