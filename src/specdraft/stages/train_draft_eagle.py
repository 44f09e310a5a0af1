"""Stage train_draft_eagle@<scenario>-<style>: an EAGLE-3 head for the trained target,
trained on the target's features over its own distilled answers (specdraft.train.eagle),
saved in speculators' eagle3 layout (specdraft.generate.eagle), which vLLM's `eagle3`
method serves and the hf engine decodes exactly.

Reads the trained target and data/distilled/<scenario>-<style>.jsonl; writes the head to
--out and curves, final losses and the head's exact acceptance on held-out answers
(greedy.simulate at generation.num_speculative_tokens, the decoding loop itself) to --live.
The same held-out acceptance, measured after every epoch, chooses the epoch the head keeps
and stops training (train_draft_eagle.patience).
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
from specdraft.train.eagle import EagleSettings, best_epoch

log = logging.getLogger("train_draft_eagle")


def held_out(rows: list[dict], share: float, seed: int, most: int) -> tuple[list[dict], list[dict]]:
    """(training answers, held-out answers): `share` of them held out, at most `most` (the
    rest of that share trains: at paper scale 10 % would be hundreds of answers, and every
    epoch simulates decoding on each held-out one)."""
    from specdraft.train.examples import split

    if share <= 0 or len(rows) <= 1:
        return rows, []
    train, val = split(rows, share, seed)
    return train + val[most:], val[:most]


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

    train_rows, val_rows = held_out(rows, cfg.val_share, cfg.seed, cfg.held_out_max)
    ranking = draft_vocab.token_ranking(tok, [r["response"] for r in train_rows], [r["question"] for r in train_rows])
    vocab = draft_vocab.vocab_subset(tok, ranking, cfg.draft_vocab, target.config.vocab_size)
    head = eagle.new_head(target, vocab, init=cfg.init)
    t0 = time.perf_counter()
    train = collect(target, [pair(r) for r in train_rows], head.aux)
    # the held-out answers' features, taken once: every epoch's acceptance check reads them
    val_pairs = [pair(r) for r in val_rows]
    val = collect(target, val_pairs, head.aux)
    feats_s = time.perf_counter() - t0
    live = Live(dir=str(args.live), dvcyaml=None, save_dvc_exp=False)
    eos = eos_ids(target, tok)

    def held_out_acceptance(h) -> dict:
        """The decoding loop itself (greedy.simulate) on the held-out answers at draft length
        k, fed the features collected above (the target's, as its verifies give them)."""
        counted = []
        for r, (p, a), s in zip(val_rows, val_pairs, val, strict=True):
            budget = len(a) if r.get("truncated") else len(a) + k + 1
            counted.append(simulate(h, p, a, eos, k, budget, target=target, features=s.feats[:-1].to(h.device)))
        proposed, accepted = sum(c.proposed for c in counted), sum(c.accepted for c in counted)
        return acceptance_stats(proposed, accepted, pooled_hist([c.hist for c in counted]) or [0] * (k + 1))

    if device == "cuda":  # the head trains alone on the GPU (specdraft.plan: the target is 29.5 GB at 14B)
        target.to("cpu")
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    history = _fit(head, train, cfg, live, held_out_acceptance if val_rows else None)
    train_s = time.perf_counter() - t0
    target.to(device)

    with torch.inference_mode():
        acc = held_out_acceptance(head)
    kept = best_epoch(history, cfg)
    metrics = {
        "rows_train": len(train), "rows_held_out": len(val_rows), "draft_vocab": len(vocab),
        "target_tokens": sum(len(s.ids) for s in train), "aux_layers": head.aux, "k": k,
        "trainable_parameters": sum(p.numel() for p in head.parameters() if p.requires_grad),
        "features_s": round(feats_s, 1), "train_s": round(train_s, 1),
        # the epoch the head's weights are from (chosen by held-out acceptance: patience) and
        # how many ran; the held-out figures below are that epoch's, so they are the basis of
        # the choice (optimistic by it): the test set's evaluation is the unbiased measure
        "epochs_run": len(history), "epoch_kept": kept,
        "train_loss_first": history[0]["loss"], "train_loss_last": history[kept - 1]["loss"],
        **{f"train_{n}": v for n, v in history[kept - 1].items() if n.endswith("_accuracy") and "held_out" not in n},
        "acceptance_held_out": acc["acceptance_rate"],
        "mean_acceptance_length_held_out": acc["mean_acceptance_length"],
    }
    live.summary = metrics
    live.end()
    write_json(Path(args.live) / "metrics.json", metrics)
    eagle.save_head(head, args.out, verifier=str(args.target), k=k)
    log.info("%s: %d answers, loss %.3f -> %.3f; epoch %d of %d kept; held-out acceptance %.3f, mean accepted length "
             "%.2f at k=%d (%d rows)", run_name(args), len(train), metrics["train_loss_first"],
             metrics["train_loss_last"], kept, len(history), acc["acceptance_rate"], acc["mean_acceptance_length"], k,
             len(val_rows))


def _fit(head, train, cfg, live, held_out) -> list[dict]:
    from specdraft.train.eagle import train_head

    def log_step(step: int, m: dict) -> None:
        live.step = step  # batches; the held-out figures come at each epoch's last batch
        for name, v in m.items():
            live.log_metric(name.replace("held_out_", "held_out/", 1) if name.startswith("held_out_")
                            else f"train/{name}", v)

    return train_head(head, train, cfg, log_step, held_out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_name_args(p)
    p.add_argument("--target", required=True, type=Path, help="input: the trained target's folder")
    p.add_argument("--data", required=True, type=Path, help="input: the target's distilled answers")
    p.add_argument("--out", required=True, type=Path, help="output: the head's folder (speculators eagle3 layout)")
    p.add_argument("--live", required=True, type=Path, help="output: training curves and metrics (dvclive)")
    run(main, p)
