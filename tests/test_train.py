"""Training on the real local model: loss goes down, labels mask the prompt, merge is exact,
training and evaluation prompts are one source, distillation resumes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from specdraft.generate.api import GenerationConfig
from specdraft.generate.hf_engine import HFEngine
from specdraft.generate.resume import Resumable
from specdraft.io import InputError
from specdraft.prompts import STYLES, messages, render
from specdraft.train.acceptance import simulated_acceptance
from specdraft.train.distill import DistillConfig, distill
from specdraft.train.sft import TrainConfig, build_examples, make_trainer, split, train_and_save

CFG = TrainConfig(method="lora", learning_rate=2e-3, epochs=1, batch_size=2, grad_accum=1, max_length=256,
                  warmup_ratio=0.0, val_share=0.0, logging_steps=1, save_steps=1000)


def _rows(local_prompts, n):
    _, qs = local_prompts
    return [{"id": f"q{i}", "question": q, "answer": "7", "response": "Step one.\n3 + 4 = 7\n#### 7"}
            for i, q in enumerate(qs[:n])]


def test_labels_mask_every_prompt_token_and_prompt_matches_evaluation(base_models, local_prompts, tmp_path):
    prompts, _ = local_prompts
    rows = _rows(local_prompts, 2)
    for style in STYLES:
        ex = build_examples(rows, prompts, style, "response")
        tr = make_trainer(base_models / "target", ex, [], CFG, tmp_path / f"ck-{style}", None)
        batch = tr.data_collator([tr.train_dataset[0]])
        ids, labels = batch["input_ids"][0], batch["labels"][0]
        tok = tr.processing_class
        learned = tok.decode(ids[labels != -100])
        assert learned == rows[0]["response"] + "<|im_end|>\n"
        # the unlabelled prefix is byte-identical to the prompt the engines evaluate with
        prompt_text = tok.decode(ids[labels == -100])
        assert prompt_text == render(tok, messages(prompts, style, rows[0]["question"]))


@pytest.mark.slow  # 25-30 s of real LoRA training: in `make test`, not `make test-fast`
def test_sft_lowers_loss_and_merged_model_equals_base_plus_adapter(base_models, local_prompts, tmp_path):
    prompts, _ = local_prompts
    rows = _rows(local_prompts, 8)
    cfg = dataclasses.replace(CFG, epochs=3)
    m = train_and_save(base_models / "target", rows, prompts, "cod", "response", cfg, tmp_path / "merged",
                       tmp_path / "ck", tmp_path / "live")
    assert m["train_loss_last"] < m["train_loss_first"] * 0.7, m
    assert (tmp_path / "live/plots/metrics/train/loss.tsv").exists()
    assert not (tmp_path / "ck").exists()
    # greedy text of the merged model == base + adapter (PEFT), on a held-out question
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    q = local_prompts[1][30]
    enc = tok(render(tok, messages(prompts, "cod", q)), return_tensors="pt", add_special_tokens=False)
    base = AutoModelForCausalLM.from_pretrained(base_models / "target", dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, tmp_path / "merged/adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    kw = {"max_new_tokens": 18, "do_sample": False, "pad_token_id": tok.eos_token_id}
    with torch.inference_mode():
        a = peft.generate(**enc, **kw)[0].tolist()
        b = merged.generate(**enc, **kw)[0].tolist()
    assert a == b
    # it learned the format it was trained on
    assert "#### 7" in tok.decode(b[enc["input_ids"].shape[1]:])


def test_training_resumes_from_checkpoint(base_models, local_prompts, tmp_path):
    prompts, _ = local_prompts
    rows = _rows(local_prompts, 4)
    cfg = dataclasses.replace(CFG, epochs=2, save_steps=2, method="full")
    ex = build_examples(rows, prompts, "cot", "response")
    tr = make_trainer(base_models / "draft", ex, [], dataclasses.replace(cfg, epochs=1), tmp_path / "ck", None)
    tr.train()  # "interrupted" after one of two epochs: checkpoint-2 is on disk
    assert (tmp_path / "ck/checkpoint-2").exists()
    m = train_and_save(base_models / "draft", rows, prompts, "cot", "response", cfg, tmp_path / "out",
                       tmp_path / "ck", tmp_path / "live")
    assert m["resumed"] is True and m["steps"] == 4
    assert (tmp_path / "out/model.safetensors").exists() and not (tmp_path / "out/adapter").exists()


def test_split_is_deterministic_and_holds_out():
    ex = [{"i": i} for i in range(20)]
    tr, va = split(ex, 0.1, 0)
    assert len(va) == 2 and len(tr) == 18 and split(ex, 0.1, 0) == (tr, va)
    assert split(ex, 0.0, 0) == (ex, [])


def test_distill_resumes_without_regenerating(base_models, local_prompts, tmp_path):
    prompts, qs = local_prompts
    rows = [{"id": f"q{i}", "question": q, "answer": "1"} for i, q in enumerate(qs[:3])]
    gen = GenerationConfig(max_new_tokens=8, batch_size=2)
    r1 = Resumable(tmp_path / "p.jsonl", "fp")
    distill(base_models / "target", rows[:2], "cot", prompts, gen, DistillConfig(), r1)
    r1._app.close()  # a crash: the partial file stays
    r2 = Resumable(tmp_path / "p.jsonl", "fp")
    assert set(r2.done) == {"q0", "q1"}
    kept, m = distill(base_models / "target", rows, "cot", prompts, gen, DistillConfig(), r2)
    assert [k["id"] for k in kept] == ["q0", "q1", "q2"] and m["n"] == 3
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 3  # fingerprint + each row written once
    # other settings: the stale partial is discarded
    assert Resumable(tmp_path / "p.jsonl", "other").done == {}
    with pytest.raises(InputError, match="distill.keep: 'best' unknown; valid"):
        distill(base_models / "target", rows, "cot", prompts, gen, DistillConfig(keep="best"), r2)


def test_simulated_acceptance_matches_engine_counts(base_models, local_prompts):
    """The teacher-forced acceptance equals what the hf engine counts while decoding."""
    prompts, qs = local_prompts
    eng = HFEngine(base_models / "target", base_models / "draft",
                   GenerationConfig(max_new_tokens=20, num_speculative_tokens=2))
    rows, spec = [], []
    for q in qs[:3]:
        s = eng.generate_one(eng.render(messages(prompts, "cot", q)), speculative=True)
        spec.append(s)
        rows.append({"question": q, "response": s.text, "truncated": s.truncated})
    sim = simulated_acceptance(base_models / "target", base_models / "draft", rows, "cot", prompts, 2)
    assert sim["accepted"] == sum(s.accepted for s in spec)
    assert sim["rounds"] == sum(s.rounds for s in spec)
