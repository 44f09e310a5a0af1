"""Generation benchmark: today's path and the CPU fast path, side by side in one run.

    python -m specdraft.tools.bench_generate [--json metrics/bench_generate.json] [--prompts 8]
    make bench-generate

Paths (hf engine, one request at a time unless stated):
- `today`: transformers' `generate()` (assisted generation for speculative decoding),
  torch's default fp32 kernels, the draft as trained (full head, fp32);
- `auto`: what `cpu_kernels: auto` picks at engine start here, with both paths' timings;
- `fast`: the lean greedy loop (specdraft.generate.greedy), oneDNN-packed fp32 linears,
  the draft with int8 weights and a head over the `--draft-vocab` most frequent tokens of
  its training data (the params' local settings); `eagle`: the fast path with the
  target's EAGLE-3 head (models/draft_eagle/<scenario>-<style>) when the pipeline trained one.

Printed and written: plain tokens/s at batch 1 and 8; the verify cost of a (k+1)-token
target forward in one-token steps for k+1 = 1..5; the draft's cost ratio c (one draft
forward / one target forward, same kernels) with and without int8 and the restricted
head, and the head's share of a draft forward; the restricted head's coverage of the
target's outputs; and for each k: acceptance, tokens per round, measured speedup (median
of per-prompt ratios, plain and speculative alternating per prompt), Leviathan's
predicted speedup with verify = 1 and with the measured verify cost, efficiency
(measured / predicted with verify = 1) and how many outputs equal plain greedy output.
And the prompt-prefix cache's effect on plain and speculative time (on and off, alternating
per prompt). Every ratio compares numbers measured in this run; nothing is a timed test.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

from specdraft.config import RuntimeConfig, apply_runtime, load_params, section
from specdraft.evaluate.stats import acceptance_stats, alpha_from_acceptance, leviathan_speedup, pooled_hist
from specdraft.generate.api import GenerationConfig
from specdraft.generate.cpu_kernels import forward_ms
from specdraft.generate.draft import cheapen, coverage
from specdraft.generate.hf_engine import HFEngine
from specdraft.io import read_jsonl
from specdraft.prompts import PromptsConfig, messages


def _tok_s(outs: list, seconds: float) -> float:
    return sum(o.output_tokens for o in outs) / seconds


def head_ms(model: Any, reps: int = 25) -> float:
    """Median time of the output head alone on one hidden state."""
    import torch

    head = model.get_output_embeddings()
    h = torch.randn(1, 1, model.config.hidden_size)
    times = []
    with torch.inference_mode():
        for _ in range(reps + 3):
            t = time.perf_counter()
            head(h)
            times.append(time.perf_counter() - t)
    return statistics.median(times[3:]) * 1000


def plain_speed(engines: dict[str, HFEngine], prompts: list[str]) -> dict[str, Any]:
    """Batch-1 tokens/s of each engine, alternating engines per prompt, and batch 8."""
    out: dict[str, Any] = {}
    secs = {n: 0.0 for n in engines}
    toks = {n: 0 for n in engines}
    ids = {n: [] for n in engines}
    for p in prompts:
        for name, eng in engines.items():
            o = eng.generate_one(p)
            secs[name] += o.latency_s
            toks[name] += o.output_tokens
            ids[name].append(o.token_ids)
    for name, eng in engines.items():
        t = time.perf_counter()
        b8 = eng.generate(prompts)  # batch_size 8 (both paths' GenerationConfig)
        out[name] = {"tok_s_batch1": toks[name] / secs[name], "tok_s_batch8": _tok_s(b8, time.perf_counter() - t),
                     "ms_per_token_batch1": 1000 * secs[name] / toks[name]}
    first = next(iter(engines))
    out["same_plain_outputs"] = {n: sum(a == b for a, b in zip(ids[first], ids[n], strict=True))
                                 for n in engines if n != first}
    out["plain_token_ids"] = ids
    return out


def speculative(eng: HFEngine, prompts: list[str], k: int, c: float, draft: str = "draft") -> dict[str, Any]:
    eng.cfg = dataclasses.replace(eng.cfg, num_speculative_tokens=k)
    if hasattr(eng.drafts[draft], "generation_config"):  # a draft model (an EAGLE head has none)
        eng.drafts[draft].generation_config.num_assistant_tokens = k
    ratios, same, plain_s, plain_tok = [], 0, 0.0, 0
    rounds = proposed = accepted = tokens = 0
    hists = []
    verify_s = draft_s = 0.0
    for p in prompts:  # alternate plain and speculative per prompt: paired timings
        a = eng.generate_one(p)
        s = eng.generate_one(p, draft)
        ratios.append(a.latency_s / s.latency_s)
        same += a.token_ids == s.token_ids
        plain_s += a.latency_s
        plain_tok += a.output_tokens
        rounds, proposed, accepted = rounds + s.rounds, proposed + s.proposed, accepted + s.accepted
        tokens += s.output_tokens
        hists.append(s.accepted_hist)
        verify_s += s.target_forward_s
        draft_s += s.draft_forward_s
    # the project's one acceptance function; the transformers loop keeps no per-round record,
    # so its mean accepted length is not known (tokens per round is printed for both)
    stats = acceptance_stats(proposed, accepted, pooled_hist(hists) if all(hists) else [0] * (k + 1))
    rate = stats["acceptance_rate"]
    alpha = alpha_from_acceptance(rate, k)
    step = plain_s / plain_tok
    verify = verify_s / rounds / step
    c_loop = draft_s / proposed / step if proposed else 0.0
    measured = statistics.median(ratios)
    predicted = leviathan_speedup(alpha, k, c if c is not None else c_loop)
    return {"k": k, "acceptance_rate": rate, "alpha": alpha, "tokens_per_round": tokens / rounds,
            "mean_acceptance_length": stats["mean_acceptance_length"] if all(hists) else None,
            "acceptance_per_position": stats["acceptance_per_position"] if all(hists) else None,
            "speedup_measured": measured, "speedup_predicted": predicted,
            "speedup_predicted_with_verify": leviathan_speedup(alpha, k, c if c is not None else c_loop, verify),
            "efficiency": measured / predicted, "verify_cost_in_loop": verify, "cost_ratio_c_in_loop": c_loop,
            "same_as_plain": same, "prompts": len(prompts)}


def prefix_effect(eng: HFEngine, prompts: list[str], k: int) -> dict[str, Any]:
    """Plain and speculative (k) batch-1 decoding with the prompts' shared prefix cached
    (generation.prefix_cache) and without, alternating per prompt on one engine: seconds
    per answer, the speedup either way, and how many outputs are unchanged."""
    from specdraft.generate.greedy import NO_PREFIX

    n = eng.cache_prefix(prompts)
    cached, times = eng.prefix, {m: {"plain": [], "spec": []} for m in ("on", "off")}
    same = 0
    for i, p in enumerate(prompts):
        outs = {}
        for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
            eng.prefix = cached if mode == "on" else NO_PREFIX
            a, b = eng.generate_one(p), eng.generate_one(p, "draft")
            times[mode]["plain"].append(a.latency_s)
            times[mode]["spec"].append(b.latency_s)
            outs[mode] = (a.token_ids, b.token_ids)
        same += outs["on"][0] == outs["off"][0] == outs["on"][1] == outs["off"][1]
    eng.prefix = NO_PREFIX
    prompt_tokens = statistics.mean(len(eng.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts)
    out: dict[str, Any] = {"k": k, "prefix_tokens": n, "prompt_tokens_mean": prompt_tokens, "same_outputs": same,
                           "prompts": len(prompts)}
    for m, t in times.items():
        out[m] = {"plain_s": statistics.mean(t["plain"]), "spec_s": statistics.mean(t["spec"]),
                  "speedup": statistics.median(a / b for a, b in zip(t["plain"], t["spec"], strict=True))}
    out["plain_on_over_off"] = out["on"]["plain_s"] / out["off"]["plain_s"]
    return out


def run(target: Path, draft: Path, questions: list[str], draft_data: tuple[list[str], list[str]],
        prompts_cfg: PromptsConfig, max_new: int, ks: list[int], draft_vocab: int, today_ks: list[int],
        eagle: Path | None = None) -> dict:
    """`eagle`: the target's EAGLE-3 head (models/draft_eagle/...), timed on the fast path
    beside the draft model when given."""
    paths = {
        "today": GenerationConfig(max_new_tokens=max_new, batch_size=8, decode_loop="transformers",
                                  cpu_kernels="default"),
        "fast": GenerationConfig(max_new_tokens=max_new, batch_size=8, decode_loop="specdraft", cpu_kernels="onednn",
                                 draft_quant="int8", draft_vocab=draft_vocab),
    }
    drafts = {"today": draft, "fast": {"draft": draft, **({"eagle": eagle} if eagle else {})}}
    engines = {n: HFEngine(target, drafts[n], cfg, draft_data=draft_data) for n, cfg in paths.items()}
    prompts = [engines["fast"].render(messages(prompts_cfg, "cot", q)) for q in questions]
    for eng in engines.values():
        eng.generate_one(prompts[0], "draft")  # warm-up
    res: dict[str, Any] = {"target": str(target), "draft": str(draft), "eagle": eagle and str(eagle),
                           "prompts": len(prompts),
                           "max_new_tokens": max_new, "draft_vocab": draft_vocab,
                           "paths": {n: {k: v for k, v in dataclasses.asdict(c).items() if k != "vllm"}
                                     for n, c in paths.items()}}

    speed = plain_speed(engines, prompts)
    plain_ids = speed.pop("plain_token_ids")
    res["plain"] = speed
    res["plain"]["fast_over_today_batch1"] = speed["fast"]["tok_s_batch1"] / speed["today"]["tok_s_batch1"]

    # verify cost: a forward of k+1 new tokens, in one-token forwards of the same kernels
    pid = engines["fast"].tokenizer(prompts[0], add_special_tokens=False)["input_ids"] + plain_ids["fast"][0][:40]
    res["verify_cost"] = {}
    for name, eng in engines.items():
        t = forward_ms(eng.model, list(range(1, 6)), context=len(pid), reps=25)
        res["verify_cost"][name] = {"target_forward_ms": t, "cost_in_steps": {r: t[r] / t[1] for r in t}}

    # draft cost ratio c for each way of cheapening the draft, against the target of the same kernels
    def draft_variant(kernels: str, quant: str, vocab: int) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(draft, dtype=torch.float32).eval()
        return cheapen(model, engines["fast"].draft_subset if vocab else None, quant, kernels)

    target_ms = {n: res["verify_cost"][n]["target_forward_ms"][1] for n in engines}
    res["draft_cost"] = []
    for kernels, quant, vocab in (("default", "none", 0), ("onednn", "none", 0), ("onednn", "int8", 0),
                                  ("onednn", "none", draft_vocab), ("onednn", "int8", draft_vocab)):
        model = draft_variant(kernels, quant, vocab)
        d = forward_ms(model, [1], context=len(pid), reps=25)[1]
        h = head_ms(model)
        res["draft_cost"].append({"kernels": kernels, "quant": quant, "vocab": vocab or "full",
                                  "draft_forward_ms": d, "head_ms": h, "head_share": h / d,
                                  "cost_ratio_c": d / target_ms["today" if kernels == "default" else "fast"]})
    # cpu_kernels: auto, as an engine start runs it: both paths timed on a fresh copy of the target
    import torch
    from transformers import AutoModelForCausalLM

    from specdraft.generate.cpu_kernels import choose_kernels

    fresh = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    res["auto_kernels"] = choose_kernels(fresh, [1, 2, 3, 4, 5])
    del fresh
    res["draft_vocab_subset_size"] = len(engines["fast"].draft_subset or [])
    res["draft_vocab_coverage"] = coverage(engines["fast"].draft_subset or [], plain_ids["fast"])

    res["speculative"] = {"fast": [speculative(engines["fast"], prompts, k, None) for k in ks],
                          "today": [speculative(engines["today"], prompts, k, None) for k in today_ks]}
    if eagle:  # the head: one decoder layer over the target's features (c from the loop's timers)
        res["speculative"]["eagle"] = [speculative(engines["fast"], prompts, k, None, "eagle") for k in ks]
    res["prefix_cache"] = prefix_effect(engines["fast"], prompts, max(ks))
    return res


def print_table(res: dict) -> None:
    p = res["plain"]
    print(f"\ngeneration benchmark: target {res['target']}, draft {res['draft']}, {res['prompts']} prompts, "
          f"max_new_tokens {res['max_new_tokens']}, greedy, hf engine")
    for n in ("today", "fast"):
        print(f"  {n:5s} plain tokens/s  batch 1: {p[n]['tok_s_batch1']:6.1f}   batch 8: {p[n]['tok_s_batch8']:6.1f}")
    print(f"  fast / today at batch 1: {p['fast_over_today_batch1']:.2f}x; fast plain output == today's on "
          f"{p['same_plain_outputs']['fast']}/{res['prompts']} prompts")
    for n in ("today", "fast"):
        v = res["verify_cost"][n]
        print(f"  {n:5s} target forward ms for 1..5 new tokens: "
              + " ".join(f"{v['target_forward_ms'][r]:.1f}" for r in range(1, 6))
              + "   verify cost (steps): " + " ".join(f"{v['cost_in_steps'][r]:.2f}" for r in range(1, 6)))
    auto = res["auto_kernels"]
    for n, t in auto["forward_ms"].items():
        print(f"  auto probe, {n:7s} forward ms for rows {auto['rows']}: " + " ".join(f"{x:.1f}" for x in t.values()))
    print(f"  cpu_kernels: auto picks {auto['choice']} on this machine (smaller summed time at those shapes)")
    print("  draft: kernels quant vocab  forward_ms head_ms head_share  c")
    for d in res["draft_cost"]:
        print(f"         {d['kernels']:7s} {d['quant']:5s} {d['vocab']!s:5s} {d['draft_forward_ms']:10.2f} "
              f"{d['head_ms']:7.2f} {d['head_share']:10.2f} {d['cost_ratio_c']:.3f}")
    print(f"  restricted head: {res['draft_vocab_subset_size']} tokens, coverage of the target's outputs "
          f"{res['draft_vocab_coverage']:.3f}")
    hdr = ("path", "k", "accept", "mean len", "tok/round", "speedup", "pred(v=1)", "pred(v)", "efficiency", "verify", "c", "same")
    print("  " + " ".join(f"{h:>10}" for h in hdr))
    for n in ("today", "fast", "eagle"):
        for r in res["speculative"].get(n, []):
            mlen = "–" if r["mean_acceptance_length"] is None else f"{r['mean_acceptance_length']:.2f}"
            vals = (n, r["k"], f"{r['acceptance_rate']:.3f}", mlen, f"{r['tokens_per_round']:.2f}",
                    f"{r['speedup_measured']:.2f}x", f"{r['speedup_predicted']:.2f}x",
                    f"{r['speedup_predicted_with_verify']:.2f}x", f"{r['efficiency']:.2f}",
                    f"{r['verify_cost_in_loop']:.2f}", f"{r['cost_ratio_c_in_loop']:.3f}",
                    f"{r['same_as_plain']}/{r['prompts']}")
            print("  " + " ".join(f"{v!s:>10}" for v in vals))
    print("  efficiency = measured / predicted with verify = 1 (Leviathan et al. 2023, Thm 3.8); verify and c "
          "from the decoding loop's own timers")
    pc = res["prefix_cache"]
    print(f"  prefix cache (fast path, k = {pc['k']}): {pc['prefix_tokens']} of {pc['prompt_tokens_mean']:.0f} prompt "
          f"tokens prefilled once; s/answer plain {pc['off']['plain_s']:.3f} -> {pc['on']['plain_s']:.3f}, "
          f"speculative {pc['off']['spec_s']:.3f} -> {pc['on']['spec_s']:.3f}; speedup {pc['off']['speedup']:.2f}x -> "
          f"{pc['on']['speedup']:.2f}x; outputs unchanged on {pc['same_outputs']}/{pc['prompts']}\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="gsm8k")
    p.add_argument("--style", default="cot")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--ks", default="2,3,4")
    p.add_argument("--today-ks", default="2")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args()
    params = load_params()
    apply_runtime(section(RuntimeConfig, "runtime", params))
    prompts_cfg = section(PromptsConfig, "prompts", params)
    gen = section(GenerationConfig, "generation", params)
    name = f"{a.scenario}-{a.style}"
    trained = Path("models/draft") / name
    # the pipeline's trained pair when it exists, else the base models
    target, draft = ((Path("models/target") / name, trained) if (trained / "config.json").exists()
                     else (Path("models/base/target"), Path("models/base/draft")))
    eagle = Path("models/draft_eagle") / name
    distilled = Path("data/distilled") / f"{name}.jsonl"
    src = (read_jsonl(distilled, ["question", "response"]) if distilled.exists() else
           [{"question": r["question"], "response": r["answer"]}
            for r in read_jsonl(Path("data/prepared") / a.scenario / "train.jsonl", ["question", "answer"])])
    questions = [r["question"] for r in read_jsonl(Path("data/prepared") / a.scenario / "test.jsonl", ["question"])]
    res = run(target, draft, questions[: a.prompts], ([r["response"] for r in src], [r["question"] for r in src]),
              prompts_cfg, a.max_new_tokens, [int(k) for k in a.ks.split(",")], gen.draft_vocab or 2048,
              [int(k) for k in a.today_ks.split(",")], eagle if (eagle / "config.json").exists() else None)
    print_table(res)
    if a.json:
        from specdraft.io import write_json

        write_json(a.json, res)


if __name__ == "__main__":
    main()
