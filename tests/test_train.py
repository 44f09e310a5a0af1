"""Training on the real local model: loss goes down, labels mask the prompt, merge is exact,
training and evaluation prompts are one source, distillation resumes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from specdraft.config import build
from specdraft.generate.api import GenerationConfig
from specdraft.generate.hf_engine import HFEngine
from specdraft.generate.resume import Resumable
from specdraft.io import InputError
from specdraft.prompts import STYLES, messages, render
from specdraft.train.acceptance import simulated_acceptance
from specdraft.train.distill import DistillConfig, distill
from specdraft.train.examples import build_examples, split
from specdraft.train.settings import TrainConfig
from specdraft.train.sft import train_and_save
from specdraft.train.trainers import make_trainer

CFG = TrainConfig(method="lora", learning_rate=2e-3, epochs=1, batch_size=2, grad_accum=1, max_length=256,
                  warmup_ratio=0.0, val_share=0.0, logging_steps=1, save_steps=1000)


def _rows(local_prompts, n):
    _, qs = local_prompts
    return [{"id": f"q{i}", "question": q, "answer": "7", "response": "Step one.\n3 + 4 = 7\n#### 7",
             "response_ids": [28, 29, 30, 2]} for i, q in enumerate(qs[:n])]  # ids: what distill records


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


class _StopAt:
    """A training interrupted after `step` (its checkpoint written), as a crash would leave it."""

    def __init__(self, step: int):
        from transformers import TrainerCallback

        class Stop(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                control.should_training_stop = state.global_step >= step

        self.callback = Stop()


def _interrupted(model, rows, prompts, cfg, ck, step, live=None):
    """The first `step` steps of train_and_save's run with `cfg` (its checkpoints, its run
    record, and its curves in `live` when given)."""
    import json

    from specdraft.train.checkpoints import RUN_FILE, run_fingerprint
    from specdraft.train.settings import training_args

    ex = build_examples(rows, prompts, "cot", "response")
    train, val = split(ex, cfg.val_share, cfg.seed)
    args = training_args(cfg, ck, bool(val))
    ck.mkdir(parents=True, exist_ok=True)
    (ck / RUN_FILE).write_text(json.dumps(run_fingerprint(cfg, ex, model, args.world_size), sort_keys=True))
    tr = make_trainer(model, train, val, cfg, ck, live, args)
    tr.add_callback(_StopAt(step).callback)
    tr.train()


def test_training_resumes_only_with_the_same_settings(tiny_models, local_prompts, tmp_path, caplog):
    """Interrupted after 2 of 4 steps, the same settings resume from the checkpoint; a
    changed batch_size (lowered after an out-of-memory error, say) starts over and says so."""
    prompts, _ = local_prompts
    rows = _rows(local_prompts, 4)
    cfg = dataclasses.replace(CFG, epochs=2, save_steps=2, method="full", batch_size=2)
    model, ck = tiny_models / "draft", tmp_path / "ck"
    _interrupted(model, rows, prompts, cfg, ck, 2)
    assert (ck / "checkpoint-2").exists()
    m = train_and_save(model, rows, prompts, "cot", "response", cfg, tmp_path / "out", ck, tmp_path / "live")
    assert m["resumed"] is True and m["steps"] == 4
    # the GPU record (specdraft.train.launch.use_gpus): plain python uses at most one; a
    # CPU run records none (its metrics stay as they were)
    if torch.cuda.device_count():
        assert m["gpus"]["gpus_used"] == 1 and m["gpus"]["why"]
    else:
        assert "gpus" not in m
    assert (tmp_path / "out/model.safetensors").exists() and not (tmp_path / "out/adapter").exists()
    assert not ck.exists()

    _interrupted(model, rows, prompts, cfg, ck, 2)
    with caplog.at_level("WARNING", logger="sft"):
        m = train_and_save(model, rows, prompts, "cot", "response", dataclasses.replace(cfg, batch_size=1),
                           tmp_path / "out", ck, tmp_path / "live")
    assert m["resumed"] is False and m["steps"] == 8  # 2 epochs x 4 rows at batch 1, from the start
    assert "not resuming from" in caplog.text and "other batch_size; training starts over" in caplog.text


def test_full_fine_tuning_in_bf16_keeps_fp32_master_weights(tiny_models, local_prompts, tmp_path):
    """bf16 is autocast: the optimizer updates fp32 parameters (in bf16 weights most of
    AdamW's updates at a 2e-5 learning rate would round away). A LoRA base may be bf16."""
    from specdraft.train.settings import weights_dtype

    prompts, _ = local_prompts
    cfg = dataclasses.replace(CFG, method="full", bf16=True, learning_rate=2e-5)
    tr = make_trainer(tiny_models / "draft", build_examples(_rows(local_prompts, 2), prompts, "cot", "response"),
                      [], cfg, tmp_path / "ck", None)
    tr.train()
    params = [p for g in tr.optimizer.param_groups for p in g["params"]]
    assert params and {p.dtype for p in params} == {torch.float32}
    assert tr.args.bf16 and weights_dtype(cfg) == "float32"
    assert weights_dtype(dataclasses.replace(cfg, method="lora")) == "bfloat16"


def test_the_merge_reloads_the_base_unquantised(tiny_models, local_prompts, tmp_path):
    """An adapter trained on a 4-bit base (QLoRA) or a full-precision one is merged into the
    base reloaded in bf16/fp32: the saved target is an ordinary model folder, never a
    bitsandbytes checkpoint, and its weights equal base + B·A·scale."""
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from specdraft.train.finish import save_trained

    base = AutoModelForCausalLM.from_pretrained(tiny_models / "target", dtype=torch.float32)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))  # non-zero B: a real delta
    peft.save_pretrained(tmp_path / "adapter")
    expected = peft.merge_and_unload().state_dict()
    for bits in (False, True):  # what training ran on does not matter to the merge
        cfg = dataclasses.replace(CFG, load_in_4bit=bits)
        out = tmp_path / f"out-{bits}"
        save_trained(tiny_models / "target", tmp_path / "adapter", out, cfg)
        config = json.loads((out / "config.json").read_text())
        assert "quantization_config" not in config and config.get("dtype", config.get("torch_dtype")) == "float32"
        merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).state_dict()
        assert set(merged) == set(expected)
        for k, v in expected.items():
            torch.testing.assert_close(merged[k], v, rtol=0, atol=1e-6)
        assert (out / "adapter/adapter_config.json").exists()
        assert json.loads((out / "specdraft.json").read_text())["quantised_base_in_training"] is bits


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
    with pytest.raises(InputError, match="distill.keep: 'best' unknown; valid"):  # checked once, where it is built
        build(DistillConfig, {"keep": "best"}, "distill")


