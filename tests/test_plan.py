"""The memory and cost plan (specdraft.plan): a step whose memory is known by arithmetic,
the planner against real tensors, the refusal that names the setting, the checks the paper
profile relies on, and the GPU attention path of the EAGLE head against the CPU one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
        "tie_word_embeddings": False, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 512,
        "hidden_act": "silu"}


def _cfg(**kw):
    from specdraft.train.settings import LoraSettings, TrainConfig

    base = dict(method="full", learning_rate=1e-3, epochs=1, batch_size=2, grad_accum=1, max_length=32,
                warmup_ratio=0.0, val_share=0.0, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    return TrainConfig(**{**base, **kw})


def test_a_full_fine_tuning_step_holds_what_arithmetic_says():
    """fp32 full fine-tuning: parameters 4 bytes each, AdamW's two moments 8 bytes each plus
    a 4-byte step per tensor; and the fp32 logits of every position (B x T x V x 4) live at
    the peak at least once."""
    from specdraft.plan.stages import count_parameters, plan_sft

    n = count_parameters(TINY)
    tensors = 2 + 2 * 9 + 1  # embeddings, head, 9 per layer (7 linear + 2 norms), final norm
    fp = plan_sft(TINY, _cfg())["footprint"]
    assert fp.peak["Parameter"] == 4 * n
    assert fp.peak["Optstate"] in (8 * n + 4 * tensors, 8 * n)  # at the peak the step tensors may be counted
    assert fp.total >= 4 * n + 8 * n + 2 * 31 * 256 * 4
    assert fp.flops >= 6 * n * 2 * 31 * 0.9  # forward + backward: ~6 FLOPs per parameter and token


def test_lora_keeps_the_base_frozen_in_bf16_and_qlora_in_four_bits():
    from specdraft.plan.stages import _linear_weights, count_parameters, plan_sft

    n = count_parameters(TINY)
    lora = plan_sft(TINY, _cfg(method="lora", bf16=True))["footprint"]
    h, i, kv = 64, 128, 32
    adapter = 2 * 4 * ((h + h) + (h + kv) * 2 + (h + h) + 2 * (h + i) + (i + h))  # A and B of 7 linears, 2 layers
    assert lora.peak["Parameter"] == 2 * n + 4 * adapter
    assert lora.peak.get("Optstate", 0) <= 8 * adapter + 4 * 200
    q = plan_sft(TINY, _cfg(method="lora", bf16=True, load_in_4bit=True))["footprint"]
    assert q.peak["Parameter"] == pytest.approx(lora.peak["Parameter"] - _linear_weights(TINY) * (2 - 0.5 - 4 / 64))


def test_the_planner_agrees_with_real_tensors_on_the_local_target():
    """The local 135M target's LoRA step (all 30 layers, a short batch to stay fast) with
    real CPU tensors and on meta tensors: the meta figure within 10 % (make plan's
    --self-check runs the profile's own batch)."""
    from specdraft.plan.__main__ import self_check

    r = self_check(batch=2, length=96)
    assert r["layers"] == 30
    assert 0.9 <= r["ratio"] <= 1.1, r


def test_an_eagle_head_must_train_every_step_it_drafts():
    from specdraft.config import load_params
    from specdraft.io import InputError
    from specdraft.schema import check_all

    params = load_params()
    params["train_draft_eagle"]["ttt_steps"] = params["generation"]["num_speculative_tokens"] - 1
    with pytest.raises(InputError, match=r"train_draft_eagle.ttt_steps: 3 < generation.num_speculative_tokens 4"):
        check_all(params)


def test_the_paper_profiles_train_and_decode_within_their_budgets():
    """Composed as dvc exp run composes them: the answer budget is the training length, and
    the heads are trained for the k they draft."""
    from specdraft.params import compose

    for profile in ("paper", "paper_qwen3"):
        p = compose([f"profile={profile}"])
        assert p["generation"]["max_new_tokens"] == p["train_target"]["max_length"]
        assert p["generation"]["vllm"]["max_model_len"] >= p["generation"]["max_new_tokens"] + 512
        assert p["train_draft_eagle"]["ttt_steps"] >= p["generation"]["num_speculative_tokens"]


def test_the_heads_gpu_attention_equals_the_cpu_form():
    """Attention.attend on a GPU runs one SDPA call with identity blocks (no T x T scores);
    on the CPU the explicit form. Both on the same inputs, with 1 and 3 key blocks."""
    import torch
    from transformers import AutoModelForCausalLM

    from specdraft.generate.eagle import new_head
    from specdraft.plan.stages import hf_config

    torch.manual_seed(0)
    target = AutoModelForCausalLM.from_config(hf_config({**TINY, "num_hidden_layers": 4}))
    head = new_head(target, list(range(32)), init="random")
    attn = head.layers[0].self_attn
    b, t, n0 = 2, 5, 9
    q = torch.randn(b, attn.nh, t, attn.hd)
    keys = [torch.randn(b, attn.nkv, n0, attn.hd)] + [torch.randn(b, attn.nkv, t, attn.hd) for _ in range(2)]
    values = [torch.randn_like(k) for k in keys]
    mask = torch.ones(n0, n0, dtype=torch.bool).tril()[n0 - t:]
    for blocks in (1, 3):
        explicit = attn.attend(q, keys[:blocks], values[:blocks], mask)
        rep = attn.nh // attn.nkv
        fused = attn._attend_fused(q, [k.repeat_interleave(rep, 1) for k in keys[:blocks]],
                                   [v.repeat_interleave(rep, 1) for v in values[:blocks]], mask, attn.hd ** -0.5)
        torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_make_plan_fits_one_h100_and_names_the_settings_for_an_a40(tmp_path, root):
    """The paper profile on one H100: every GPU stage fits. paper_qwen3 on one A40 48 GB:
    refused with exit 2 under --check, each refusal naming the stage, its peak, the limit
    and the settings with which it fits (by the same planner)."""
    out = tmp_path / "plan.json"
    r = subprocess.run([sys.executable, "-m", "specdraft.plan", "--profile", "paper", "--gpu", "h100-80",
                        "--check", "--json", str(out)], cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    plan = json.loads(out.read_text())
    stages = {s["stage"]: s for s in plan["stages"]}
    assert plan["fits"] and {"train_target", "train_draft", "train_draft_eagle (head)", "distill",
                             "evaluate (EAGLE-3 head)"} <= set(stages)
    assert 27 < stages["train_target"]["breakdown_gib"]["Parameter"] < 28.5  # 14.8B in bf16
    assert plan["totals"]["gpu_hours"] > 0 and plan["totals"]["gemini_usd_max"] > 0

    r = subprocess.run([sys.executable, "-m", "specdraft.plan", "--profile", "paper_qwen3", "--gpu", "a40-48",
                        "--check", "--json", str(out)], cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "does not fit: train_target: peak" in r.stdout and "GiB usable on a40-48" in r.stdout
    assert "it fits with -S train_target.load_in_4bit=true" in r.stdout
    plan = json.loads(out.read_text())
    assert not plan["fits"] and all(s.get("fix") for s in plan["stages"] if not s["fits"])


def test_the_plan_for_the_visible_gpus(monkeypatch, root):
    """`--gpu auto` (make paper-run): refused where torch sees no GPU; on a faked machine
    with four A100 40 GB it plans for their memory with the A100's throughput, and for an
    unknown part it says that H100 figures are assumed."""
    import types

    import torch

    from specdraft.io import InputError
    from specdraft.plan import gpus

    r = subprocess.run([sys.executable, "-m", "specdraft.plan", "--gpu", "auto", "--check"], cwd=root,
                       capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2 and "no CUDA GPU visible to plan for" in r.stderr
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="no CUDA GPU visible"):
        gpus.detect()
    props = types.SimpleNamespace(name="NVIDIA A100-SXM4-40GB", total_memory=40 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    g, n = gpus.detect()
    assert n == 4 and g.memory_mib == 40960 and g.bf16_tflops == gpus.GPUS["a100-40"].bf16_tflops
    props.name = "NVIDIA L4"
    g, _ = gpus.detect()
    assert "H100 throughput assumed" in g.name and g.bandwidth_tbs == gpus.GPUS["h100-80"].bandwidth_tbs
