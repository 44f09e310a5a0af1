"""Evaluate a target on one scenario's test set: plain, and with each of its drafts.

A configuration is a target (base or trained for a style), a style (its system prompt)
and optionally a draft (trained or base). All decode greedily with the same
max_new_tokens and are scored by the shared answer checker. One process evaluates a
target and all its speculative variants, with either engine, in three kinds of pass
(specdraft.generate.passes), each resumable after a crash:

- **answers, every question**: plain greedy decoding, batched (plain accuracy, tokens
  and throughput).
- **acceptance, every question**: each draft's speculative pass (Engine.speculative_pass).
  The hf engine simulates it exactly: the draft runs as in speculative decoding but the
  target's choices are read from its plain output (a few percent of the cost). vLLM
  decodes every question speculatively in batches, so there a configuration's answers
  are its own, and its throughput over plain decoding is measured too.
- **timing, `eval.timed_prompts` questions drawn at random** (seed `eval.timed_seed`,
  stratified by question kind: timed_sample): batch-1 plain and speculative
  decoding; speedup = geometric mean of the per-question time ratios (plain /
  speculative) with a t interval on their logs. The hf engine holds every draft at once
  and interleaves configurations per question, in an order that rotates from question to
  question, so machine noise and order effects hit all alike; vLLM keeps one engine alive
  at a time, so its passes are grouped by configuration (one engine start each).

A speculative configuration's answer to a question is its own decoded output where it
has one (timed, or vLLM's pass), else the plain answer, which greedy speculative decoding
reproduces token for token. Where it has its own, the output is compared with the plain
output of the same mode; differences are counted and listed (first diverging token) and
fail the stage above `eval.max_diverging_share`, a setting per profile (fp32 on a CPU is
exact; bf16 on a GPU rounds a (k+1)-token verify and a one-token step differently, so
near-ties can flip). The check runs before the partial files are removed, so a failed
check loses no decoding work.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from tqdm import tqdm

from specdraft.answers import PATH_NONE
from specdraft.config import setting
from specdraft.device import Plan, find_device
from specdraft.evaluate.stats import (
    acceptance_stats,
    alpha_from_acceptance,
    geometric_mean_ci,
    leviathan_speedup,
    percentile,
    pooled_hist,
    wilson,
)
from specdraft.generate.api import Engine, GenerationConfig
from specdraft.generate.eagle import is_head_dir
from specdraft.generate.engine import make_engine
from specdraft.generate.passes import batched_answers, speculative_answers, timed_answers
from specdraft.generate.resume import Resumable
from specdraft.io import StageError, write_json, write_jsonl
from specdraft.prompts import STYLES, PromptsConfig, messages
from specdraft.provenance import model_spec

DRAFTS = ("trained", "kd", "eagle", "base")  # SFT-distilled, distribution-distilled, EAGLE-3 head, untrained
ANSWER_FIELDS = ("output", "extracted", "extraction_path", "correct", "output_tokens", "truncated")


@dataclasses.dataclass(frozen=True)
class Variant:
    """A speculative configuration's draft: 'trained' (distilled from the target's answers,
    SFT), 'kd' (distilled from the target's token distribution), 'eagle' (an EAGLE-3 head
    over the target's features, specdraft.generate.eagle) or 'base' (untrained)."""

    draft: str = setting(choices=DRAFTS)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Section `eval` of params.yaml."""

    variants: dict[str, Variant]
    base_style: str = setting("cot", choices=STYLES)  # the untrained target is prompted with the CoT prompt
    timed_prompts: int = setting(32, ge=0)  # batch-1 timing of plain vs speculative decoding
    timed_seed: int = 0  # the timed questions' random draw (timed_sample)
    # share of a speculative configuration's own outputs allowed to differ from plain output
    max_diverging_share: float = setting(0.0, ge=0, le=1)
    seed: int = 0  # the comparisons' bootstrap (token ratios)
    comparisons: list[list[str]] = dataclasses.field(default_factory=list)
    # Draft length sweep (hf engine): each trained draft's exact simulated acceptance for
    # every k here, on the validation questions (prepare.n_val, never the test set), and
    # the speedup it predicts.
    sweep_k: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4, 5])


def timed_sample(rows: list[dict[str, Any]], n: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The `n` questions timed at batch 1, drawn at random and stratified by question kind
    (prepare's `stratum`: the sample data's template, MATH's level), and the record of the
    draw for the metrics.

    Why: the test file is sorted by id, and its first rows were all of one template (every
    algebra question timed was "x + b = c"), so the speedups described one kind of
    question. Each kind gets its proportional share by largest remainder, and at least one
    question while n allows; within a kind the draw is uniform. Rows keep the file's order."""
    import random

    if n >= len(rows):
        chosen = list(rows)
    else:
        kinds: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            kinds.setdefault(str(r.get("stratum")), []).append(r)
        names = sorted(kinds)
        floor = 1 if n >= len(names) else 0
        quota = {k: max(floor, int(n * len(kinds[k]) / len(rows))) for k in names}
        # largest remainders first (ties by name) until the quotas sum to n
        rest = sorted(names, key=lambda k: (-(n * len(kinds[k]) / len(rows) - int(n * len(kinds[k]) / len(rows))), k))
        while sum(quota.values()) < n:
            k = next(k for k in rest if quota[k] < len(kinds[k]))
            quota[k] += 1
            rest.remove(k)
            rest.append(k)
        while sum(quota.values()) > n:  # the floors overshot: take from the largest quotas
            quota[max(names, key=lambda k: (quota[k], k))] -= 1
        rng = random.Random(seed)
        ids = {r["id"] for k in names for r in rng.sample(kinds[k], min(quota[k], len(kinds[k])))}
        chosen = [r for r in rows if r["id"] in ids]
    by_kind: dict[str, list[int]] = {}
    for r in rows:
        c = by_kind.setdefault(str(r.get("stratum")), [0, 0])
        c[1] += 1
    for r in chosen:
        by_kind[str(r.get("stratum"))][0] += 1
    return chosen, {"n": len(chosen), "of": len(rows), "seed": seed,
                    "method": "random, stratified by question kind (proportional, at least one of each)",
                    "by_stratum": {k: {"timed": t, "questions": q} for k, (t, q) in sorted(by_kind.items())},
                    "ids": [r["id"] for r in chosen]}


def config_name(style: str, variant: str) -> str:
    """'cod' + 'sd' -> 'cod_sd' (plain configurations are named by their style, the
    untrained target is 'base')."""
    return f"{style}_{variant}"


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


class PassFiles:
    """The partial files of one evaluation process (<name>.<pass>.jsonl in `folder`, outside
    DVC's outputs), each starting with the fingerprint of what determines its rows."""

    def __init__(self, folder: Path, name: str, fp: str):
        self.folder, self.name, self.fp = folder, name, fp
        self.files: dict[str, Resumable] = {}

    def open(self, what: str) -> Resumable:
        if what not in self.files:
            self.files[what] = Resumable(self.folder / f"{self.name}.{what}.jsonl", self.fp)
        return self.files[what]

    def close(self, remove: bool = True) -> None:
        for f in self.files.values():
            f.close(remove=remove)


def evaluate_target(engine: Engine, rows: list[dict[str, Any]], style: str, prompts: PromptsConfig,
                    variants: list[str], timed_prompts: int, files: PassFiles,
                    sweep: tuple[list[str], list[int], list[dict[str, Any]]] = ([], [], []),
                    timed_seed: int = 0) -> dict[str, Any]:
    """Per-question predictions of the plain configuration ('plain') and of each variant
    (a draft name the engine knows); see the module docstring for what each pass does.
    `sweep` = (variants, ks, validation questions): the draft-length sweep of those
    variants on the target's plain answers to those questions (key 'sweep': {variant:
    k_sweep rows}; hf engine only). The timed questions: timed_sample(rows, timed_prompts,
    timed_seed), its record under key 'timed_sample'."""
    texts = {r["id"]: engine.render(messages(prompts, style, r["question"])) for r in rows}
    sweep_variants, ks, val = sweep
    val_texts = {r["id"]: engine.render(messages(prompts, style, r["question"])) for r in val}
    prefix_tokens = None
    if variants and hasattr(engine, "cache_prefix"):  # batch-1 passes follow: one prefix for all of them
        prefix_tokens = engine.cache_prefix([*texts.values(), *val_texts.values()])
    plain = batched_answers(engine, rows, texts, files.open("plain"))
    timed_rows, drawn = timed_sample(rows, timed_prompts if variants else 0, timed_seed)
    configs: list[str | None] = [None, *variants]
    groups = [configs] if engine.holds_all_drafts else [[c] for c in configs]
    timed: dict[str | None, dict[str, dict[str, Any]]] = {}
    spec: dict[str, dict[str, dict[str, Any]]] = {}
    for group in groups:
        timed.update(timed_answers(engine, timed_rows, texts, {c: files.open(f"{c or 'plain'}.timed") for c in group}))
        for v in group:
            if v is not None:
                spec[v] = speculative_answers(engine, rows, texts, plain, v, files.open(f"{v}.speculative"))
    out: dict[str, Any] = predictions(rows, plain, timed, spec, engine.draft_subset)
    out["prefix_tokens"] = prefix_tokens
    out["timed_sample"] = drawn if timed_rows else None
    if sweep_variants and ks and val and hasattr(engine, "simulate"):
        val_plain = batched_answers(engine, val, val_texts, files.open("val.plain"), "validation answers (batched)")
        out["sweep"] = {v: k_sweep(engine, val, val_texts, val_plain, v, ks) for v in sweep_variants}
        # the target's forward time for 1..max(k)+1 new tokens: each k's verify cost
        out["forward_ms"] = engine.forward_ms(list(range(1, max(ks) + 2)))
    return out


def k_sweep(engine: Any, rows: list[dict[str, Any]], texts: dict[str, str], plain: dict[str, dict[str, Any]],
            draft: str, ks: list[int]) -> list[dict[str, Any]]:
    """`draft`'s acceptance at each draft length in `ks` on `rows`, simulated exactly
    against the plain answers (the same simulation as the main pass, another k), as
    acceptance_stats figures per k. No timing: the predicted speedup is added by
    speculative_metrics from the measured draft cost and the target's forward times."""
    out = []
    for k in tqdm(ks, desc=f"k sweep {draft}", unit="k"):
        proposed = accepted = 0
        hists = []
        for r in rows:
            ids = engine.tokenizer(texts[r["id"]], add_special_tokens=False)["input_ids"]
            d = engine.simulate(ids, plain[r["id"]]["token_ids"], draft, k)
            proposed, accepted = proposed + d.proposed, accepted + d.accepted
            hists.append(d.hist)
        out.append({"k": k, "questions": len(rows), **acceptance_stats(proposed, accepted, pooled_hist(hists))})
    return out


def predictions(rows: list[dict[str, Any]], plain: dict[str, dict], timed: dict[str | None, dict[str, dict]],
                spec: dict[str, dict[str, dict]], subset: list[int] | None) -> dict[str, list[dict[str, Any]]]:
    """Per-question rows of the plain configuration and of each variant, from the passes'
    records (keyed by question id)."""
    keep = {"id", "answer", *ANSWER_FIELDS}
    sub = None if subset is None else set(subset)
    out: dict[str, list[dict[str, Any]]] = {"plain": []}
    for r in rows:
        p, t = plain[r["id"]], timed.get(None, {}).get(r["id"])
        out["plain"].append({**{k: p[k] for k in keep}, "batch_share_s": p["batch_share_s"], "timed": t is not None,
                             "latency_s": t["latency_s"] if t else None,
                             "batched_equals_batch1": t["token_ids"] == p["token_ids"] if t else None})
    for v, passes in spec.items():
        out[v] = []
        for r in rows:
            p, s, t = plain[r["id"]], passes[r["id"]], timed.get(v, {}).get(r["id"])
            tp = timed.get(None, {}).get(r["id"])
            own = t or (None if s["simulated"] else s)  # this configuration's own decoded output
            row = {**{k: (own or p)[k] for k in keep}, "own_output": own is not None,
                   "spec_proposed": s["proposed"], "spec_accepted": s["accepted"], "spec_hist": s["accepted_hist"],
                   "simulated": s["simulated"], "batch_share_s": None if s["simulated"] else s["batch_share_s"],
                   "plain_batch_share_s": p["batch_share_s"], "plain_output_tokens": p["output_tokens"],
                   "plain_correct": p["correct"], "timed": t is not None,
                   "plain_tokens_in_draft_vocab": p["output_tokens"] if sub is None
                   else sum(x in sub for x in p["token_ids"])}
            # divergence from plain output of the same mode: batch 1 (timed), batched (vLLM's pass)
            div = [(tp["token_ids"], t["token_ids"])] if t and tp else []
            if not s["simulated"]:
                div.append((p["token_ids"], s["token_ids"]))
            first = next((d for d in (first_divergence(a, b) for a, b in div) if d is not None), None)
            row.update({"compared": bool(div), "same_as_plain": first is None if div else None,
                        "first_divergence": first})
            if t is not None:
                row.update({k: t[k] for k in ("latency_s", "rounds", "proposed", "accepted", "draft_forward_s",
                                              "target_forward_s")})
                row.update({"plain_latency_s": tp["latency_s"], "plain_timed_output_tokens": tp["output_tokens"],
                            "simulation_matches_engine": (s["proposed"], s["accepted"], s["accepted_hist"]) ==
                            (t["proposed"], t["accepted"], t["accepted_hist"]) if s["simulated"] else None})
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


def _throughput(preds: list[dict[str, Any]], tokens: str, share: str) -> float | None:
    """Tokens per second of a batched pass: its tokens over its wall time (each question
    carries its share of its batch's time)."""
    secs = [p[share] for p in preds]
    if any(x is None for x in secs) or not sum(secs):
        return None
    return sum(p[tokens] for p in preds) / sum(secs)


def plain_metrics(preds: list[dict[str, Any]]) -> dict[str, Any]:
    """Answers and batched throughput over every question; latency over the timed ones
    (None when none was timed)."""
    m = _answer_metrics(preds)
    timed = [p for p in preds if p.get("latency_s") is not None]
    lat = [p["latency_s"] for p in timed]
    m.update({"timed_n": len(timed),
              "latency_p50_s": percentile(lat, 50) if lat else None,
              "latency_p90_s": percentile(lat, 90) if lat else None,
              "tokens_per_s": sum(p["output_tokens"] for p in timed) / sum(lat) if lat else None,
              "throughput_tokens_per_s": _throughput(preds, "output_tokens", "batch_share_s"),
              "batched_equals_batch1": sum(bool(p.get("batched_equals_batch1")) for p in timed)})
    return m


def sweep_metrics(sweep: list[dict[str, Any]], forward_ms: dict[int, float], c: float | None) -> list[dict[str, Any]]:
    """Each k's simulated acceptance with its verify cost (the target's (k+1)-token forward
    in one-token forwards) and, with the measured draft cost c, the speedup it predicts:
    tokens per round / (k c + verify). The verify costs come from isolated forwards after a
    128-token context; the prediction leaves out the prompt's prefill (not sped up) and
    the loop's own per-round work, so it ranks the k's rather than promising a figure
    (measured speedups at the configured k land within about 15 % of it, either side)."""
    out = []
    for row in sweep:
        k = row["k"]
        verify = forward_ms[k + 1] / forward_ms[1]
        out.append({**row, "verify_cost": verify,
                    "predicted_speedup": row["mean_acceptance_length"] / (k * c + verify) if c is not None else None})
    return out


def speculative_metrics(preds: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Answers and acceptance over every question, divergence over every question with an
    own output, timing, cost ratio and exactness over the timed ones. The cost ratio and
    the predicted speedup need the draft's and target's forward times, which only the hf
    engine reports; throughput needs a decoded batched pass, which only vLLM runs."""
    m = _answer_metrics(preds)
    simulated = all(p["simulated"] for p in preds)
    acc = acceptance_stats(sum(p["spec_proposed"] or 0 for p in preds), sum(p["spec_accepted"] or 0 for p in preds),
                           pooled_hist([p["spec_hist"] for p in preds if p["spec_hist"]]))
    alpha = alpha_from_acceptance(acc["acceptance_rate"], k)
    plain_toks = sum(p["plain_output_tokens"] for p in preds)
    compared = [p for p in preds if p["compared"]]
    diverging = [{"id": p["id"], "first_divergence": p["first_divergence"]} for p in compared
                 if not p["same_as_plain"]]
    spec_tp = _throughput(preds, "output_tokens", "batch_share_s")
    plain_tp = _throughput(preds, "plain_output_tokens", "plain_batch_share_s")
    m.update({"num_speculative_tokens": k,
              "acceptance_source": "simulated exactly on every question" if simulated
              else "engine counts, every question decoded",
              **acc, "alpha": alpha,
              "draft_vocab_coverage": sum(p["plain_tokens_in_draft_vocab"] for p in preds) / plain_toks
              if plain_toks else None,
              "compared_n": len(compared), "diverging_outputs": len(diverging),
              "diverging_share": len(diverging) / len(compared) if compared else 0.0, "diverging": diverging,
              "throughput_tokens_per_s": spec_tp, "plain_throughput_tokens_per_s": plain_tp,
              "throughput_speedup": spec_tp / plain_tp if spec_tp and plain_tp else None})
    timed = [p for p in preds if p["timed"]]
    m["timed_n"] = len(timed)
    if not timed:
        return m
    # the same exact counts on the timed questions alone, beside those of every question above:
    # how far the timed subset's acceptance (which the speedup reflects) is from the whole set's
    sub = acceptance_stats(sum(p["spec_proposed"] or 0 for p in timed), sum(p["spec_accepted"] or 0 for p in timed),
                           pooled_hist([p["spec_hist"] for p in timed if p["spec_hist"]]))
    m.update({"timed_subset_acceptance_rate": sub["acceptance_rate"],
              "timed_subset_mean_acceptance_length": sub["mean_acceptance_length"]})
    lat = [p["latency_s"] for p in timed]
    ratios = [p["plain_latency_s"] / p["latency_s"] for p in timed]
    t_proposed = sum(p["proposed"] or 0 for p in timed)
    t_rounds = sum(p["rounds"] or 0 for p in timed)
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
    speedup, speedup_ci = geometric_mean_ci(ratios)
    sims = [p["simulation_matches_engine"] for p in timed]
    m.update({"latency_p50_s": percentile(lat, 50), "latency_p90_s": percentile(lat, 90),
              "tokens_per_s": sum(p["output_tokens"] for p in timed) / sum(lat),
              "plain_tokens_per_s": sum(p["plain_timed_output_tokens"] for p in timed)
              / sum(p["plain_latency_s"] for p in timed),
              "timed_acceptance_rate": acceptance_stats(t_proposed, sum(p["accepted"] or 0 for p in timed),
                                                        [0] * (k + 1))["acceptance_rate"],
              "simulation_matches_engine": None if any(s is None for s in sims) else sum(sims),
              "speedup": speedup, "speedup_ci95": speedup_ci, "speedup_method": "geometric mean, t interval on log ratios",
              "cost_ratio_c": c, "verify_cost": verify, "predicted_speedup": predicted,
              "predicted_speedup_with_verify": leviathan_speedup(alpha, k, c, verify) if verify else None,
              "efficiency": speedup / predicted if predicted else None})
    return m


def check_divergence(m: dict[str, Any], max_share: float, where: str) -> None:
    if m.get("diverging_share", 0.0) > max_share:
        raise StageError(f"{where}: {m['diverging_outputs']} of {m['compared_n']} speculative outputs differ from "
                         f"plain greedy output ({m['diverging_share']:.1%} > eval.max_diverging_share "
                         f"{max_share:.1%}); first: {m['diverging'][:3]}. The decoded passes are kept: rerun with a "
                         "higher share (the setting of a bf16 profile) to finish without decoding again")


def resolve_drafts(variants: dict[str, Variant], folders: dict[str, Path | None]) -> dict[str, Path]:
    """{variant: draft folder}: each variant's draft kind (trained | untrained) mapped to
    the folder the stage's command names for it."""
    drafts = {}
    for name, v in variants.items():
        if folders.get(v.draft) is None:
            raise StageError(f"eval.variants.{name} needs the {v.draft} draft: pass --{v.draft}-draft")
        drafts[name] = Path(folders[v.draft])
    return drafts


def evaluate(scenario: str, style: str | None, target: Path, drafts: dict[str, Path], rows: list[dict[str, Any]],
             prompts: PromptsConfig, gen: GenerationConfig, cfg: EvalConfig,
             draft_data: tuple[list[str], list[str]] | None, files: PassFiles, preds_dir: Path,
             metrics_dir: Path, plan: Plan | None = None, val: tuple[str, list[dict[str, Any]]] = ("", []),
             variants: dict[str, Variant] | None = None, write_plain: bool = True) -> dict[str, dict[str, Any]]:
    """The evaluate stages' work: every configuration of one target (`style` None: the
    untrained target, configuration `base`, prompted with eval.base_style), its
    predictions to preds_dir/<config>.jsonl and metrics to metrics_dir/<config>.json.
    `plan`: the settings as they apply on the stage's device (specdraft.device.resolve;
    `gen` is then the settings as written); without one, `gen` is used as it is on the
    device torch finds. `val` = (file, questions): the validation questions of the k
    sweep, named in every speculative configuration's metrics (`k_sweep_source`).
    `variants`: the variants `drafts` belong to (default eval.variants); `write_plain`
    False: the plain configuration is decoded and timed (each variant is measured against
    it in this process) but its files are left to the stage that owns them (an opt-in
    draft's stage, evaluate_kd, beside evaluate). Returns the metrics by configuration."""
    if plan is None:
        plan = Plan(device=find_device("auto"), generation=gen, applied={}, not_applied={})
    setting, gen = gen, plan.generation
    name = style or "base"
    style = style or cfg.base_style
    variants = cfg.variants if variants is None else variants
    swept = [v for v in drafts if variants[v].draft != "base"]
    # (the sweep settings are read only with a trained draft: dvc.yaml declares what is read)
    sweep = (swept, cfg.sweep_k, val[1]) if swept else ([], [], [])
    with make_engine(target, drafts or None, gen, draft_data, device=plan.device) as engine:
        preds = evaluate_target(engine, rows, style, prompts, list(drafts), cfg.timed_prompts if drafts else 0,
                                files, sweep, cfg.timed_seed if drafts else 0)
    starts, counters = getattr(engine, "starts", 1), getattr(engine, "counters", {})  # vLLM's, once closed
    hf = gen.engine == "hf"
    common = {"style": style, "target": str(target), "target_model": model_spec(target), "engine": gen.engine,
              **plan.record(), "dtype": gen.dtype, "max_new_tokens": gen.max_new_tokens, "engine_starts": starts}
    if hf:  # the kernel path in use (`auto`: the kernels stage's decision for the whole run)
        common.update({"cpu_kernels": getattr(engine, "cpu_kernels", gen.cpu_kernels),
                       "cpu_kernels_setting": setting.cpu_kernels,
                       "decode_loop": gen.decode_loop if drafts else None,
                       # the shared prompt prefix prefilled once for the batch-1 passes (0: off)
                       "prefix_cache_tokens": preds["prefix_tokens"]})
    if preds.get("timed_sample"):  # which questions were timed, and how many of each kind
        common["timed_sample"] = preds["timed_sample"]
    out = {name: {"config": name, **common, "draft": None, **plain_metrics(preds["plain"])}}
    for v, d in drafts.items():
        # vllm loads the draft as saved: the hf engine's int8 draft and restricted head do not apply
        out[config_name(style, v)] = {
            "config": config_name(style, v), **common, "draft": str(d), "draft_model": model_spec(d),
            # vLLM's speculative method for this draft: an EAGLE-3 head or a separate draft model
            "draft_method": "eagle3" if is_head_dir(d) else "draft_model",
            "draft_quant": gen.draft_quant if hf else "none", "draft_vocab": gen.draft_vocab if hf else 0,
            **speculative_metrics(preds[v], gen.num_speculative_tokens),
            "k_sweep_source": {"file": val[0], "questions": len(val[1]), "split": "validation"} if sweep[2] and hf
            else None,
            # k is declared, never chosen on these test questions; the validation sweep is shown beside it
            "k_choice": "declared: generation.num_speculative_tokens",
            "engine_counters": counters.get(v),  # vLLM's own counters, as a cross-check
            # vLLM: the draft's tensor-parallel size as asked and as run (specdraft.generate.vllm_engine)
            **({} if hf else {"draft_tensor_parallel": getattr(engine, "draft_tp", {}).get(v)})}
        if v in preds.get("sweep", {}):
            m = out[config_name(style, v)]
            m["k_sweep"] = sweep_metrics(preds["sweep"][v], preds["forward_ms"], m.get("cost_ratio_c"))
    for config, m in out.items():  # before anything is written or thrown away
        if config != name:
            check_divergence(m, cfg.max_diverging_share, f"{scenario}/{config}")
    if not write_plain:
        del out[name]
    for config, m in out.items():
        write_jsonl(preds_dir / f"{config}.jsonl", preds["plain" if config == name else config[len(style) + 1:]])
        write_json(metrics_dir / f"{config}.json", m)
    files.close()
    return out