def test_distill_leaves_out_empty_answers_and_counts_them(tmp_path, local_prompts):
    """A target that ends its turn at once (a tiny random target did, in the paper
    rehearsal on the sample problems) gives the draft nothing to learn: the row is left
    out and counted instead of stopping draft training. Both answers are already in the
    partial file, so no engine is started."""
    prompts, _ = local_prompts
    rows = [{"id": "q0", "question": "1+1?", "answer": "2"}, {"id": "q1", "question": "2+2?", "answer": "4"}]
    res = Resumable(tmp_path / "p.jsonl", "fp")
    for r, out, ok in (("q0", "1+1=2\n#### 2", True), ("q1", "  ", False)):
        res.add({"id": r, "answer": "2", "output": out, "token_ids": [5, 6, 2], "extracted": None,
                 "extraction_path": "none", "correct": ok, "output_tokens": 3, "truncated": False})
    kept, m = distill(tmp_path / "no-model-needed", rows, "cot", prompts, GenerationConfig(), DistillConfig(), res)
    assert [k["id"] for k in kept] == ["q0"] and (m["n"], m["kept"], m["empty"]) == (2, 1, 1)
    assert kept[0]["response_ids"] == [5, 6, 2]  # the ids as generated travel with the text


def test_extra_questions_train_the_draft_but_not_the_targets_accuracy(tmp_path, local_prompts):
    """distill.extra_questions: the target's answers to extra questions join the draft's
    data, marked `extra`; the metrics' accuracy stays that on the training questions, the
    extra ones counted apart (answers in the partial file: no engine is started)."""
    prompts, _ = local_prompts
    train = [{"id": "q0", "question": "1+1?", "answer": "2"}]
    extra = [{"id": "x0", "question": "3+3?", "answer": "6"}, {"id": "x1", "question": "4+4?", "answer": "8"}]
    res = Resumable(tmp_path / "p.jsonl", "fp")
    for r, out, ok in (("q0", "1+1=2\n#### 2", True), ("x0", "3+3=7\n#### 7", False), ("x1", "4+4=8\n#### 8", True)):
        res.add({"id": r, "answer": "?", "output": out, "token_ids": [5, 6, 2], "extracted": None,
                 "extraction_path": "hash", "correct": ok, "output_tokens": 3 + (r == "x1"), "truncated": False})
    kept, m = distill(tmp_path / "no-model-needed", train, "cot", prompts, GenerationConfig(),
                      DistillConfig(extra_questions=2), res, extra=extra)
    assert [k["id"] for k in kept] == ["q0", "x0", "x1"] and [k.get("extra", False) for k in kept] == [False, True, True]
    assert (m["n"], m["accuracy"], m["kept"]) == (1, 1.0, 3)
    assert (m["extra"]["n"], m["extra"]["accuracy"], m["extra"]["mean_output_tokens"]) == (2, 0.5, 3.5)
    kept, m = distill(tmp_path / "no-model-needed", train, "cot", prompts, GenerationConfig(),
                      DistillConfig(keep="correct", extra_questions=2), res, extra=extra)
    assert [k["id"] for k in kept] == ["q0", "x1"]
    with pytest.raises(InputError, match="distill.extra_questions: must be >= 0, got -1"):
        build(DistillConfig, {"extra_questions": -1}, "distill")


