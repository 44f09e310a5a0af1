"""Evaluate a target on one scenario's test set: plain, and with each of its drafts.

A configuration is a target (base or trained for a style), a style (its system prompt)
and optionally a draft (trained or base). All decode greedily with the same
max_new_tokens and are scored by the shared answer checker. One process evaluates a
target and all its speculative variants, so each output is decoded once:

- **accuracy and tokens, every test question**: plain greedy decoding, batched.
  Greedy speculative decoding returns the same tokens (checked below), so a speculative
  configuration's answers are the plain answers, except on the timed prompts, where its
  own decoded output is used.
- **acceptance, every test question, exact**: `specdraft.generate.greedy.simulate` runs
  each draft exactly as speculative decoding would, but reads the target's choices from
  its plain output instead of computing them (a few percent of the cost).
- **timing, `eval.timed_prompts` questions**: batch-1 plain and speculative decoding
  alternate per prompt so machine noise hits both; speedup = median of the per-prompt
  time ratios (plain / speculative) with a bootstrap CI. There the engine's own counts
  must equal the simulated ones and the speculative output the plain batch-1 output;
  differences are counted and listed (first diverging token).

Throughput mode (a batch of eval.batch_size requests in flight) is measured with vllm.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from tqdm import tqdm

from specdraft.answers import PATH_NONE, judge
from specdraft.config import setting
from specdraft.evaluate.stats import alpha_from_acceptance, leviathan_speedup, median_ci, percentile, wilson
from specdraft.generate.api import GenerationConfig, GenOutput
from specdraft.generate.engine import make_engine
from specdraft.io import InputError
from specdraft.prompts import STYLES, PromptsConfig, messages

DRAFTS = ("trained", "base")


@dataclasses.dataclass(frozen=True)
class Variant:
    """A speculative configuration's draft: 'trained' (distilled) or 'base' (untrained)."""

    draft: str


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Section `eval` of params.yaml."""

    variants: dict[str, Variant]
    base_style: str = setting("cot", choices=STYLES)  # the untrained target is prompted with the CoT prompt
    timed_prompts: int = setting(32, ge=0)  # batch-1 timing of plain vs speculative decoding
    batch_size: int = setting(16, ge=1)  # throughput mode (vllm)
    throughput: bool = True
    max_diverging_share: float = setting(0.01, ge=0, le=1)
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
            "truncated": o.truncated}


def timed_ids(rows: list[dict[str, Any]], n: int) -> list[str]:
    """The first n test questions (the test set is already drawn at random by prepare)."""
    return [r["id"] for r in rows[:n]]


def plain_outputs(engine: Any, rows: list[dict[str, Any]], style: str, prompts: PromptsConfig,
                  done: dict[str, Any], add) -> dict[str, dict[str, Any]]:
    """Plain greedy answers to every question, batched; `done` rows (a resumed run) are
    kept, each new one is passed to `add` as soon as its batch finishes."""
    todo = [r for r in rows if r["id"] not in done]
    bs = engine.cfg.batch_size
    for i in tqdm(range(0, len(todo), bs), desc="plain (batched)", unit="batch", disable=not todo):
        chunk = todo[i:i + bs]
        outs = engine.generate([engine.render(messages(prompts, style, r["question"])) for r in chunk])
        for r, o in zip(chunk, outs, strict=True):
            add({**_row(r, o), "token_ids": o.token_ids})
    return done


def timed_runs(engine: Any, rows: list[dict[str, Any]], variants: list[str], style: str, prompts: PromptsConfig,
               done: dict[str, Any], add) -> dict[str, dict[str, Any]]:
    """Batch-1 plain and speculative decoding (each variant's draft) of `rows`, alternating
    per prompt so that machine noise hits every configuration alike."""
    todo = [r for r in rows if r["id"] not in done]
    for r in tqdm(todo, desc="timed (batch 1)", unit="q", disable=not todo):
        prompt = engine.render(messages(prompts, style, r["question"]))
        plain = engine.generate_one(prompt, speculative=False)
        rec: dict[str, Any] = {"id": r["id"], "plain": _timing(plain)}
        for v in variants:
            spec = engine.generate_one(prompt, speculative=True, draft=v)
            div = first_divergence(plain.token_ids, spec.token_ids)
            rec[v] = {**_row(r, spec), **_timing(spec), "same_as_plain": div is None, "first_divergence": div,
                      "diverging_tokens": None if div is None else
                      [engine.tokenizer.decode(plain.token_ids[div:div + 1]),
                       engine.tokenizer.decode(spec.token_ids[div:div + 1])]}
        add(rec)
    return done


def _timing(o: GenOutput) -> dict[str, Any]:
    return {"latency_s": o.latency_s, "output_tokens": o.output_tokens, "token_ids": o.token_ids,
            "rounds": o.rounds, "proposed": o.proposed, "accepted": o.accepted,
            "draft_forward_s": o.draft_forward_s, "target_forward_s": o.target_forward_s}


def predictions(plain: dict[str, dict[str, Any]], timed: dict[str, dict[str, Any]], sims: dict[str, dict],
                rows: list[dict[str, Any]], variants: list[str], subsets: dict[str, set[int] | None],
                ) -> dict[str, list[dict[str, Any]]]:
    """Per-question rows of the plain configuration and of each variant."""
    out: dict[str, list[dict[str, Any]]] = {"plain": []}
    for r in rows:
        p = {k: v for k, v in plain[r["id"]].items() if k != "token_ids"}
        t = timed.get(r["id"])
        out["plain"].append({**p, "timed": t is not None, "latency_s": t["plain"]["latency_s"] if t else None,
                             "batched_equals_batch1": (t["plain"]["token_ids"] == plain[r["id"]]["token_ids"])
                             if t else None})
    for v in variants:
        out[v] = []
        sub = subsets.get(v)
        for r in rows:
            sim = sims[v][r["id"]]
            plain_ids = plain[r["id"]]["token_ids"]
            row = {k: v_ for k, v_ in plain[r["id"]].items() if k != "token_ids"}
            row.update({"sim_rounds": sim.rounds, "sim_proposed": sim.proposed, "sim_accepted": sim.accepted,
                        "plain_output_tokens": len(plain_ids), "plain_correct": plain[r["id"]]["correct"],
                        "plain_tokens_in_draft_vocab": len(plain_ids) if sub is None
                        else sum(t in sub for t in plain_ids), "timed": r["id"] in timed})
            t = timed.get(r["id"])
            if t is not None:  # this configuration's own decoded output and timings
                s = t[v]
                row.update({k: s[k] for k in ("output", "extracted", "extraction_path", "correct", "output_tokens",
                                              "truncated", "latency_s", "rounds", "proposed", "accepted",
                                              "draft_forward_s", "target_forward_s", "same_as_plain",
                                              "first_divergence", "diverging_tokens")})
                row.update({"plain_latency_s": t["plain"]["latency_s"],
                            "plain_timed_output_tokens": t["plain"]["output_tokens"],
                            "simulation_matches_engine": (sim.rounds, sim.proposed, sim.accepted) ==
                            (s["rounds"], s["proposed"], s["accepted"])})
            out[v].append(row)
    return out


def _answer_metrics(preds: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(preds)
    correct = sum(p["correct"] for p in preds)
    toks = [p["output_tokens"] for p in preds]
    return {"n": n, "accuracy": correct / n, "accuracy_ci95": wilson(correct, n),
            "extraction_failure_rate": sum(p["extraction_path"] == PATH_NONE for p in preds) / n,
            "extraction_paths": {q: sum(p["extraction_path"] == q for p in preds)
                                 for q in sorted({p["extraction_path"] for p in preds})},
            "truncation_rate": sum(p["truncated"] for p in preds) / n,
            "mean_output_tokens": statistics.fmean(toks), "median_output_tokens": float(statistics.median(toks))}


def plain_metrics(preds: list[dict[str, Any]]) -> dict[str, Any]:
    """Answers over every question; latency over the timed ones (None when none was timed)."""
    m = _answer_metrics(preds)
    timed = [p for p in preds if p.get("latency_s") is not None]
    lat = [p["latency_s"] for p in timed]
    m.update({"timed_n": len(timed),
              "latency_p50_s": percentile(lat, 50) if lat else None,
              "latency_p90_s": percentile(lat, 90) if lat else None,
              "tokens_per_s": sum(p["output_tokens"] for p in timed) / sum(lat) if lat else None,
              "batched_equals_batch1": sum(bool(p.get("batched_equals_batch1")) for p in timed)})
    return m


def speculative_metrics(preds: list[dict[str, Any]], k: int, seed: int = 0, simulated: bool = True) -> dict[str, Any]:
    """Answers and acceptance over every question (acceptance simulated exactly, or with
    `simulated=False` the engine's own counts: vllm decodes every question speculatively),
    timing, cost ratio and exactness over the timed ones. Cost ratio and the predicted
    speedup need the draft's and target's forward times, which only the hf engine reports."""
    m = _answer_metrics(preds)
    rounds = sum(p["sim_rounds"] for p in preds)
    proposed = sum(p["sim_proposed"] for p in preds)
    accepted = sum(p["sim_accepted"] for p in preds)
    rate = accepted / proposed if proposed else 0.0
    alpha = alpha_from_acceptance(rate, k)
    plain_toks = sum(p["plain_output_tokens"] for p in preds)
    timed = [p for p in preds if p["timed"]]
    m.update({"num_speculative_tokens": k,
              "acceptance_source": "simulated on every question" if simulated else "engine counts, every question",
              "acceptance_rate": rate, "alpha": alpha,
              "mean_acceptance_length": plain_toks / rounds if rounds else 0.0,
              "draft_vocab_coverage": sum(p["plain_tokens_in_draft_vocab"] for p in preds) / plain_toks
              if plain_toks else None, "timed_n": len(timed)})
    if not timed:
        return m
    lat = [p["latency_s"] for p in timed]
    ratios = [p["plain_latency_s"] / p["latency_s"] for p in timed]
    t_proposed = sum(p["proposed"] for p in timed)
    t_rounds = sum(p["rounds"] for p in timed)
    # Leviathan's c: one draft step / one target decode step; the draft step is timed inside
    # speculative decoding, the target step from the plain run of the same prompts.
    target_step = sum(p["plain_latency_s"] for p in timed) / sum(p["plain_timed_output_tokens"] for p in timed)
    forward_times = all(p["draft_forward_s"] is not None and p["target_forward_s"] is not None for p in timed)
    c = verify = predicted = None
    if forward_times:
        draft_step = sum(p["draft_forward_s"] for p in timed) / t_proposed if t_proposed else 0.0
        c = draft_step / target_step if target_step else 0.0
        # one verify forward (k+1 tokens) in target decode steps; Leviathan's model assumes 1
        verify = sum(p["target_forward_s"] for p in timed) / t_rounds / target_step if t_rounds else None
        predicted = leviathan_speedup(alpha, k, c)
    speedup = float(statistics.median(ratios))
    diverging = [{"id": p["id"], "first_divergence": p["first_divergence"], "tokens": p["diverging_tokens"]}
                 for p in timed if not p["same_as_plain"]]
    m.update({"latency_p50_s": percentile(lat, 50), "latency_p90_s": percentile(lat, 90),
              "tokens_per_s": sum(p["output_tokens"] for p in timed) / sum(lat),
              "plain_tokens_per_s": sum(p["plain_timed_output_tokens"] for p in timed)
              / sum(p["plain_latency_s"] for p in timed),
              "timed_acceptance_rate": sum(p["accepted"] for p in timed) / t_proposed if t_proposed else 0.0,
              "simulation_matches_engine": sum(p["simulation_matches_engine"] for p in timed) if simulated else None,
              "speedup": speedup, "speedup_ci95": median_ci(ratios, seed),
              "cost_ratio_c": c, "verify_cost": verify, "predicted_speedup": predicted,
              "predicted_speedup_with_verify": leviathan_speedup(alpha, k, c, verify) if verify else None,
              "efficiency": speedup / predicted if predicted else None,
              "diverging_outputs": len(diverging), "diverging_share": len(diverging) / len(timed),
              "diverging": diverging})
    return m


def check_divergence(m: dict[str, Any], max_share: float, where: str) -> None:
    if m.get("diverging_share", 0.0) > max_share:
        raise InputError(f"{where}: {m['diverging_outputs']} of {m['timed_n']} speculative outputs differ from plain "
                         f"greedy output (> {max_share:.0%}); first: {m['diverging'][:3]}")


def evaluate_target(target_dir: Path, drafts: dict[str, Path], rows: list[dict[str, Any]], style: str,
                    prompts: PromptsConfig, gen: GenerationConfig, cfg: EvalConfig, resume_plain, resume_timed,
                    draft_data: tuple[list[str], list[str]] | None = None,
                    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Predictions of the plain configuration ('plain') and of each variant in `drafts`
    (variant name -> draft folder), resumable through the two Resumable files (hf engine);
    and the vllm engine's own speculative counters per variant (empty for hf)."""
    variants = list(drafts)
    timed_rows = [r for r in rows if r["id"] in set(timed_ids(rows, cfg.timed_prompts if drafts else 0))]
    if gen.engine == "vllm":
        return _evaluate_vllm(target_dir, drafts, rows, style, prompts, gen)
    engine = make_engine(target_dir, drafts or None, gen, draft_data)
    plain = plain_outputs(engine, rows, style, prompts, resume_plain.done, resume_plain.add)
    timed = timed_runs(engine, timed_rows, variants, style, prompts, resume_timed.done, resume_timed.add)
    sims: dict[str, dict[str, Any]] = {}
    for v in variants:
        sims[v] = {}
        for r in tqdm(rows, desc=f"simulate {v} draft", unit="q"):
            ids = engine.tokenizer(engine.render(messages(prompts, style, r["question"])),
                                   add_special_tokens=False)["input_ids"]
            sims[v][r["id"]] = engine.simulate(ids, plain[r["id"]]["token_ids"], draft=v)
    subset = set(engine.draft_subset) if engine.draft_subset is not None else None  # one for every draft
    subsets = {v: subset for v in variants}
    return predictions(plain, timed, sims, rows, variants, subsets), {}


def _evaluate_vllm(target_dir: Path, drafts: dict[str, Path], rows: list[dict[str, Any]], style: str,
                   prompts: PromptsConfig, gen: GenerationConfig,
                   ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """vLLM builds an engine with or without its draft, and two 14B engines rarely fit one
    GPU: a plain pass, then one speculative pass per variant, one request at a time, on
    every question; acceptance comes from vLLM's own per-request counts, and its
    engine-wide counters (per-position acceptance) are returned per variant."""
    from specdraft.generate.greedy import Decoded

    engine = make_engine(target_dir, None, gen)
    texts = {r["id"]: engine.render(messages(prompts, style, r["question"])) for r in rows}
    plain_runs = {r["id"]: engine.generate_one(texts[r["id"]], speculative=False)
                  for r in tqdm(rows, desc="plain (vllm)")}
    del engine
    plain = {r["id"]: {**_row(r, plain_runs[r["id"]]), "token_ids": plain_runs[r["id"]].token_ids} for r in rows}
    timed: dict[str, dict[str, Any]] = {r["id"]: {"id": r["id"], "plain": _timing(plain_runs[r["id"]])} for r in rows}
    sims: dict[str, dict[str, Any]] = {}
    counters: dict[str, dict[str, Any]] = {}
    for v, d in drafts.items():
        engine = make_engine(target_dir, d, gen)
        sims[v] = {}
        for r in tqdm(rows, desc=f"speculative {v} (vllm)"):
            spec = engine.generate_one(texts[r["id"]], speculative=True)
            div = first_divergence(plain_runs[r["id"]].token_ids, spec.token_ids)
            timed[r["id"]][v] = {**_row(r, spec), **_timing(spec), "same_as_plain": div is None,
                                 "first_divergence": div, "diverging_tokens": None}
            sims[v][r["id"]] = Decoded(spec.token_ids, spec.rounds or 0, spec.proposed or 0, spec.accepted or 0,
                                       0.0, 0.0)
        counters[v] = engine.counters()
        del engine
    return predictions(plain, timed, sims, rows, list(drafts), {v: None for v in drafts}), counters


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
        if draft is not None:
            out["acceptance_per_position"] = engine.counters()["acceptance_per_position"]
        del engine
    out["throughput_speedup"] = out["throughput_speculative_tokens_per_s"] / out["throughput_plain_tokens_per_s"]
    return out


def resolve_drafts(variants: dict[str, Variant], folders: dict[str, Path | None]) -> dict[str, Path]:
    """{variant: draft folder}: each variant's draft kind (trained | untrained) mapped to
    the folder the stage's command names for it."""
    drafts = {}
    for name, v in variants.items():
        if v.draft not in DRAFTS:
            raise InputError(f"params.yaml: eval.variants.{name}.draft: {v.draft!r} unknown; valid: {list(DRAFTS)}")
        if folders.get(v.draft) is None:
            raise InputError(f"eval.variants.{name} needs the {v.draft} draft: pass --{v.draft}-draft")
        drafts[name] = Path(folders[v.draft])
    return drafts
