"""Teacher: reference rules, validation, and the real google-genai client against a fake server."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from specdraft.config import build, load_params
from specdraft.io import write_jsonl
from specdraft.prompts import PromptsConfig, messages
from specdraft.rehearsal.fake_gemini import FakeGemini, blocked_line, error_line, ok_line
from specdraft.teacher.core import (
    PollConfig,
    RetryConfig,
    TeacherConfig,
    TeacherError,
    TeacherItem,
    TeacherResult,
    step_stats,
    training_rows,
    validate,
    words,
)
from specdraft.teacher.gemini import GeminiBatchBackend, estimate_cost
from specdraft.teacher.pipeline import run_cod, run_cot
from specdraft.teacher.reference import cod_from_cot, cot_from_gold

KEY = "test-key-not-a-secret-123"
# the cot stage's command line, as dvc.yaml writes it for scenario gsm8k
COT_ARGS = ["--scenario", "gsm8k", "--prepared", "data/prepared/gsm8k/train.jsonl", "--tokenizer", "models/tokenizer",
            "--out",
            "data/teacher/cot/gsm8k.jsonl", "--rejected", "data/teacher/cot/gsm8k.rejected.jsonl", "--metrics",
            "metrics/teacher/cot/gsm8k.json"]


@pytest.fixture
def params(root):
    return load_params(root / "params.yaml")


@pytest.fixture
def prompts(params):
    return build(PromptsConfig, params["prompts"], "prompts")


def _cfg(params, **over) -> TeacherConfig:
    cfg = build(TeacherConfig, {**params["teacher"], "backend": "gemini-batch"}, "teacher")
    return dataclasses.replace(cfg, poll=PollConfig(initial_s=0.01, max_s=0.02, multiplier=1.5, timeout_s=30),
                               retry=RetryConfig(attempts=3, initial_s=0.01, max_s=0.02), **over)


@pytest.fixture
def gemini_env(monkeypatch):
    def use(fake: FakeGemini) -> None:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.url)
        monkeypatch.setenv("GEMINI_API_KEY", KEY)
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    return use


def _rows(n: int = 5) -> list[dict]:
    return [{"id": f"gsm8k/train/{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i),
             "solution": f"{i} + {i} = <<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}", "format": "gsm8k"}
            for i in range(n)]


def _right(key: str, request: dict, rnd: int) -> dict:
    i = int(key.rsplit("/", 1)[1])
    return ok_line(f"{i} + {i} = {2 * i}\n#### {2 * i}")


# ------------------------------------------------------------------------ reference
def test_reference_cot_and_cod_from_gold():
    sol = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    cot = cot_from_gold(sol, "gsm8k", "72")
    assert cot == "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\n#### 72"
    assert cod_from_cot(cot, "gsm8k", sol) == "48/2=24\n48+24=72\n#### 72"
    msol = "Adding gives $14d$. So $a+b+c = \\boxed{42}$."
    mcot = cot_from_gold(msol, "math", "42")
    assert mcot == "Adding gives $14d$.\nSo $a+b+c = 42$.\n#### 42"
    assert cod_from_cot(mcot, "math", msol) == "Adding gives $14d$.\n$a+b+c = 42$\n#### 42"


def test_validation_reasons():
    ok = TeacherResult(text="1+1=2\n#### 2", finish_reason="STOP")
    assert validate(ok, "2")[0] is None
    assert validate(TeacherResult(text="#### 3", finish_reason="STOP"), "2")[0] == "wrong_answer"
    assert validate(TeacherResult(text="it is 2", finish_reason="STOP"), "2")[0] == "no_hash"
    assert validate(TeacherResult(text="  ", finish_reason="STOP"), "2")[0] == "empty"
    assert validate(TeacherResult(text="1+1=", finish_reason="MAX_TOKENS"), "2")[0] == "truncated"
    assert validate(TeacherResult(block_reason="SAFETY"), "2")[0] == "blocked"
    assert validate(TeacherResult(text="x", finish_reason="SAFETY"), "2")[0] == "blocked"
    assert validate(TeacherResult(error="500: boom"), "2")[0] == "api_error"


def test_words_per_step_counts_equations_as_one_word():
    assert words("48/2 = 24") == 1 and words("48/2=24") == 1
    assert words("so $a + b = 7$ holds") == 3
    s = step_stats(["a=1\nb = 2 apples\nthen we add all of the numbers\n#### 3"])
    assert s["words_per_step_median"] == 2 and s["share_steps_within_budget"] == pytest.approx(2 / 3)


def test_reference_pipeline_pairs_cot_and_cod(tmp_path, params, prompts):
    cfg = build(TeacherConfig, params["teacher"], "teacher")
    rows = _rows(4)
    rows[3]["solution"] = "oops no equations\n#### 6"  # reference CoD keeps 5 words, still correct
    acc, rej, m = run_cot(rows, prompts, cfg, tmp_path)
    assert m["accepted"] == 4 and m["backend"] == "reference"
    cod, rej2, m2 = run_cod(acc, {r["id"]: r for r in rows}, prompts, cfg, tmp_path)
    assert m2["paired"] == 4 and all(r["cot"] for r in cod)
    # training_rows keeps only questions accepted in both passes
    (tmp_path / "cot").mkdir()
    (tmp_path / "cod").mkdir()
    write_jsonl(tmp_path / "cot/s.jsonl", acc)
    write_jsonl(tmp_path / "cod/s.jsonl", cod[:2])
    assert [r["id"] for r in training_rows(tmp_path / "cot/s.jsonl", tmp_path / "cod/s.jsonl", "cot")] == [r["id"] for r in cod[:2]]


# ---------------------------------------------------------------------- gemini batch
def test_batch_success_out_of_order_and_request_shape(tmp_path, params, prompts, gemini_env):
    with FakeGemini(_right) as fake:
        gemini_env(fake)
        rows = _rows(6)
        acc, rej, m = run_cot(rows, prompts, _cfg(params), tmp_path)
        assert m["accepted"] == 6 and fake.create_calls == 1
        assert m["tokens_in"] == 6 * 20 and m["tokens_out"] == 6 * 30
        # cost = usage at the batch price (half the interactive one)
        assert m["cost_usd"] == pytest.approx((120 * 0.30 + 180 * 2.50) / 1e6 * 0.5)
        req = fake.requests_seen[0]["request"]
        assert req["systemInstruction"]["parts"][0]["text"] == prompts.system["cot"]
        assert req["contents"][-1] == {"role": "user", "parts": [{"text": rows[0]["question"]}]}
        assert req["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}
        assert fake.api_keys == {KEY}
        # results came back shuffled, rows are matched by key
        assert [r["id"] for r in acc] == [r["id"] for r in rows]
        assert all(r["response"].endswith(f"#### {r['answer']}") for r in acc)


def test_line_error_succeeds_on_resubmission_and_blocked_is_rejected(tmp_path, params, prompts, gemini_env):
    def answer(key, request, rnd):
        if key.endswith("/1") and rnd == 0:
            return error_line()
        if key.endswith("/2"):
            return blocked_line()
        if key.endswith("/3"):
            return ok_line("1 + 1 = 3\n#### 3")
        if key.endswith("/4"):
            return ok_line("4 + 4 =", finish="MAX_TOKENS")
        return _right(key, request, rnd)

    with FakeGemini(answer) as fake:
        gemini_env(fake)
        acc, rej, m = run_cot(_rows(5), prompts, _cfg(params, min_accepted_share=0.0), tmp_path)
        assert fake.create_calls == 2  # the follow-up batch held only the failed key
        assert [r["key"] for r in fake.requests_seen[5:]] == ["gsm8k/train/1"]
        assert sorted(r["id"] for r in acc) == ["gsm8k/train/0", "gsm8k/train/1"]
        assert {r["id"]: r["reason"] for r in rej} == {"gsm8k/train/2": "blocked", "gsm8k/train/3": "wrong_answer",
                                                      "gsm8k/train/4": "truncated"}


def test_error_after_last_resubmission_is_api_error(tmp_path, params, prompts, gemini_env):
    with FakeGemini(lambda k, r, n: error_line() if k.endswith("/0") else _right(k, r, n)) as fake:
        gemini_env(fake)
        acc, rej, m = run_cot(_rows(2), prompts, _cfg(params, max_resubmits=1), tmp_path)
        assert fake.create_calls == 2 and m["rejected_by_reason"]["api_error"] == 1 and len(acc) == 1


@pytest.mark.parametrize("state", ["BATCH_STATE_FAILED", "BATCH_STATE_EXPIRED"])
def test_failed_or_expired_job_keeps_earlier_results(tmp_path, params, prompts, gemini_env, state):
    with FakeGemini(lambda k, r, n: error_line() if k.endswith("/1") else _right(k, r, n)) as fake:
        gemini_env(fake)
        backend = GeminiBatchBackend(_cfg(params), tmp_path, sleep=lambda s: None)
        items = [TeacherItem(r["id"], messages(prompts, "cot", r["question"])) for r in _rows(3)]
        # round 0 succeeds except key 1; round 1 (the resubmission) ends in a bad state
        orig = fake._finish

        def finish(jid):
            if fake.jobs[jid]["round"] >= 1:
                fake.jobs[jid]["state"] = state
            else:
                orig(jid)
        fake._finish = finish
        with pytest.raises(TeacherError, match=rf"ended JOB_STATE_{state.split('_')[-1]}.*2 results .*kept"):
            backend.generate(items)
        # run again once the service works: only the failed request is resubmitted
        fake._finish = orig
        fake.answer = _right
        out = backend.generate(items)
        assert all(not r.error for r in out.values()) and len(out) == 3
        assert fake.create_calls == 3
        assert [r["key"] for r in fake.requests_seen][-1] == "gsm8k/train/1"


def test_temporary_errors_are_retried_and_the_stage_completes(tmp_path, params, prompts, gemini_env):
    """503s on polls (more than the SDK's own retries), lists and downloads: one call, all
    rows, one create."""
    with FakeGemini(_right, polls_before_done=2) as fake:
        gemini_env(fake)
        fake.fail = {"get": 7, "list": 2, "download": 2}
        out = GeminiBatchBackend(_cfg(params), tmp_path, sleep=lambda s: None).generate(
            [TeacherItem(r["id"], messages(prompts, "cot", r["question"])) for r in _rows(4)])
        assert fake.failed == {"get": 7, "list": 2, "download": 2}
        assert fake.create_calls == 1 and sorted(out) == [r["id"] for r in _rows(4)]
        assert all(r.text and not r.error for r in out.values())


def test_an_uncertain_create_is_looked_up_not_repeated(tmp_path, params, prompts, gemini_env):
    """The server creates the job but answers 503: the backend finds the job by name."""
    with FakeGemini(_right) as fake:
        gemini_env(fake)
        fake.fail = {"create": 1}
        out = GeminiBatchBackend(_cfg(params), tmp_path, sleep=lambda s: None).generate(
            [TeacherItem(r["id"], messages(prompts, "cot", r["question"])) for r in _rows(3)])
        assert fake.create_calls == 1 and len(out) == 3 and all(not r.error for r in out.values())


def test_a_rerun_without_the_state_file_finds_the_paid_job(tmp_path, params, prompts, gemini_env):
    """A temporary workspace died while its job ran: a rerun elsewhere (no state file)
    derives the same display name and reuses the job."""
    items = [TeacherItem(r["id"], messages(prompts, "cot", r["question"])) for r in _rows(3)]
    with FakeGemini(_right) as fake:
        gemini_env(fake)
        fake.hold.clear()  # the job keeps running
        cfg = _cfg(params)
        with pytest.raises(TeacherError, match="still JOB_STATE_RUNNING"):
            GeminiBatchBackend(dataclasses.replace(cfg, poll=PollConfig(0.01, 0.02, 1.5, 0.2)), tmp_path / "a",
                               sleep=lambda s: time.sleep(0.01)).generate(items)
        fake.hold.set()
        out = GeminiBatchBackend(cfg, tmp_path / "b", sleep=lambda s: None).generate(items)
        assert fake.create_calls == 1 and len(out) == 3 and all(not r.error for r in out.values())
        (job,) = fake.jobs.values()
        assert job["display_name"].startswith("specdraft-") and job["display_name"].endswith("-r0-a0")


def test_missing_api_key_stops_before_any_request(tmp_path, params, prompts, monkeypatch):
    with FakeGemini(_right) as fake:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.url)
        monkeypatch.delenv("GEMINI_API_KEY", raising=False)
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
        with pytest.raises(TeacherError, match="set GEMINI_API_KEY"):
            run_cot(_rows(2), prompts, _cfg(params), tmp_path)
        assert fake.api_keys == set() and fake.create_calls == 0


def test_cost_guard_refuses_before_upload(tmp_path, params, prompts, gemini_env):
    with FakeGemini(_right) as fake:
        gemini_env(fake)
        cfg = _cfg(params, max_cost_usd=0.001)
        est = estimate_cost([TeacherItem("k", messages(prompts, "cot", "q"))] * 2, cfg)
        assert est["usd_max"] == pytest.approx(
            (est["tokens_in_est"] * 0.30 + 2 * 2048 * 2.50) / 1e6 * 0.5)
        with pytest.raises(TeacherError, match=r"exceeds teacher.max_cost_usd=\$0.00"):
            run_cot(_rows(2), prompts, cfg, tmp_path)
        assert fake.uploads == {} and fake.create_calls == 0


def _workspace_tokenizer(ws: Path, tiny_models: Path) -> None:
    """models/tokenizer, as the tokenizer stage writes it (here SmolLM2's, from the tiny target)."""
    (ws / "models").mkdir(parents=True, exist_ok=True)
    (ws / "models/tokenizer").symlink_to(tiny_models / "target")


@pytest.mark.slow  # integration: kept out of test-fast (3-minute budget), run by make test / CI
def test_crash_after_job_creation_resumes_same_job(tmp_path, root, params, gemini_env, tiny_models):
    """Kill the real stage process right after the server creates the job; the rerun
    resumes that job (found by its state file or display name) and never creates a second."""
    ws = tmp_path / "ws"
    p = dict(params)
    p["teacher"] = {**params["teacher"], "backend": "gemini-batch",
                    "poll": {"initial_s": 0.05, "max_s": 0.1, "multiplier": 1.5, "timeout_s": 60}}
    (ws / "data/prepared/gsm8k").mkdir(parents=True)
    (ws / "params.yaml").write_text(yaml.safe_dump(p))
    write_jsonl(ws / "data/prepared/gsm8k/train.jsonl", _rows(4))
    _workspace_tokenizer(ws, tiny_models)
    with FakeGemini(_right) as fake:
        env = {**os.environ, "GOOGLE_GEMINI_BASE_URL": fake.url, "GEMINI_API_KEY": KEY,
               "PYTHONPATH": str(root / "src")}
        cmd = [sys.executable, "-m", "specdraft.stages.cot", *COT_ARGS]
        fake.hold.clear()  # jobs stay RUNNING
        proc = subprocess.Popen(cmd, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if not fake.created.wait(60):  # kill it before reading its output: the stage would keep polling
            proc.kill()
            pytest.fail(f"the stage created no batch job in 60 s:\n{proc.communicate(timeout=30)[0].decode()}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert not (ws / "data/teacher/cot/gsm8k.jsonl").exists()
        fake.hold.set()
        done = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert fake.create_calls == 1
        m = json.loads((ws / "metrics/teacher/cot/gsm8k.json").read_text())
        assert m["accepted"] == 4
        # the key is never written to outputs, state or logs
        for f in ws.rglob("*"):
            if f.is_file():
                assert KEY not in f.read_text(errors="ignore"), f
        assert KEY not in done.stdout + done.stderr


def test_stage_without_key_fails_with_clear_message(tmp_path, root, params, tiny_models):
    ws = tmp_path / "ws"
    (ws / "data/prepared/gsm8k").mkdir(parents=True)
    p = {**params, "teacher": {**params["teacher"], "backend": "gemini-batch"}}
    (ws / "params.yaml").write_text(yaml.safe_dump(p))
    write_jsonl(ws / "data/prepared/gsm8k/train.jsonl", _rows(2))
    _workspace_tokenizer(ws, tiny_models)
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    env["PYTHONPATH"] = str(root / "src")
    t = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "specdraft.stages.cot", *COT_ARGS], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "set GEMINI_API_KEY" in done.stderr
    assert not Path(ws / "data/teacher").exists() and time.monotonic() - t < 60


def test_real_data_reference_teacher_acceptance(shared_data, prompts, params, tmp_path):
    """Reference teacher over whole training splits: >= 99.5 % (GSM8K), >= 98 % (MATH)."""
    from specdraft.data.prepare import PrepareConfig, ScenarioConfig, prepare
    from specdraft.data.sources import DataConfig, DatasetConfig

    cfg = build(TeacherConfig, params["teacher"], "teacher")
    datasets = {k: build(DatasetConfig, v, k) for k, v in params["data"]["datasets"].items()}
    data = DataConfig(source=f"dir:{shared_data}", sample_dir="", datasets=datasets)
    for name, floor in (("gsm8k", 0.995), ("math_algebra_l12", 0.98), ("math_intalg_l34", 0.98)):
        sc = build(ScenarioConfig, {**params["scenarios"][name], "pool_splits": ["train"]}, name)
        rows = prepare(name, sc, data, PrepareConfig(n_train=100000, n_test=1, seed=0, allow_shortfall=True)).train
        acc, _, m = run_cot(rows, prompts, cfg, tmp_path)
        cod, _, m2 = run_cod(acc, {r["id"]: r for r in rows}, prompts, cfg, tmp_path)
        print(name, len(rows), m["accepted_share"], m2["accepted"] / len(rows), m2["rejected_by_reason"],
              {k: m2[k] for k in ("words_per_step_median", "words_per_step_p90", "share_steps_within_budget",
                                  "chars_ratio_cod_over_cot_mean")})
        assert m2["paired"] / len(rows) >= floor
        assert m2["chars_ratio_cod_over_cot_mean"] < 0.7


def test_a_pass_accepting_too_little_fails_with_the_reasons_and_keeps_results(tmp_path, params, prompts,
                                                                              gemini_env):
    def mostly_wrong(key, request, rnd):
        return _right(key, request, rnd) if key.endswith("/0") else ok_line("It is 7.\n#### 7")

    with FakeGemini(mostly_wrong) as fake:
        gemini_env(fake)
        with pytest.raises(TeacherError, match=r"accepted 1 of 4 answers \(25% < teacher.min_accepted_share 50%\); "
                                               r"rejected by reason: \{'wrong_answer': 3\}"):
            run_cot(_rows(4), prompts, _cfg(params), tmp_path)
        # the paid results are kept: a rerun with a lower bar uses them, no new job
        acc, rej, m = run_cot(_rows(4), prompts, _cfg(params, min_accepted_share=0.2), tmp_path)
        assert fake.create_calls == 1 and len(acc) == 1 and m["rejected_by_reason"]["wrong_answer"] == 3


def test_answers_too_long_for_training_are_rejected_and_counted(tmp_path, prompts, params, tiny_models):
    """An answer whose training sequence (chat template: prompt + answer) is longer than
    train_target.max_length never reaches training: rejected with the reason too_long, in
    both passes, counted in the teacher metrics."""
    from transformers import AutoTokenizer

    from specdraft.prompts import training_length
    from specdraft.teacher.core import LengthLimit

    tok = AutoTokenizer.from_pretrained(tiny_models / "target")
    rows = _rows(4)
    rows[2]["solution"] = "\n".join(f"Step {j}: 2 + 2 = 4, as everyone knows." for j in range(60)) + "\n#### 4"
    rows[2]["answer"] = "4"
    long_cot = cot_from_gold(rows[2]["solution"], "gsm8k", "4")
    limit = LengthLimit(tok, 160)
    assert training_length(tok, messages(prompts, "cot", rows[2]["question"]), long_cot) > 160
    cfg = build(TeacherConfig, {**params["teacher"], "backend": "reference"}, "teacher")
    acc, rej, m = run_cot(rows, prompts, cfg, tmp_path, limit)
    assert [r["id"] for r in rej] == ["gsm8k/train/2"] and rej[0]["reason"] == "too_long"
    assert rej[0]["training_tokens"] > 160 and m["rejected_by_reason"]["too_long"] == 1
    assert m["max_length"] == 160 and m["training_tokens_max"] <= 160 and len(acc) == 3
    # the CoD pass counts with the CoD training prompt
    acc2, rej2, m2 = run_cod(acc, {r["id"]: r for r in rows}, prompts, dataclasses.replace(cfg, min_accepted_share=0),
                             tmp_path, LengthLimit(tok, 30))
    assert m2["rejected_by_reason"]["too_long"] == len(rej2) == 3 and all(r["training_tokens"] > 30 for r in rej2)


def test_training_length_is_what_the_trainer_tokenizes(prompts, tiny_models):
    """The teacher's count equals the length of the sequence TRL builds for training."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from specdraft.prompts import training_length
    from specdraft.train.examples import build_examples
    from specdraft.train.settings import TrainConfig
    from specdraft.train.trainers import make_trainer

    tok = AutoTokenizer.from_pretrained(tiny_models / "target")
    rows = [{"id": f"q{i}", "question": f"What is {i} + {i}?", "response": f"{i}+{i}={2 * i}\n#### {2 * i}"}
            for i in range(3)]
    ex = build_examples(rows, prompts, "cot", "response")
    cfg = TrainConfig(method="full", learning_rate=1e-3, epochs=1, batch_size=1, grad_accum=1, max_length=512,
                      warmup_ratio=0.0, val_share=0.0)
    tr = make_trainer(tiny_models / "draft", ex, [], cfg, Path("/tmp/specdraft-unused-ckpt"), None)
    assert isinstance(tr.train_dataset, Dataset)
    assert [len(x) for x in tr.train_dataset["input_ids"]] == \
        [training_length(tok, e["prompt"], e["completion"][0]["content"]) for e in ex]


def test_service_refuses_thinking_off_for_pro_models_as_the_readme_warns(tmp_path, prompts, params, gemini_env):
    """gemini-2.5-pro only works in thinking mode: thinking_budget 0 is refused per request
    (the fake applies the service's rule); the README's example sets 128 and goes through."""
    rows = _rows(2)
    with FakeGemini(_right) as fake:
        gemini_env(fake)
        cfg = _cfg(params, model="gemini-2.5-pro", thinking_budget=0, max_resubmits=0)
        with pytest.raises(TeacherError, match="api_error.*first service error: .*only works in thinking mode"):
            run_cot(rows, prompts, cfg, tmp_path / "a")
        acc, _, m = run_cot(rows, prompts, dataclasses.replace(cfg, thinking_budget=128), tmp_path / "b")
        assert len(acc) == 2 and m["rejected"] == 0
