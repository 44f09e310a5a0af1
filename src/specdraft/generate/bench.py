"""Generation benchmark: prints figures measured side by side in one run (not a timed test).

    python -m specdraft.generate.bench [--draft DIR] [--prompts N] [--max-new-tokens M]

On the local target and draft: tokens/s of the hf engine at batch 1 and batch 8; then for
speculative decoding at 2, 4 and 8 draft tokens: acceptance rate, mean acceptance length,
the cost ratio c (draft decode step / target decode step, each timed in plain greedy
generation of the same prompts), the measured speedup over plain greedy (median of
per-prompt ratios, plain and speculative alternating per prompt so machine noise cancels),
the speedup Leviathan's formula predicts from the measured acceptance, draft length and c,
and their ratio (implementation efficiency). All ratios come from this one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from specdraft.config import RuntimeConfig, apply_runtime, load_params, section
from specdraft.generate.engine import GenerationConfig, HFEngine, acceptance, alpha_from_acceptance, leviathan_speedup
from specdraft.io import read_jsonl
from specdraft.prompts import PromptsConfig, messages


def _tok_s(outs, seconds: float) -> float:
    return sum(o.output_tokens for o in outs) / seconds


def run(target: Path, draft: Path, questions: list[str], prompts_cfg: PromptsConfig, max_new: int,
        ks: list[int]) -> dict:
    cfg = GenerationConfig(max_new_tokens=max_new, batch_size=8)
    eng = HFEngine(target, draft, cfg)
    prompts = [eng.render(messages(prompts_cfg, "cot", q)) for q in questions]
    eng.generate_one(prompts[0], speculative=False)  # warm-up
    res: dict = {"prompts": len(prompts), "max_new_tokens": max_new}

    t = time.perf_counter()
    b1 = [eng.generate_one(p, speculative=False) for p in prompts]
    res["tok_s_batch1"] = _tok_s(b1, time.perf_counter() - t)
    t = time.perf_counter()
    b8 = eng.generate(prompts, batch_size=8)
    res["tok_s_batch8"] = _tok_s(b8, time.perf_counter() - t)
    res["batch8_over_batch1"] = res["tok_s_batch8"] / res["tok_s_batch1"]

    # cost ratio c: per-token time of the draft alone vs the target alone, same prompts
    draft_eng = HFEngine(draft, None, cfg)
    t = time.perf_counter()
    d1 = [draft_eng.generate_one(p, speculative=False) for p in prompts]
    draft_tpt = (time.perf_counter() - t) / sum(o.output_tokens for o in d1)
    target_tpt = 1 / res["tok_s_batch1"]
    res["cost_ratio_c"] = draft_tpt / target_tpt
    del draft_eng

    rows = []
    for k in ks:
        eng.draft.generation_config.num_assistant_tokens = k
        ratios, spec_outs, plain_t, spec_t, same, plain_tok = [], [], 0.0, 0.0, 0, 0
        for p in prompts:  # alternate plain and speculative per prompt: paired timings
            a = eng.generate_one(p, speculative=False)
            s = eng.generate_one(p, speculative=True)
            ratios.append(a.latency_s / s.latency_s)
            plain_t += a.latency_s
            plain_tok += a.output_tokens
            spec_t += s.latency_s
            spec_outs.append(s)
            same += a.token_ids == s.token_ids
        acc = acceptance(spec_outs)
        alpha = alpha_from_acceptance(acc["acceptance_rate"], k)
        predicted = leviathan_speedup(alpha, k, res["cost_ratio_c"])
        # the cost of one verify forward (k+1 tokens) in plain decode steps, timed by hooks
        verify = (sum(s.target_forward_s for s in spec_outs) / acc["rounds"]) / (plain_t / plain_tok)
        measured = statistics.median(ratios)
        rows.append({"k": k, **acc, "alpha": alpha, "speedup_measured": measured,
                     "speedup_total_time": plain_t / spec_t, "speedup_predicted": predicted,
                     "efficiency": measured / predicted, "verify_cost": verify,
                     "speedup_predicted_with_verify": leviathan_speedup(alpha, k, res["cost_ratio_c"], verify),
                     "identical_outputs": f"{same}/{len(prompts)}"})
    res["speculative"] = rows
    return res


def print_table(res: dict, target: Path, draft: Path) -> None:
    print(f"\ngeneration benchmark: target {target}, draft {draft}, {res['prompts']} prompts, "
          f"max_new_tokens {res['max_new_tokens']}, greedy, hf engine")
    print(f"  plain tokens/s  batch 1: {res['tok_s_batch1']:.1f}   batch 8: {res['tok_s_batch8']:.1f}   "
          f"ratio: {res['batch8_over_batch1']:.2f}x")
    print(f"  cost ratio c (draft step / target step): {res['cost_ratio_c']:.3f}")
    hdr = ("k", "accept", "alpha", "tok/round", "speedup", "predicted", "efficiency", "verify", "pred+v", "same")
    print("  " + " ".join(f"{h:>10}" for h in hdr))
    for r in res["speculative"]:
        vals = (r["k"], f"{r['acceptance_rate']:.3f}", f"{r['alpha']:.3f}", f"{r['mean_acceptance_length']:.2f}",
                f"{r['speedup_measured']:.2f}x", f"{r['speedup_predicted']:.2f}x", f"{r['efficiency']:.2f}",
                f"{r['verify_cost']:.2f}", f"{r['speedup_predicted_with_verify']:.2f}x", r["identical_outputs"])
        print("  " + " ".join(f"{v:>10}" for v in vals))
    best = max(res["speculative"], key=lambda r: r["speedup_measured"])
    print(f"  best draft length k={best['k']}: efficiency {best['efficiency']:.2f} (measured / predicted); "
          f"verify = one (k+1)-token target forward in plain decode steps (Leviathan assumes 1); "
          f"pred+v = the prediction with that measured cost\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="models/base/target")
    p.add_argument("--draft", default=None, help="default: a trained draft if one exists, else models/base/draft")
    p.add_argument("--data", default="data/prepared/gsm8k/test.jsonl")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--ks", default="2,4,8")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args()
    params = load_params()
    apply_runtime(section(RuntimeConfig, "runtime", params))
    prompts_cfg = section(PromptsConfig, "prompts", params)
    draft = Path(a.draft) if a.draft else next(
        (d for d in sorted(Path("models/draft").glob("gsm8k-cot*")) if (d / "config.json").exists()),
        Path("models/base/draft"))
    questions = [r["question"] for r in read_jsonl(a.data, ["question"])][: a.prompts]
    res = run(Path(a.target), draft, questions, prompts_cfg, a.max_new_tokens, [int(k) for k in a.ks.split(",")])
    print_table(res, Path(a.target), draft)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
