"""The transformers engine (CPU and GPU).

Batched greedy generation with left padding, and batch-1 decoding, plain or speculative,
with one or several named drafts:

- `decode_loop: specdraft` (default): specdraft.generate.greedy's lean loop, which counts
  rounds, proposed and accepted tokens exactly.
- `decode_loop: transformers`: `generate(assistant_model=...)` with a fixed number of
  draft tokens per round (the default schedule is dynamic, which would make the draft
  length a moving target); acceptance is counted with forward hooks on the two models
  (public API, no patching): rounds = target forwards, proposed = draft forwards,
  accepted = generated tokens - rounds.

Every model is loaded with an explicit greedy generation config (`greedy`): a model's own
generation_config.json (Qwen2.5-Instruct: sampling defaults and repetition_penalty 1.05)
would otherwise change what batched `generate()` decodes, so that batched answers,
batch-1 answers and the simulation would disagree.

torch and transformers are imported when an engine is built, not at import.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from specdraft.generate.api import GenerationConfig, GenOutput, check_model_dir
from specdraft.io import InputError
from specdraft.prompts import render


def greedy(model: Any) -> None:
    """Replace `model`'s generation config by plain greedy decoding with its own special
    token ids: nothing else from the checkpoint's generation_config.json applies."""
    from transformers import GenerationConfig

    old = model.generation_config
    model.generation_config = GenerationConfig(do_sample=False, num_beams=1, bos_token_id=old.bos_token_id,
                                               eos_token_id=old.eos_token_id, pad_token_id=old.pad_token_id)


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class _Counter:
    """Counts forward calls of a module, and the time spent in them, with public hooks."""

    def __init__(self, module: Any):
        self.n = 0
        self.seconds = 0.0
        self._t0 = 0.0
        self.handles = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _pre(self, *_: Any) -> None:
        self._t0 = time.perf_counter()

    def _post(self, *_: Any) -> None:
        self.n += 1
        self.seconds += time.perf_counter() - self._t0

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class HFEngine:
    """transformers engine; drafts enable speculative decoding (batch 1)."""

    name = "hf"
    holds_all_drafts = True  # every draft sits beside the target: timed runs alternate per prompt

    def __init__(self, target_dir: str | Path, draft_dir: str | Path | dict[str, Path] | None,
                 cfg: GenerationConfig, device: str | None = None,
                 draft_data: tuple[Sequence[str], Sequence[str]] | None = None):
        """`draft_dir`: one draft folder (named "draft"), or {name: folder} for several (each
        request names one). `draft_data`: (answers, questions) the drafts were trained on;
        with generation.draft_vocab > 0 their heads keep the most frequent tokens of these."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from specdraft.generate.models import check_tokenizers, torch_dtype

        dirs = {} if draft_dir is None else dict(draft_dir) if isinstance(draft_dir, dict) else {"draft": draft_dir}
        for d in (target_dir, *dirs.values()):
            check_model_dir(d)
        self.cfg = cfg
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.cpu_kernels = cfg.cpu_kernels if self.device == "cpu" else "default"
        dt = torch_dtype(cfg.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(target_dir, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # attention as specdraft.device.resolve applied it (auto: transformers' default)
        attn = {} if cfg.attn_implementation == "auto" else {"attn_implementation": cfg.attn_implementation}
        self.model = AutoModelForCausalLM.from_pretrained(target_dir, dtype=dt, **attn).to(self.device).eval()
        greedy(self.model)
        self.eos = eos_ids(self.model, self.tokenizer)
        self.vocab_size = self.model.get_output_embeddings().out_features
        self.kernel_probe: dict[str, Any] | None = None  # cpu_kernels: auto's timings and choice
        if self.cpu_kernels == "auto":  # an engine built by hand (the pipeline decides in its kernels stage)
            from specdraft.generate.cpu_kernels import choose_kernels

            # the shapes this engine will run: a decode step, and a verify (drafts) or a
            # batched step (no drafts)
            other = cfg.num_speculative_tokens + 1 if dirs else cfg.batch_size
            self.kernel_probe = choose_kernels(self.model, sorted({1, other}))
            self.cpu_kernels = self.kernel_probe["choice"]
        elif self.cpu_kernels == "onednn":
            from specdraft.generate.cpu_kernels import pack_linears

            pack_linears(self.model)
        self.drafts: dict[str, Any] = {}
        self.draft_subset: list[int] | None = None  # token ids the drafts may propose (None: all)
        if dirs and self.cfg.draft_vocab:
            from specdraft.generate import draft as d

            if draft_data is None:
                raise InputError("generation.draft_vocab > 0 needs the draft's training data (distilled answers)")
            ranking = d.token_ranking(self.tokenizer, *draft_data)
            self.draft_subset = d.vocab_subset(self.tokenizer, ranking, self.cfg.draft_vocab, self.vocab_size)
        from specdraft.generate import eagle

        for name, path in dirs.items():
            if eagle.is_head_dir(path):  # an EAGLE-3 head: drafts from the target's features, its own vocabulary
                self.drafts[name] = eagle.load_head(path, self.model)
                continue
            check_tokenizers(self.tokenizer, AutoTokenizer.from_pretrained(path))
            draft = AutoModelForCausalLM.from_pretrained(path, dtype=dt, **attn).to(self.device).eval()
            greedy(draft)
            gc = draft.generation_config
            gc.num_assistant_tokens = cfg.num_speculative_tokens
            gc.num_assistant_tokens_schedule = "constant"  # a fixed draft length
            gc.assistant_confidence_threshold = 0.0  # never stop drafting early
            self.drafts[name] = self._cheapen_draft(draft)
        self._torch = torch
        from specdraft.generate.greedy import NO_PREFIX

        self.prefix = NO_PREFIX  # cache_prefix: the shared prompt prefix's caches
        self._features: dict[tuple, Any] = {}  # an EAGLE head's simulations: the target's features per answer

    def close(self) -> None:
        """Drop the models (the process's memory is returned as their tensors are freed)."""
        self.model = None
        self.drafts = {}
        import gc

        gc.collect()
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def __enter__(self) -> HFEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cheapen_draft(self, draft: Any) -> Any:
        """Restricted head, int8 weights, packed kernels, as generation.* asks (see
        specdraft.generate.draft); the target is never changed by these."""
        from specdraft.generate import draft as d

        if self.cfg.draft_quant == "int8" and self.device != "cpu":  # stages resolve it first (specdraft.device)
            raise InputError("generation.draft_quant: int8 is a CPU path (torch dynamic quantisation); use none")
        return d.cheapen(draft, self.draft_subset, self.cfg.draft_quant, self.cpu_kernels)

    # ------------------------------------------------------------------ helpers
    def render(self, msgs: list[dict[str, str]]) -> str:
        return render(self.tokenizer, msgs)

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            self._torch.cuda.synchronize()

    def _gen_kwargs(self) -> dict[str, Any]:
        # the models' generation configs are plain greedy (see `greedy`)
        return {"max_new_tokens": self.cfg.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id}

    def _finish(self, new_ids: Sequence[int], prompt_tokens: int, latency: float) -> GenOutput:
        ids = list(new_ids)
        cut = next((i + 1 for i, t in enumerate(ids) if t in self.eos), None)
        if cut is not None:
            ids = ids[:cut]
        truncated = cut is None and len(ids) >= self.cfg.max_new_tokens
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return GenOutput(text=text, token_ids=ids, prompt_tokens=prompt_tokens, output_tokens=len(ids),
                         latency_s=latency, truncated=truncated)

    # ---------------------------------------------------------------- generation
    def generate(self, prompts: list[str], draft: str | None = None) -> list[GenOutput]:
        """Plain greedy generation in batches of generation.batch_size (left padding). Each
        output's latency is its batch's wall time. Speculative decoding is batch 1 here."""
        if draft is not None:
            raise InputError("the hf engine decodes speculatively at batch 1 only (generate_one)")
        bs = self.cfg.batch_size
        out: list[GenOutput] = []
        for i in range(0, len(prompts), bs):
            chunk = prompts[i:i + bs]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            self._sync()
            t = time.perf_counter()
            with self._torch.inference_mode():
                seq = self.model.generate(**enc, **self._gen_kwargs())
            self._sync()
            dt = time.perf_counter() - t
            width = enc["input_ids"].shape[1]
            for j in range(len(chunk)):
                out.append(self._finish(seq[j, width:].tolist(), int(enc["attention_mask"][j].sum()), dt))
        return out

    def _pick(self, draft: str) -> Any:
        if draft not in self.drafts:
            raise InputError(f"no draft {draft!r}; loaded: {sorted(self.drafts)}")
        return self.drafts[draft]

    def generate_one(self, prompt: str, draft: str | None = None) -> GenOutput:
        """One request at batch 1, plain (`draft=None`) or speculative with the named draft,
        with acceptance counts."""
        speculative = draft is not None
        dm = self._pick(draft) if speculative else None
        enc = self.tokenizer([prompt], return_tensors="pt", add_special_tokens=False).to(self.device)
        if self.cfg.decode_loop == "specdraft":
            return self._generate_lean(enc["input_ids"][0].tolist(), dm)
        kw = self._gen_kwargs()
        counters = []
        if speculative:
            kw["assistant_model"] = dm
            counters = [_Counter(self.model), _Counter(dm)]
        try:
            self._sync()
            t = time.perf_counter()
            with self._torch.inference_mode():
                seq = self.model.generate(**enc, **kw)
            self._sync()
            dt = time.perf_counter() - t
        finally:
            for c in counters:
                c.remove()
        res = self._finish(seq[0, enc["input_ids"].shape[1]:].tolist(), enc["input_ids"].shape[1], dt)
        if speculative:
            rounds, proposed = counters[0].n, counters[1].n
            res.rounds, res.proposed = rounds, proposed
            res.draft_forward_s = counters[1].seconds
            res.target_forward_s = counters[0].seconds
            # each round yields its accepted draft tokens plus one token from the target
            res.accepted = max(0, min(proposed, res.output_tokens - rounds))
            res.accepted_hist = None  # assisted generation does not say how each round went
        return res

    def cache_prefix(self, prompts: list[str]) -> int:
        """Prefill the longest token prefix all `prompts` share, once, for the target and
        every draft (generation.prefix_cache, the `specdraft` loop): the batch-1 decodes and
        simulations of prompts that extend it start from copies of these caches. Called once
        per engine with every prompt it will see, so that plain, speculative and simulated
        runs split each prompt at the same token. Returns the prefix's length in tokens."""
        from specdraft.generate.greedy import NO_PREFIX, common_prefix, prefill

        if not (self.cfg.prefix_cache and self.cfg.decode_loop == "specdraft"):
            return 0
        ids = common_prefix([self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts])
        self.prefix = prefill([self.model, *self.drafts.values()], ids) if ids else NO_PREFIX
        self._features = {}
        return len(ids)

    def _generate_lean(self, prompt_ids: list[int], draft: Any) -> GenOutput:
        from specdraft.generate.greedy import decode

        self._sync()
        t = time.perf_counter()
        d = decode(self.model, prompt_ids, self.cfg.max_new_tokens, self.eos, draft, self.cfg.num_speculative_tokens,
                   self.prefix)
        self._sync()
        res = self._finish(d.token_ids, len(prompt_ids), time.perf_counter() - t)
        if draft is not None:
            res.rounds, res.proposed, res.accepted, res.accepted_hist = d.rounds, d.proposed, d.accepted, d.hist
            res.draft_forward_s, res.target_forward_s = d.draft_s, d.target_s
        return res

    def simulate(self, prompt_ids: list[int], target_ids: list[int], draft: str, k: int | None = None) -> Any:
        """Exact speculative-decoding counts of a draft on a known greedy target output,
        without running the target (specdraft.generate.greedy.simulate), with k draft
        tokens per round (default: generation.num_speculative_tokens)."""
        from specdraft.generate import eagle
        from specdraft.generate.greedy import head_features, simulate

        dm = self._pick(draft)
        feats = None
        if eagle.is_head(dm):  # one teacher-forced target pass per answer, kept for every k of a sweep
            key = (tuple(dm.aux), tuple(prompt_ids), tuple(target_ids))
            if key not in self._features:
                self._features[key] = head_features(self.model, prompt_ids, target_ids, dm.aux, self.prefix)
            feats = self._features[key]
        return simulate(dm, prompt_ids, target_ids, self.eos, k or self.cfg.num_speculative_tokens,
                        self.cfg.max_new_tokens, self.prefix, target=self.model, features=feats)

    def forward_ms(self, rows: list[int]) -> dict[int, float]:
        """The target's forward time for r new tokens (a decode step at r = 1, a verify of
        k drafts at r = k + 1) with the kernels in use (specdraft.generate.cpu_kernels)."""
        from specdraft.generate.cpu_kernels import forward_ms

        return forward_ms(self.model, rows)

    def speculative_pass(self, prompts: list[str], plain: list[GenOutput], draft: str) -> list[GenOutput]:
        """Acceptance of `draft` on each prompt, simulated exactly against its plain output:
        greedy speculative decoding returns the plain tokens, so only the counts are new."""
        out = []
        for prompt, p in zip(prompts, plain, strict=True):
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            d = self.simulate(ids, p.token_ids, draft)
            out.append(GenOutput(text=p.text, token_ids=p.token_ids, prompt_tokens=len(ids),
                                 output_tokens=p.output_tokens, latency_s=0.0, truncated=p.truncated,
                                 rounds=d.rounds, proposed=d.proposed, accepted=d.accepted, accepted_hist=d.hist,
                                 simulated=True))
        return out