def test_simulated_acceptance_matches_engine_counts(base_models, local_prompts):
    """The teacher-forced acceptance, on the ids the target generated, equals what the hf
    engine counts while decoding (no answer here ends within k tokens of the budget)."""
    prompts, qs = local_prompts
    eng = HFEngine(base_models / "target", base_models / "draft",
                   GenerationConfig(max_new_tokens=20, num_speculative_tokens=2))
    rows, spec = [], []
    for q in qs[:3]:
        s = eng.generate_one(eng.render(messages(prompts, "cot", q)), "draft")
        spec.append(s)
        rows.append({"question": q, "response": s.text, "response_ids": s.token_ids, "truncated": s.truncated})
    sim = simulated_acceptance(base_models / "target", base_models / "draft", rows, "cot", prompts, 2)
    assert sim["accepted"] == sum(s.accepted for s in spec)
    assert sim["rounds"] == sum(s.rounds for s in spec)


def test_distribution_loss_is_forward_reverse_or_mixed_kl():
    """The KD loss against hand-computed KLs of two known distributions."""
    import math

    from specdraft.train.trainers import distribution_loss

    p, q = [0.9, 0.1], [0.5, 0.5]  # target, draft
    t, s = torch.tensor([[math.log(x) for x in p]]), torch.tensor([[math.log(x) for x in q]])
    fkl = sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))
    rkl = sum(b * math.log(b / a) for a, b in zip(p, q, strict=True))
    assert distribution_loss(s, t, 0.0, 1.0).item() == pytest.approx(fkl, rel=1e-6)
    assert distribution_loss(s, t, 1.0, 1.0).item() == pytest.approx(rkl, rel=1e-6)
    assert distribution_loss(s, t, 0.25, 1.0).item() == pytest.approx(0.75 * fkl + 0.25 * rkl, rel=1e-6)
    assert distribution_loss(t, t, 0.5, 1.0).item() == pytest.approx(0.0, abs=1e-7)
    # temperature: softened logits, loss scaled by T^2
    p2 = torch.softmax(t / 2, -1)[0].tolist()
    q2 = torch.softmax(s / 2, -1)[0].tolist()
    fkl2 = sum(a * math.log(a / b) for a, b in zip(p2, q2, strict=True))
    assert distribution_loss(s, t, 0.0, 2.0).item() == pytest.approx(4 * fkl2, rel=1e-5)


