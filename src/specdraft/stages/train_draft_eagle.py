"""Stage train_draft_eagle@<scenario>-<style>: an EAGLE-3 head for the trained target,
trained on the target's features over its own distilled answers (specdraft.train.eagle),
saved in speculators' eagle3 layout (specdraft.generate.eagle), which vLLM's `eagle3`
method serves and the hf engine decodes exactly.

Reads the trained target and data/distilled/<scenario>-<style>.jsonl; writes the head to
--out and curves, final losses and the head's exact acceptance on held-out answers
(greedy.simulate at generation.num_speculative_tokens, the decoding loop itself) to --live.
Params read: train_draft_eagle, generation.num_speculative_tokens, prompts, runtime.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from specdraft.config import RuntimeConfig, apply_runtime, get, load_params, section
from specdraft.io import InputError, read_jsonl, write_json
from specdraft.prompts import PromptsConfig, messages, render
from specdraft.schema import check_all
from specdraft.stages._cli import run
from specdraft.stages._models import add_name_args, run_name
from specdraft.train.eagle import EagleSettings

log = logging.getLogger("train_draft_eagle")


def held_out(rows: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    from specdraft.train.examples import split

    return split(rows, share, seed) if share > 0 and len(rows) > 1 else (rows, [])


def main(args: argparse.Namespace) -> None:
    import torch
    from dvclive import Live
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specdraft.evaluate.stats import acceptance_stats, pooled_hist
    from specdraft.generate import draft as draft_vocab
    from specdraft.generate import eagle
    from specdraft.generate.greedy import simulate
    from specdraft.generate.hf_engine import eos_ids
    from specdraft.train.eagle import collect

    params = load_params()
    check_all(params)
    rt = section(RuntimeConfig, "runtime", params)
    cfg = section(EagleSettings, "train_draft_eagle", params)
    apply_runtime(dataclasses.replace(rt, threads=cfg.threads or rt.threads))
    prompts = section(PromptsConfig, "prompts", params)
    k = int(get(params, "generation.num_speculative_tokens"))
    rows = read_jsonl(args.data, ["id", "question", "response", "response_ids"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(args.target)
    # frozen: bf16 on a GPU (a 14B target in fp32 would not leave room for its features),
    # fp32 on a CPU (the dtype every CPU stage decodes in); the head trains in fp32
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    target = AutoModelForCausalLM.from_pretrained(args.target, dtype=dtype).to(device).eval()
    for p in target.parameters():
        p.requires_grad_(False)

    def pair(r: dict) -> tuple[list[int], list[int]]:
        if not r["response_ids"]:
            raise InputError(f"{args.data}: row {r['id']!r}: empty response_ids (re-run the distill stage)")
        return tok(render(tok, messages(prompts, args.style, r["question"])),
                   add_special_tokens=False)["input_ids"], list(r["response_ids"])

    train_rows, val_rows = held_out(rows, cfg.val_share, cfg.seed)
    ranking = draft_vocab.token_ranking(tok, [r["response"] for r in train_rows], [r["question"] for r in train_rows])
    vocab = draft_vocab.vocab_subset(tok, ranking, cfg.draft_vocab, target.config.vocab_size)
    head = eagle.new_head(target, vocab, init=cfg.init)
    t0 = time.perf_counter()
    train = collect(target, [pair(r) for r in train_rows], head.aux)
    feats_s = time.perf_counter() - t0
    live = Live(dir=str(args.live), dvcyaml=None, save_dvc_exp=False)

    if device == "cuda":  # the head trains alone on the GPU (specdraft.plan: the target is 29.5 GB at 14B)
        target.to("cpu")
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    history = _fit(head, train, cfg, live)
    train_s = time.perf_counter() - t0
    target.to(device)

    eos = eos_ids(target, tok)
    counted = []
    with torch.inference_mode():
        for r in val_rows:
            p, a = pair(r)
            budget = len(a) if r.get("truncated") else len(a) + k + 1
            counted.append(simulate(head, p, a, eos, k, budget, target=target))
    proposed, accepted = sum(c.proposed for c in counted), sum(c.accepted for c in counted)
    acc = acceptance_stats(proposed, accepted, pooled_hist([c.hist for c in counted]) or [0] * (k + 1))
    metrics = {
        "rows_train": len(train), "rows_held_out": len(val_rows), "draft_vocab": len(vocab),
        "target_tokens": sum(len(s.ids) for s in train), "aux_layers": head.aux, "k": k,
        "trainable_parameters": sum(p.numel() for p in head.parameters() if p.requires_grad),
        "features_s": round(feats_s, 1), "train_s": round(train_s, 1),
        "train_loss_first": history[0]["loss"], "train_loss_last": history[-1]["loss"],
        **{f"train_{n}": v for n, v in history[-1].items() if n.endswith("_accuracy")},
        "acceptance_held_out": acc["acceptance_rate"],
        "mean_acceptance_length_held_out": acc["mean_acceptance_length"],
    }
    live.summary = metrics
    live.end()
    write_json(Path(args.live) / "metrics.json", metrics)
    eagle.save_head(head, args.out, verifier=str(args.target), k=k)
    log.info("%s: %d answers, loss %.3f -> %.3f; held-out acceptance %.3f, mean accepted length %.2f at k=%d (%d rows)",
             run_name(args), len(train), metrics["train_loss_first"], metrics["train_loss_last"],
             acc["acceptance_rate"], acc["mean_acceptance_length"], k, len(val_rows))


def _fit(head, train, cfg, live) -> list[dict]:
    from specdraft.train.eagle import train_head

    def log_step(step: int, m: dict) -> None:
        for name, v in m.items():
            live.log_metric(f"train/{name}", v)
        live.next_step()

    return train_head(head, train, cfg, log_step)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_name_args(p)
    p.add_argument("--target", required=True, type=Path, help="input: the trained target's folder")
    p.add_argument("--data", required=True, type=Path, help="input: the target's distilled answers")
    p.add_argument("--out", required=True, type=Path, help="output: the head's folder (speculators eagle3 layout)")
    p.add_argument("--live", required=True, type=Path, help="output: training curves and metrics (dvclive)")
    run(main, p)
