"""Evaluate one configuration on one scenario's test set.

A configuration is a target (base or trained for a style), a style (its system prompt)
and optionally a draft (trained or base). Every configuration decodes greedily with the
same max_new_tokens, one request at a time (latency mode), and is scored by the shared
answer checker.

Speedup is measured honestly: a speculative configuration also times the same target
without the draft on the same prompts in the same process, alternating plain and
speculative per prompt so that machine noise hits both; speedup = median of per-prompt
time ratios (plain / speculative) with a bootstrap CI. The plain twin's output is also
the reference for exactness: greedy speculative decoding must not change any output, so
differing outputs are counted and listed with their first diverging token. Throughput
mode (a batch of eval.batch_size requests) is measured with the vllm engine.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from tqdm import tqdm

from specdraft.answers import PATH_NONE, judge
from specdraft.evaluate.stats import median_ci, percentile, wilson
from specdraft.generate.engine import GenerationConfig, GenOutput, alpha_from_acceptance, leviathan_speedup, make_engine
from specdraft.generate.resume import Resumable
from specdraft.io import InputError
from specdraft.prompts import PromptsConfig, messages

TARGETS = ("base", "trained")
DRAFTS = ("trained", "base")


@dataclasses.dataclass(frozen=True)
class Variant:
    """A speculative configuration's draft: 'trained' (distilled) or 'base' (untrained)."""

    draft: str


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Section `eval` of params.yaml."""

    variants: dict[str, Variant]
    base_style: str = "cot"  # the untrained target is prompted with the CoT prompt
    batch_size: int = 16  # throughput mode (vllm)
    throughput: bool = True
    max_diverging_share: float = 0.01
    seed: int = 0
    comparisons: list[list[str]] = dataclasses.field(default_factory=list)


def config_name(style: str, variant: str) -> str:
    """'cod' + 'sd' -> 'cod_sd' (plain configurations are named by their style, the
    untrained target is 'base')."""
    return f"{style}_{variant}"


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _row(r: dict[str, Any], o: GenOutput) -> dict[str, Any]:
    j = judge(o.text, r["answer"])
    return {"id": r["id"], "answer": r["answer"], "output": o.text, "extracted": j.answer,
            "extraction_path": j.path, "correct": j.correct, "output_tokens": o.output_tokens,
            "truncated": o.truncated, "latency_s": o.latency_s}


def run_config(target_dir: Path, draft_dir: Path | None, rows: list[dict[str, Any]], style: str,
               prompts: PromptsConfig, gen: GenerationConfig, resume: Resumable,
               draft_data: tuple[list[str], list[str]] | None = None) -> list[dict[str, Any]]:
    """Per-sample predictions, resumable; speculative rows carry their plain twin.
    `draft_data`: the draft's training (answers, questions), for a restricted draft head."""
    todo = [r for r in rows if r["id"] not in resume.done]
    if not todo:
        return [resume.done[r["id"]] for r in rows]
    if draft_dir is None:
        engine = make_engine(target_dir, None, gen)
        for r in tqdm(todo, desc=f"eval {target_dir.name}", unit="q"):
            prompt = engine.render(messages(prompts, style, r["question"]))
            resume.add(_row(r, engine.generate_one(prompt, speculative=False)))
    elif gen.engine == "hf":
        engine = make_engine(target_dir, draft_dir, gen, draft_data)
        subset = set(engine.draft_subset) if engine.draft_subset is not None else None
        for r in tqdm(todo, desc=f"eval {target_dir.name}+draft", unit="q"):
            prompt = engine.render(messages(prompts, style, r["question"]))
            plain = engine.generate_one(prompt, speculative=False)  # alternate per prompt: paired timings
            spec = engine.generate_one(prompt, speculative=True)
            row = _spec_row(r, plain, spec, engine.tokenizer)
            # coverage of the restricted draft head: the target's tokens it could propose
            row["plain_tokens_in_draft_vocab"] = (plain.output_tokens if subset is None
                                                  else sum(t in subset for t in plain.token_ids))
            resume.add(row)
    else:
        # vLLM builds an engine with or without its draft, and two 14B engines rarely fit
        # one GPU: a plain pass, then a speculative pass, still one request at a time.
        plain_engine = make_engine(target_dir, None, gen)
        texts = [plain_engine.render(messages(prompts, style, r["question"])) for r in todo]
        plains = [plain_engine.generate_one(t, speculative=False) for t in tqdm(texts, desc="eval plain")]
        del plain_engine
        engine = make_engine(target_dir, draft_dir, gen)
        for r, t, plain in zip(todo, texts, plains, strict=True):
            resume.add(_spec_row(r, plain, engine.generate_one(t, speculative=True), engine.tokenizer))
    return [resume.done[r["id"]] for r in rows]


def _spec_row(r: dict[str, Any], plain: GenOutput, spec: GenOutput, tok: Any) -> dict[str, Any]:
    div = first_divergence(plain.token_ids, spec.token_ids)
    return {**_row(r, spec), "rounds": spec.rounds, "proposed": spec.proposed, "accepted": spec.accepted,
            "draft_forward_s": spec.draft_forward_s, "target_forward_s": spec.target_forward_s,
            "plain_latency_s": plain.latency_s,
            "plain_output_tokens": plain.output_tokens, "plain_correct": judge(plain.text, r["answer"]).correct,
            "same_as_plain": div is None, "first_divergence": div,
            "diverging_tokens": None if div is None else
            [tok.decode(plain.token_ids[div:div + 1]), tok.decode(spec.token_ids[div:div + 1])]}