def _kl_to_teacher(student_dir, teacher_dir, rows, prompts):
    """Mean forward KL of the student from the teacher over the answer tokens of `rows`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specdraft.prompts import messages, render
    from specdraft.train.trainers import distribution_loss

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    s = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    t = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    total = n = 0.0
    with torch.no_grad():
        for r in rows:
            p = tok(render(tok, messages(prompts, "cot", r["question"])), add_special_tokens=False)["input_ids"]
            a = tok(r["response"], add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p + a])
            sl, tl = s(ids).logits[0, len(p) - 1:-1], t(ids).logits[0, len(p) - 1:-1]
            total += distribution_loss(sl, tl, 0.0, 1.0).sum().item()
            n += len(a)
    return total / n


def test_kd_draft_moves_toward_the_target_distribution(tiny_models, local_prompts, tmp_path):
    """objective kd: the draft trained against the (tiny random) target's distribution ends
    closer to it than it started and closer than the SFT draft trained on the same rows
    with the same steps; the metrics name the objective and its settings."""
    from specdraft.train.settings import KDSettings

    prompts, _ = local_prompts
    rows = _rows(local_prompts, 6)
    cfg = dataclasses.replace(CFG, epochs=3, method="full", batch_size=2, val_share=0.0, learning_rate=3e-3)
    target, draft = tiny_models / "target", tiny_models / "draft"
    kd = train_and_save(draft, rows, prompts, "cot", "response", cfg, tmp_path / "kd", tmp_path / "ck-kd",
                        tmp_path / "live-kd", teacher_dir=target, kd=KDSettings(beta=0.0, temperature=1.0))
    sft = train_and_save(draft, rows, prompts, "cot", "response", cfg, tmp_path / "sft", tmp_path / "ck-sft",
                         tmp_path / "live-sft")
    assert kd["objective"] == "kd" and kd["kd_beta"] == 0.0 and sft["objective"] == "sft"
    assert kd["steps"] == sft["steps"] == 9
    before = _kl_to_teacher(draft, target, rows, prompts)
    after_kd = _kl_to_teacher(tmp_path / "kd", target, rows, prompts)
    after_sft = _kl_to_teacher(tmp_path / "sft", target, rows, prompts)
    assert after_kd < 0.7 * before, (before, after_kd)
    assert after_kd < after_sft, (after_kd, after_sft)


def _curve_steps(live, name="loss"):
    return [int(x.split("\t")[0]) for x in (live / "plots/metrics" / f"{name}.tsv").read_text().splitlines()[1:]]


def test_a_resume_after_a_late_crash_logs_each_step_once(tiny_models, local_prompts, tmp_path):
    """The crash lands 3 steps past the last checkpoint (steps 5-7 logged, checkpoint at 4):
    the resumed run cuts the curves back to step 4 and logs 5-8 again, so every curve has
    one row per step (x = the trainer's global step)."""
    prompts, _ = local_prompts
    rows = _rows(local_prompts, 8)
    cfg = dataclasses.replace(CFG, epochs=2, save_steps=4, method="full", batch_size=2)
    model, ck, live = tiny_models / "draft", tmp_path / "ck", tmp_path / "live"
    _interrupted(model, rows, prompts, cfg, ck, 7, live)
    assert sorted(p.name for p in ck.glob("checkpoint-*")) == ["checkpoint-4"]
    assert _curve_steps(live) == [1, 2, 3, 4, 5, 6, 7]  # logged past the checkpoint, as a crash leaves them
    m = train_and_save(model, rows, prompts, "cot", "response", cfg, tmp_path / "out", ck, live)
    assert m["resumed"] is True and m["steps"] == 8
    assert _curve_steps(live) == list(range(1, 9))
    for tsv in (live / "plots/metrics").rglob("*.tsv"):  # every curve, the epoch and summary rows too
        steps = [int(x.split("\t")[0]) for x in tsv.read_text().splitlines()[1:]]
        assert steps == sorted(set(steps)), (tsv, steps)


def test_cut_back_curves_keeps_rows_up_to_the_step(tmp_path):
    from specdraft.train.checkpoints import cut_back_curves

    d = tmp_path / "plots/metrics/eval"
    d.mkdir(parents=True)
    (tmp_path / "plots/metrics/loss.tsv").write_text("step\tloss\n" + "".join(f"{i}\t0.{i}\n" for i in range(1, 11)))
    (d / "loss.tsv").write_text("step\tloss\n5\t0.5\n10\t0.4\n6\t")  # a row torn by the crash
    assert cut_back_curves(tmp_path, 6) == 6
    assert _curve_steps(tmp_path) == [1, 2, 3, 4, 5, 6]
    assert (d / "loss.tsv").read_text() == "step\tloss\n5\t0.5\n"


def test_changing_the_kd_teachers_weights_invalidates_a_resume(tiny_models, local_prompts, tmp_path, caplog):
    """Same architecture, same file sizes, other weights (a retrained target): the KD
    draft's checkpoint was made against another teacher and is not resumed."""
    import json
    import shutil

    from transformers import AutoModelForCausalLM

    from specdraft.train.checkpoints import RUN_FILE, resume_point, run_fingerprint

    prompts, _ = local_prompts
    ex = build_examples(_rows(local_prompts, 4), prompts, "cot", "response")
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_models / "target", teacher)
    kd = {"kd": {"beta": 0.0, "temperature": 1.0}}
    fp = run_fingerprint(CFG, ex, tiny_models / "draft", 1, teacher, kd)
    ck = tmp_path / "ck"
    (ck / "checkpoint-2").mkdir(parents=True)
    (ck / RUN_FILE).write_text(json.dumps(fp, sort_keys=True))
    assert resume_point(ck, run_fingerprint(CFG, ex, tiny_models / "draft", 1, teacher, kd)) == str(ck / "checkpoint-2")

    sizes = {p.name: p.stat().st_size for p in teacher.iterdir()}
    m = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32)
    with torch.no_grad():
        m.lm_head.weight[0, 0] += 1.0
    m.save_pretrained(teacher)
    assert {p.name: p.stat().st_size for p in teacher.iterdir()} == sizes  # what a size check would see
    with caplog.at_level("WARNING", logger="sft"):
        assert resume_point(ck, run_fingerprint(CFG, ex, tiny_models / "draft", 1, teacher, kd)) is None
    assert "other teacher; training starts over" in caplog.text


