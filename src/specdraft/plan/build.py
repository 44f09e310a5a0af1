"""The plan of a profile on a GPU: per GPU stage its peak memory and breakdown, whether it
fits with 10 % headroom, and its hours; totals of GPU-hours, disk and the Gemini cost.

Memory is measured (specdraft.plan.track on the stage's own code at real shapes, or
vLLM's accounting for the decoding stages); hours and disk are estimates from counted
FLOPs and bytes with the stated utilisation (specdraft.plan.gpus) and the assumed answer
lengths below, which the teacher's output replaces once it exists.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from specdraft.plan import gpus as gpu_table
from specdraft.plan.stages import (
    architecture,
    count_parameters,
    head_parameters,
    plan_eagle,
    plan_engine,
    plan_sft,
)
from specdraft.plan.track import CUDA_OVERHEAD_GIB, GIB, gib

# Assumed mean tokens per example, before any teacher output exists: a prompt (chat
# template, system prompt, question) and an answer per scenario and style. GSM8K CoT ~205
# and CoD ~44 tokens (GPT-4o, Xu et al. 2025); MATH Algebra L1-2 solutions about 1.5x
# GSM8K's, Intermediate Algebra L3-4 about 3x.
PROMPT_TOKENS = 150
ANSWER_TOKENS = {"gsm8k": {"cot": 220, "cod": 60}, "math_algebra_l12": {"cot": 330, "cod": 90},
                 "math_intalg_l34": {"cot": 660, "cod": 180}}
DEFAULT_ANSWER = {"cot": 400, "cod": 120}
ENGINE_START_S = 90  # a 14B engine: weights from local disk, torch.compile and CUDA graph capture
GEMINI_BATCH_WAIT_H = (1, 24)  # typical and the Batch API's stated target turnaround (jobs expire at 48 h)
STYLES = ("cot", "cod")


def _answer(scenario: str, style: str) -> int:
    return ANSWER_TOKENS.get(scenario, DEFAULT_ANSWER)[style]


def _launcher_world(launcher: str, ngpu: int) -> tuple[int, str]:
    """(processes, how) for a training launcher on `ngpu` GPUs (specdraft.train.launch:
    plain python runs on one GPU; an accelerate config on every visible GPU)."""
    if "accelerate" not in launcher and "specdraft.train.launch" not in launcher:
        return 1, "python: one GPU" + (f" of {ngpu}" if ngpu > 1 else "")
    kind = "fsdp" if "fsdp" in launcher else "zero3" if "zero3" in launcher else "ddp"
    return ngpu, f"{kind} x{ngpu}"


def _per_rank(fp: dict[str, float], kind: str, world: int, layer_params: float) -> dict[str, float]:
    """A rank's share under a data-parallel launcher, by arithmetic on the measured
    categories: DDP adds gradient buckets the size of the trainable gradients; FSDP and
    ZeRO-3 shard parameters, gradients and optimizer state and gather two layers at a
    time (the one computing and the one prefetched)."""
    out = dict(fp)
    if world <= 1:
        return out
    if kind.startswith("ddp"):
        out["Other"] = out.get("Other", 0.0) + out.get("Gradient", 0.0)
    else:
        for c in ("Parameter", "Gradient", "Optstate"):
            out[c] = out.get(c, 0.0) / world
        out["Other"] = out.get("Other", 0.0) + 2 * layer_params
    return out


def _row(stage: str, peak: dict[str, float], gpu: Any, hours: float, gpus: int, how: str,
         notes: list[str], setting: str, reserved: float | None = None) -> dict[str, Any]:
    total = sum(peak.values()) + CUDA_OVERHEAD_GIB * GIB
    limit = reserved if reserved is not None else gpu.usable_gib * GIB
    return {"stage": stage, "peak_gib": gib(total), "breakdown_gib": {k: gib(v) for k, v in peak.items() if v},
            "limit_gib": gib(limit), "fits": total <= limit, "gpus": gpus, "how": how,
            "gpu_hours": round(hours * gpus, 2), "wall_hours": round(hours, 2), "notes": notes,
            "setting": setting}


def make_plan(params: dict[str, Any], gpu_name: str, ngpu: int) -> dict[str, Any]:
    """The plan of the composed profile `params` on `ngpu` GPUs of kind `gpu_name` ("auto":
    the GPUs torch sees here, all of them)."""
    from specdraft.config import build
    from specdraft.generate.api import GenerationConfig
    from specdraft.train.eagle import EagleSettings
    from specdraft.train.settings import TrainConfig

    if gpu_name == "auto":
        gpu, ngpu = gpu_table.detect()
    else:
        gpu = gpu_table.gpu(gpu_name)
    tt = build(TrainConfig, params["train_target"], "train_target")
    td = build(TrainConfig, params["train_draft"], "train_draft")
    te = build(EagleSettings, params["train_draft_eagle"], "train_draft_eagle")
    gen = build(GenerationConfig, params["generation"], "generation")
    target = architecture(params["models"]["target"])
    draft = architecture(params["models"]["draft"], target)
    scenarios = list(params["scenarios"])
    n_train, n_test, n_val = (params["prepare"][k] for k in ("n_train", "n_test", "n_val"))
    extra = params.get("distill", {}).get("extra_questions", 0) or 0
    rows, notes_all = [], []
    flops_s = gpu.bf16_tflops * 1e12 * gpu_table.MFU

    # -- training stages: one step at real shapes on meta tensors
    def sft_rows(name: str, arch: dict, cfg: TrainConfig, setting: str) -> None:
        r = plan_sft(arch, cfg)
        fp = r["footprint"]
        world, how = _launcher_world(cfg.launcher, ngpu)
        layer = 2.0 * count_parameters({**arch, "num_hidden_layers": 1}) / max(arch["num_hidden_layers"], 1)
        per_token = fp.flops / r["tokens_per_step"]
        hours = 0.0
        for sc in scenarios:
            for st in STYLES:
                tokens = n_train * (PROMPT_TOKENS + _answer(sc, st)) * cfg.epochs
                hours += tokens * per_token / flops_s / 3600 / world
        row = _row(name, _per_rank(fp.peak, how, world, layer), gpu, hours, world, how, r["notes"], setting)
        if not row["fits"]:
            row["fix"] = _fix_sft(arch, cfg, name, gpu, how, world, layer)
        rows.append(row)

    sft_rows("train_target", target, tt, "train_target.batch_size / max_length / gradient_checkpointing / "
             "load_in_4bit, launcher")
    sft_rows("train_draft", draft, td, "train_draft.batch_size / max_length / gradient_checkpointing, launcher")

    seq = tt.max_length
    e = plan_eagle(target, te, seq)
    n_params = count_parameters(target)
    tokens_all = sum(n_train * (PROMPT_TOKENS + _answer(sc, st)) for sc in scenarios for st in STYLES)
    collect_h = tokens_all * 2.0 * n_params / flops_s / 3600
    train_h = tokens_all * te.epochs * e["train"].flops / e["tokens_per_step"] / flops_s / 3600
    rows.append(_row("train_draft_eagle (features)", e["collect"].peak, gpu, collect_h, 1, "one GPU",
                     ["one answer of max_length at a time, features to host memory"],
                     "train_target.max_length"))
    rows.append(_row("train_draft_eagle (head)", e["train"].peak, gpu, train_h, 1, "one GPU", e["notes"],
                     "train_draft_eagle.batch_size / ttt_steps / draft_vocab"))
    b = te.batch_size
    while not rows[-1]["fits"] and b > 1 and "fix" not in rows[-1]:
        b //= 2
        smaller = dataclasses.replace(te, batch_size=b)
        if sum(plan_eagle(target, smaller, seq)["train"].peak.values()) + CUDA_OVERHEAD_GIB * GIB \
                <= gpu.usable_gib * GIB:
            rows[-1]["fix"] = [f"train_draft_eagle.batch_size={b}"]
    if params.get("train_draft_kd", {}).get("scenarios"):
        notes_all.append("train_draft_kd is opted in but not planned: plan it before the run")

    # -- decoding stages: vLLM's accounting, time from memory bandwidth
    v = gen.vllm
    tp = v.tensor_parallel_size if ngpu >= v.tensor_parallel_size else 1
    dtp = v.draft_tensor_parallel_size if tp > 1 else 1
    head_p = head_parameters(target, te.draft_vocab)
    weights_read = 2.0 * n_params / tp
    step_s = weights_read / (gpu.bandwidth_tbs * 1e12 * gpu_table.BANDWIDTH_USE)

    def decode_h(questions: int, tokens: int, batch: int) -> float:
        return questions * tokens / batch * step_s / 3600

    timed = params["eval"]["timed_prompts"]
    variants = list(params["eval"]["variants"])
    for name, drafts, questions, starts in (
        ("distill", None, n_train + extra, 1),
        ("evaluate_base", None, n_test + n_val, 1),
        ("evaluate (draft model)", draft, n_test + n_val, 1 + len(variants)),
        ("evaluate (EAGLE-3 head)", None, n_test + n_val, 1 + len(variants)),
    ):
        eng = plan_engine(target, drafts, head_p if "EAGLE" in name else 0, v, gpu.memory_gib, tp, dtp)
        per_job = [_answer(sc, st) for sc in scenarios for st in STYLES]
        if name == "evaluate_base":
            per_job = [_answer(sc, params["eval"]["base_style"]) for sc in scenarios]
        hours = sum(decode_h(questions, t, v.max_num_seqs) for t in per_job)
        if name.startswith("evaluate ("):  # each configuration's pass, and batch-1 timing
            hours = hours * (1 + len(variants)) + sum(timed * t * (1 + len(variants)) * step_s / 3600
                                                      for t in per_job)
        hours += len(per_job) * starts * ENGINE_START_S / 3600
        peak = {"weights": eng.weights, "kv_cache": eng.kv_cache, "activations": eng.activations,
                "cuda_graphs": eng.cuda_graphs, "draft": eng.draft}
        rows.append(_row(name, peak, gpu, hours, tp, f"vLLM tp={tp}" + (f", draft tp={dtp}" if drafts else ""),
                         [f"{len(per_job) * starts} engine starts"], "generation.vllm.gpu_memory_utilization / "
                         "max_model_len / max_num_seqs / tensor_parallel_size", reserved=eng.reserved))
        seqs = v.max_num_seqs
        while not rows[-1]["fits"] and seqs > 1 and "fix" not in rows[-1]:
            seqs //= 2
            fewer = dataclasses.replace(v, max_num_seqs=seqs)
            e2 = plan_engine(target, drafts, head_p if "EAGLE" in name else 0, fewer, gpu.memory_gib, tp, dtp)
            if e2.needed + CUDA_OVERHEAD_GIB * GIB <= e2.reserved:
                rows[-1]["fix"] = [f"generation.vllm.max_num_seqs={seqs}"]

    # -- totals
    runs = {"train_target": 2 * len(scenarios), "train_draft": 2 * len(scenarios)}
    gpu_h = sum(r["gpu_hours"] for r in rows)
    wall_h = sum(r["wall_hours"] for r in rows)
    disk = _disk(n_params, count_parameters(draft), head_p, len(scenarios))
    gemini = _gemini(params, scenarios)
    return {"profile": params.get("meta", {}).get("profile"), "gpu": gpu.name, "gpu_memory_gib": round(gpu.memory_gib, 1),
            "ngpu": ngpu, "headroom": gpu_table.HEADROOM, "mfu": gpu_table.MFU,
            "bandwidth_use": gpu_table.BANDWIDTH_USE, "cuda_overhead_gib": CUDA_OVERHEAD_GIB,
            "stages": rows, "runs_per_stage": runs,
            "totals": {"gpu_hours": round(gpu_h, 1), "wall_hours": round(wall_h, 1),
                       "disk_gb": round(sum(disk.values()), 0), "disk_gb_by_kind": disk,
                       "gemini_usd_max": round(gemini, 2),
                       "gemini_batch_wait_h": list(GEMINI_BATCH_WAIT_H)},
            "fits": all(r["fits"] for r in rows), "notes": notes_all,
            "assumptions": {"prompt_tokens": PROMPT_TOKENS, "answer_tokens": ANSWER_TOKENS,
                            "engine_start_s": ENGINE_START_S}}


def _fix_sft(arch: dict, cfg: Any, name: str, gpu: Any, how: str, world: int, layer: float) -> list[str]:
    """The first settings, in order of what they cost, with which the stage fits: a smaller
    per-device batch (the same global batch through accumulation), gradient checkpointing,
    a 4-bit base (QLoRA, LoRA only), then half the example length (which refuses longer
    training examples). Empty when none does."""
    tried: list[tuple[list[str], Any]] = []
    b, acc = cfg.batch_size, cfg.grad_accum
    while b > 1:
        b, acc = b // 2, acc * 2
        tried.append(([f"{name}.batch_size={b}", f"{name}.grad_accum={acc}"],
                      dataclasses.replace(cfg, batch_size=b, grad_accum=acc)))
    base = tried[-1] if tried else ([], cfg)
    if not cfg.gradient_checkpointing:
        base = (base[0] + [f"{name}.gradient_checkpointing=true"], dataclasses.replace(base[1], gradient_checkpointing=True))
        tried.append(base)
    if cfg.method == "lora" and not cfg.load_in_4bit:
        base = (base[0] + [f"{name}.load_in_4bit=true"], dataclasses.replace(base[1], load_in_4bit=True))
        tried.append(base)
    # last, since it changes the data: examples longer than max_length are refused
    tried.append((base[0] + [f"{name}.max_length={cfg.max_length // 2}"],
                  dataclasses.replace(base[1], max_length=cfg.max_length // 2)))
    for settings, c in tried:
        peak = _per_rank(plan_sft(arch, c)["footprint"].peak, how, world, layer)
        if sum(peak.values()) + CUDA_OVERHEAD_GIB * GIB <= gpu.usable_gib * GIB:
            return settings
    return []


def _disk(target: int, draft: int, head: int, scenarios: int) -> dict[str, float]:
    """GB on disk at the end of a run: the hub cache's copy of each base model, the
    pipeline's own base folders, a merged bf16 target, a draft and a head per target, each
    also in the DVC cache (a copy unless the cache links), and one checkpoint in flight."""
    gb = 1e9
    n = 2 * scenarios
    return {"hub_cache": round(2 * (target + draft) / gb, 1),
            "models": round(2 * (target + draft + n * (target + draft + head)) / gb, 1),
            "dvc_cache": round(2 * (target + draft + n * (target + draft + head)) / gb, 1),
            "checkpoints": round(16 * draft / gb, 1)}


def _gemini(params: dict[str, Any], scenarios: list[str]) -> float:
    """The teacher's existing upper bound (teacher.gemini.estimate_cost): a CoT request per
    training question and a CoD request per CoT answer, each at the full output budget."""
    from specdraft.config import build
    from specdraft.teacher.core import TeacherConfig, TeacherItem
    from specdraft.teacher.gemini import estimate_cost

    cfg = build(TeacherConfig, params["teacher"], "teacher")
    if cfg.backend != "gemini-batch":
        return 0.0
    n = params["prepare"]["n_train"] * len(scenarios)
    question = "x" * 4 * PROMPT_TOKENS
    cot = [TeacherItem(str(i), [{"role": "user", "content": question}]) for i in range(n)]
    cod = [TeacherItem(str(i), [{"role": "user", "content": question + "x" * 4 * 660}]) for i in range(n)]
    return estimate_cost(cot, cfg)["usd_max"] + estimate_cost(cod, cfg)["usd_max"]


def refusals(plan: dict[str, Any]) -> list[str]:
    """One line per stage that does not fit: the stage, its peak, the GPU's limit and the
    setting to change."""
    return [f"{r['stage']}: peak {r['peak_gib']} GiB > {r['limit_gib']} GiB usable on {plan['gpu']} "
            f"({plan['headroom']:.0%} headroom); change {r['setting']}"
            + (f"; it fits with -S {' -S '.join(r['fix'])}" if r.get("fix") else "; no single change tried fits")
            for r in plan["stages"] if not r["fits"]]


def table(plan: dict[str, Any]) -> str:
    head = f"{'stage':30} {'peak GiB':>9} {'limit':>6} {'fits':>4} {'GPU-h':>6}  how / breakdown (GiB)"
    lines = [f"plan: profile {plan['profile']} on {plan['ngpu']} x {plan['gpu']} ({plan['gpu_memory_gib']} GiB each)",
             head, "-" * len(head)]
    for r in plan["stages"]:
        parts = ", ".join(f"{k} {v}" for k, v in r["breakdown_gib"].items())
        lines.append(f"{r['stage']:30} {r['peak_gib']:>9.1f} {r['limit_gib']:>6.1f} {'yes' if r['fits'] else 'NO':>4} "
                     f"{r['gpu_hours']:>6.2f}  {r['how']}; {parts}")
    t = plan["totals"]
    lines += ["-" * len(head),
              f"total: {t['gpu_hours']} GPU-hours ({t['wall_hours']} h wall), disk ~{t['disk_gb']:.0f} GB, "
              f"Gemini at most ${t['gemini_usd_max']}, batch wait {t['gemini_batch_wait_h'][0]}-"
              f"{t['gemini_batch_wait_h'][1]} h",
              f"(+{plan['cuda_overhead_gib']} GiB CUDA context per stage; hours at {plan['mfu']:.0%} MFU for "
              f"training, {plan['bandwidth_use']:.0%} of memory bandwidth for decoding)"]
    lines += [f"does not fit: {x}" for x in refusals(plan)]
    return "\n".join(lines)

