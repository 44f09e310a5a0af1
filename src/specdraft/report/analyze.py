"""Data analysis of the teacher sets: what the model will be trained on, before training.

Per scenario and style, with the target's tokenizer: token counts, steps, words per step,
the CoD/CoT compression ratio per question, agreement with gold, rejects by reason, and
the share of rows longer than the training max_length (rows that would be cut). Warns
when a check fails: more than 2 % cut, CoD not shorter than CoT, fewer rows than n_train.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from specdraft.io import read_json, read_jsonl
from specdraft.prompts import STYLES, PromptsConfig, messages, render
from specdraft.teacher.core import REJECT_REASONS, steps, training_rows, words

MAX_CUT_SHARE = 0.02


def _summary(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0.0}
    a = np.asarray(xs, dtype=float)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "max": float(a.max())}


def analyze(scenarios: list[str], tokenizer: Any, prompts: PromptsConfig, max_length: int, n_train: int,
            teacher_dir: Path, metrics_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]], list[str]]:
    """(per-scenario stats, raw distributions for the figures, warnings)."""
    stats: dict[str, Any] = {}
    dist: dict[str, dict[str, list[float]]] = {}
    warnings: list[str] = []
    for sc in scenarios:
        s: dict[str, Any] = {}
        d: dict[str, list[float]] = {}
        tokens: dict[str, dict[str, int]] = {}
        for style in STYLES:
            rows = training_rows(teacher_dir / "cot" / f"{sc}.jsonl", teacher_dir / "cod" / f"{sc}.jsonl", style)
            rej = read_jsonl(teacher_dir / style / f"{sc}.rejected.jsonl")
            tm = read_json(metrics_dir / style / f"{sc}.json")
            toks = {r["id"]: len(tokenizer(r["response"], add_special_tokens=False)["input_ids"]) for r in rows}
            full = [len(tokenizer(render(tokenizer, messages(prompts, style, r["question"])) + r["response"],
                                  add_special_tokens=False)["input_ids"]) + 1 for r in rows]
            n_steps = [len(steps(r["response"])) for r in rows]
            wps = [words(x) for r in rows for x in steps(r["response"])]
            cut = sum(n > max_length for n in full) / len(full) if full else 0.0
            s[style] = {"rows": len(rows), "tokens": _summary(list(toks.values())), "steps": _summary(n_steps),
                        "words_per_step": _summary(wps),
                        "agreement_with_gold": tm["accepted"] / tm["requested"] if tm["requested"] else 0.0,
                        "rejected_by_reason": {k: sum(r["reason"] == k for r in rej) for k in REJECT_REASONS},
                        "share_over_max_length": cut}
            tokens[style] = toks
            d[f"tokens_{style}"] = list(toks.values())
            d[f"steps_{style}"] = n_steps
            if cut > MAX_CUT_SHARE:
                warnings.append(f"{sc}/{style}: {cut:.1%} of rows are longer than max_length={max_length} "
                                f"and would be cut (limit {MAX_CUT_SHARE:.0%})")
            if len(rows) < n_train:
                warnings.append(f"{sc}/{style}: {len(rows)} training rows, fewer than n_train={n_train}")
        common = sorted(set(tokens["cot"]) & set(tokens["cod"]))
        ratio = [tokens["cod"][i] / tokens["cot"][i] for i in common if tokens["cot"][i]]
        s["compression_cod_over_cot"] = _summary(ratio)
        d["compression"] = ratio
        if s["cod"]["tokens"]["mean"] >= s["cot"]["tokens"]["mean"]:
            warnings.append(f"{sc}: CoD is not shorter than CoT ({s['cod']['tokens']['mean']:.1f} vs "
                            f"{s['cot']['tokens']['mean']:.1f} tokens)")
        stats[sc] = s
        dist[sc] = d
    return stats, dist, warnings


def headline(stats: dict[str, Any]) -> dict[str, Any]:
    """The numbers `dvc metrics diff` shows for a change to the teacher or the prompts."""
    out = {}
    for sc, s in stats.items():
        out[sc] = {"rows": s["cot"]["rows"], "cot_tokens_mean": s["cot"]["tokens"]["mean"],
                   "cod_tokens_mean": s["cod"]["tokens"]["mean"],
                   "compression_mean": s["compression_cod_over_cot"]["mean"],
                   "cod_words_per_step_median": s["cod"]["words_per_step"]["median"],
                   "cot_steps_mean": s["cot"]["steps"]["mean"], "cod_steps_mean": s["cod"]["steps"]["mean"],
                   "share_over_max_length": max(s["cot"]["share_over_max_length"], s["cod"]["share_over_max_length"]),
                   "rejected": sum(s["cot"]["rejected_by_reason"].values()) + sum(s["cod"]["rejected_by_reason"].values())}
    return out


def figures(dist: dict[str, dict[str, list[float]]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    scs = list(dist)
    fig, axes = plt.subplots(1, len(scs), figsize=(4.5 * len(scs), 3.6), squeeze=False)
    for ax, sc in zip(axes[0], scs, strict=True):
        hi = max(dist[sc]["tokens_cot"] + dist[sc]["tokens_cod"] + [1])
        bins = np.linspace(0, hi, 25)
        ax.hist(dist[sc]["tokens_cot"], bins=bins, alpha=0.6, label="CoT")
        ax.hist(dist[sc]["tokens_cod"], bins=bins, alpha=0.6, label="CoD")
        ax.set(title=f"{sc}: response tokens", xlabel="tokens (target tokenizer)", ylabel="rows")
        ax.legend()
    fig.tight_layout()
    paths.append(out / "data_tokens_hist.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.boxplot([dist[sc]["compression"] or [0] for sc in scs], tick_labels=scs)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set(title="CoD / CoT token ratio per question", ylabel="ratio (lower = shorter CoD)")
    fig.tight_layout()
    paths.append(out / "data_compression.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = np.arange(len(scs))
    for i, style in enumerate(STYLES):
        ax.bar(x + (i - 0.5) * 0.38, [statistics.fmean(dist[sc][f"steps_{style}"] or [0]) for sc in scs], 0.38,
               label=style.upper())
    ax.set_xticks(x, scs)
    ax.set(title="Steps per answer (mean)", ylabel="steps")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "data_steps.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def markdown(stats: dict[str, Any], warnings: list[str], max_length: int, figs: list[Path], rel: Path) -> str:
    lines = ["# Teacher data", "",
             "Training sets after both teacher passes (only questions accepted in both), measured with the "
             "target's tokenizer. Generated by the `analyze` stage.", ""]
    if warnings:
        lines += ["## Warnings", ""] + [f"- **{w}**" for w in warnings] + [""]
    else:
        lines += ["All checks passed: at most 2 % of rows over max_length, CoD shorter than CoT, "
                  "n_train rows per scenario.", ""]
    lines += ["| scenario | style | rows | tokens mean | median | p90 | max | steps | words/step (median) | "
              f"over max_length={max_length} | rejected |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for sc, s in stats.items():
        for style in STYLES:
            t = s[style]
            rej = ", ".join(f"{k} {v}" for k, v in t["rejected_by_reason"].items() if v) or "0"
            lines.append(f"| {sc} | {style} | {t['rows']} | {t['tokens']['mean']:.1f} | {t['tokens']['median']:.0f} | "
                         f"{t['tokens']['p90']:.0f} | {t['tokens']['max']:.0f} | {t['steps']['mean']:.1f} | "
                         f"{t['words_per_step']['median']:.0f} | {t['share_over_max_length']:.1%} | {rej} |")
    lines += ["", "| scenario | CoD/CoT tokens mean | median | p90 | agreement with gold (CoT, CoD) |", "|---|---|---|---|---|"]
    for sc, s in stats.items():
        c = s["compression_cod_over_cot"]
        lines.append(f"| {sc} | {c['mean']:.2f} | {c['median']:.2f} | {c['p90']:.2f} | "
                     f"{s['cot']['agreement_with_gold']:.1%}, {s['cod']['agreement_with_gold']:.1%} |")
    lines += [""] + [f"![{p.stem}]({p.relative_to(rel)})" for p in figs] + [""]
    return "\n".join(lines)