@pytest.mark.parametrize("kind", ["NO", "MULTI_CPU", "MULTI_GPU", "FSDP", "DEEPSPEED"])
def test_what_runs_where_under_each_distributed_type(kind):
    """Merging and the held-out acceptance leave a sharded (FSDP, DeepSpeed) training process
    for a fresh one; the KD teacher is refused there, with the launcher to use instead."""
    from accelerate.utils import DistributedType

    from specdraft.train.launch import check_kd_teacher, post_training_in_fresh_process

    t = DistributedType[kind]
    sharded = kind in ("FSDP", "DEEPSPEED")
    assert post_training_in_fresh_process(t) is sharded
    if sharded:
        with pytest.raises(InputError, match=f"train_draft_kd under {kind}.*conf/accelerate/ddp.yaml"):
            check_kd_teacher(t)
    else:
        check_kd_teacher(t)


def test_a_fresh_post_training_process_equals_the_training_process(tiny_models, local_prompts, tmp_path,
                                                                   monkeypatch):
    """The finish job (merge an adapter, then the draft's held-out acceptance) gives the same
    model and figures in a fresh process as in this one; the fresh one starts without the
    launch environment (a ZeRO-3 rank's variables set here)."""
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from specdraft.train.finish import Finish, HeldOut, run
    from specdraft.train.launch import clean_env
    from specdraft.train.sft import _as_mapping

    prompts, _ = local_prompts
    base = AutoModelForCausalLM.from_pretrained(tiny_models / "draft", dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                    init_lora_weights=False)).save_pretrained(tmp_path / "adapter")
    held = HeldOut(rows=_rows(local_prompts, 6), prompts=_as_mapping(prompts), style="cot", val_share=0.5, seed=0,
                   target=str(tiny_models / "target"), untrained=str(tiny_models / "draft"), k=3)
    got = {}
    for fresh in (False, True):
        job = Finish(base=str(tiny_models / "draft"), trained=str(tmp_path / "adapter"), out=str(tmp_path / f"out-{fresh}"),
                     method="lora", bf16=False, load_in_4bit=False, device="cpu", held_out=held)
        for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "ACCELERATE_USE_DEEPSPEED": "true"}.items():
            monkeypatch.setenv(k, v)
        got[fresh] = run(job, fresh_process=fresh)
    assert got[True] == got[False] and got[True]["acceptance_rows"] == 3 and got[True]["acceptance_device"] == "cpu"
    a, b = load_file(tmp_path / "out-False/model.safetensors"), load_file(tmp_path / "out-True/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    import os

    assert not {"WORLD_SIZE", "RANK", "LOCAL_RANK", "ACCELERATE_USE_DEEPSPEED"} & set(clean_env(dict(os.environ)))