def throughput_speedup(target_dir: Path, draft_dir: Path, rows: list[dict[str, Any]], style: str,
                       prompts: PromptsConfig, gen: GenerationConfig, batch_size: int) -> dict[str, float]:
    """Throughput mode (vllm): all prompts at once, up to batch_size in flight, plain vs
    speculative; the seed's only measure, reported beside the latency-mode speedup."""
    out: dict[str, float] = {}
    g = dataclasses.replace(gen, vllm=dataclasses.replace(gen.vllm, max_num_seqs=batch_size))
    for mode, draft in (("plain", None), ("speculative", draft_dir)):
        engine = make_engine(target_dir, draft, g)
        texts = [engine.render(messages(prompts, style, r["question"])) for r in rows]
        outs = engine.generate(texts)
        out[f"throughput_{mode}_tokens_per_s"] = sum(o.output_tokens for o in outs) / outs[0].latency_s
        if draft is not None and hasattr(engine, "counters"):
            out["acceptance_per_position"] = engine.counters()["acceptance_per_position"]
        del engine
    out["throughput_speedup"] = out["throughput_speculative_tokens_per_s"] / out["throughput_plain_tokens_per_s"]
    return out


def metrics(preds: list[dict[str, Any]], k: int | None, seed: int = 0) -> dict[str, Any]:
    n = len(preds)
    correct = sum(p["correct"] for p in preds)
    toks = [p["output_tokens"] for p in preds]
    lat = [p["latency_s"] for p in preds]
    m: dict[str, Any] = {
        "n": n, "accuracy": correct / n, "accuracy_ci95": wilson(correct, n),
        "extraction_failure_rate": sum(p["extraction_path"] == PATH_NONE for p in preds) / n,
        "extraction_paths": {q: sum(p["extraction_path"] == q for p in preds)
                             for q in sorted({p["extraction_path"] for p in preds})},
        "truncation_rate": sum(p["truncated"] for p in preds) / n,
        "mean_output_tokens": statistics.fmean(toks), "median_output_tokens": float(statistics.median(toks)),
        "latency_p50_s": percentile(lat, 50), "latency_p90_s": percentile(lat, 90),
        "tokens_per_s": sum(toks) / sum(lat) if sum(lat) else 0.0,
    }
    if k is None:
        return m
    rounds = sum(p["rounds"] for p in preds)
    proposed = sum(p["proposed"] for p in preds)
    accepted = sum(p["accepted"] for p in preds)
    rate = accepted / proposed if proposed else 0.0
    ratios = [p["plain_latency_s"] / p["latency_s"] for p in preds]
    # Leviathan's c: one draft step / one target decode step; the draft step is timed by
    # hooks during speculative decoding, the target step from the plain twin's run.
    draft_step = sum(p["draft_forward_s"] or 0.0 for p in preds) / proposed if proposed else 0.0
    target_step = sum(p["plain_latency_s"] for p in preds) / sum(p["plain_output_tokens"] for p in preds)
    c = draft_step / target_step if target_step else 0.0
    # one verify forward (k+1 tokens) in target decode steps; Leviathan's model assumes 1
    verify_s = [p.get("target_forward_s") for p in preds]
    verify = (sum(verify_s) / rounds / target_step) if rounds and target_step and None not in verify_s else None
    alpha = alpha_from_acceptance(rate, k)
    predicted = leviathan_speedup(alpha, k, c)
    in_vocab = [p.get("plain_tokens_in_draft_vocab") for p in preds]
    draft_vocab_coverage = (sum(in_vocab) / sum(p["plain_output_tokens"] for p in preds)
                            if None not in in_vocab and sum(p["plain_output_tokens"] for p in preds) else None)
    speedup = float(statistics.median(ratios))
    diverging = [{"id": p["id"], "first_divergence": p["first_divergence"], "tokens": p["diverging_tokens"]}
                 for p in preds if not p["same_as_plain"]]
    m.update({"num_speculative_tokens": k, "acceptance_rate": rate, "alpha": alpha,
              "mean_acceptance_length": sum(toks) / rounds if rounds else 0.0,
              "speedup": speedup, "speedup_ci95": median_ci(ratios, seed),
              "cost_ratio_c": c, "predicted_speedup": predicted, "verify_cost": verify,
              "draft_vocab_coverage": draft_vocab_coverage,
              "predicted_speedup_with_verify": leviathan_speedup(alpha, k, c, verify) if verify else None,
              "efficiency": speedup / predicted if predicted else 0.0,
              "plain_tokens_per_s": sum(p["plain_output_tokens"] for p in preds) / sum(p["plain_latency_s"] for p in preds),
              "diverging_outputs": len(diverging), "diverging_share": len(diverging) / n,
              "diverging": diverging})
    return m


def check_divergence(m: dict[str, Any], max_share: float, where: str) -> None:
    if m.get("diverging_share", 0.0) > max_share:
        raise InputError(f"{where}: {m['diverging_outputs']} of {m['n']} speculative outputs differ from plain "
                         f"greedy output (> {max_share:.0%}); first: {m['diverging'][:3]}")


def resolve_models(scenario: str, style: str | None, variant: Variant | None, base: Path = Path("models/base"),
                   ) -> tuple[Path, Path | None]:
    """(target folder, draft folder or None) for a configuration."""
    if style is None:  # the untrained target
        return base / "target", None
    target = Path("models/target") / f"{scenario}-{style}"
    if variant is None:
        return target, None
    if variant.draft not in DRAFTS:
        raise InputError(f"params.yaml: eval.variants: draft {variant.draft!r} unknown; valid: {list(DRAFTS)}")
    return target, (Path("models/draft") / f"{scenario}-{style}" if variant.draft == "trained" else base / "draft")
