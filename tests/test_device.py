"""Device-aware settings (specdraft.device.resolve): the committed local profile is valid
on a GPU machine unchanged, and on a CPU it is applied as written."""

from __future__ import annotations

import pytest
import yaml

from conftest import ROOT
from specdraft.config import build
from specdraft.device import find_device, resolve
from specdraft.generate.api import GenerationConfig
from specdraft.io import InputError


@pytest.fixture
def local_gen() -> GenerationConfig:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    return build(GenerationConfig, params["generation"], "generation")


def test_the_local_profile_on_cuda_is_a_valid_gpu_plan(local_gen):
    assert (local_gen.draft_quant, local_gen.cpu_kernels) == ("int8", "auto")  # the profile is CPU-tuned
    plan = resolve(local_gen, "cuda", kernels="onednn", drafts=True, threads=2, flash_attn=False)
    g = plan.generation
    assert (g.draft_quant, g.cpu_kernels, g.attn_implementation) == ("none", "default", "sdpa")
    assert set(plan.not_applied) == {"generation.draft_quant", "generation.cpu_kernels"}
    assert "CPU path" in plan.not_applied["generation.draft_quant"]
    assert plan.record() == {"device": "cuda", "not_applied": plan.not_applied, "applied": {
        "runtime.threads": 2, "generation.attn_implementation": "sdpa"}}
    # flash attention where the package is installed and the weights are bf16 / fp16
    assert resolve(local_gen, "cuda", flash_attn=True).generation.attn_implementation == "sdpa"  # fp32 weights
    bf16 = build(GenerationConfig, {"dtype": "bfloat16"}, "generation")
    assert resolve(bf16, "cuda", flash_attn=True).generation.attn_implementation == "flash_attention_2"


def test_the_local_profile_on_cpu_is_applied_as_written(local_gen):
    plan = resolve(local_gen, "cpu", kernels="onednn", drafts=True, threads=2)
    g = plan.generation
    assert (g.draft_quant, g.cpu_kernels, g.attn_implementation, g.draft_vocab) == ("int8", "onednn", "sdpa", 2048)
    assert plan.not_applied == {}
    assert plan.applied == {"runtime.threads": 2, "generation.attn_implementation": "sdpa",
                            "generation.cpu_kernels": "onednn", "generation.draft_quant": "int8"}
    # every other setting as written
    same = [f for f in ("engine", "max_new_tokens", "batch_size", "num_speculative_tokens", "dtype", "decode_loop",
                        "draft_vocab", "vllm") if getattr(g, f) != getattr(local_gen, f)]
    assert same == []


def test_the_vllm_engine_records_the_hf_options_as_not_applied(local_gen):
    import dataclasses

    plan = resolve(dataclasses.replace(local_gen, engine="vllm"), "cuda", kernels="default", drafts=True)
    assert set(plan.not_applied) == {"generation.attn_implementation", "generation.cpu_kernels",
                                     "generation.draft_quant"}
    assert plan.generation.draft_quant == "none"


def test_devices_are_found_or_refused():
    assert find_device("auto", cuda_available=True) == "cuda"
    assert find_device("auto", cuda_available=False) == "cpu"
    assert find_device("cpu", cuda_available=True) == "cpu"
    with pytest.raises(InputError, match="runtime.device: cuda, but torch finds no CUDA GPU"):
        find_device("cuda", cuda_available=False)
    with pytest.raises(InputError, match="flash-attn package is not installed"):
        resolve(build(GenerationConfig, {"attn_implementation": "flash_attention_2"}, "generation"), "cuda",
                flash_attn=False)
