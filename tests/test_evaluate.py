"""One evaluation process per target: plain answers, exact simulated acceptance, timed runs.

On tiny random-weight models with the real tokenizer (conftest.tiny_models), so the logic
runs in seconds. What must hold: the simulation reproduces the engine's own counts on
every timed question, speculative output equals plain output, a speculative
configuration's answers are the plain answers where it was not timed, and a killed run
resumes without decoding again.
"""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from specdraft.evaluate.run import EvalConfig, Variant, evaluate_target, plain_metrics, speculative_metrics
from specdraft.generate.api import GenerationConfig
from specdraft.generate.hf_engine import HFEngine
from specdraft.generate.resume import Resumable


@pytest.fixture(scope="module")
def sample_rows():
    rows = [json.loads(x) for x in (ROOT / "data/sample/gsm8k/test.jsonl").read_text().splitlines()[:6]]
    return [{"id": f"q{i}", "question": r["question"], "answer": r["answer"].rsplit("#### ", 1)[1]}
            for i, r in enumerate(rows)]


GEN = GenerationConfig(max_new_tokens=20, batch_size=4, num_speculative_tokens=2, cpu_kernels="onednn",
                       draft_quant="int8")
CFG = EvalConfig(variants={"sd": Variant("trained"), "sd_untrained": Variant("base")}, timed_prompts=3)


def _run(tiny, rows, prompts, tmp_path):
    plain_r, timed_r = Resumable(tmp_path / "p.jsonl", "fp"), Resumable(tmp_path / "t.jsonl", "fp")
    # two drafts: the self-draft, and the target itself (accepts every proposal)
    drafts = {"sd": tiny / "draft", "sd_untrained": tiny / "target"}
    preds, counters = evaluate_target(tiny / "target", drafts, rows, "cot", prompts, GEN, CFG, plain_r, timed_r)
    assert counters == {}  # the hf engine simulates acceptance; only vllm returns its counters
    return preds, plain_r, timed_r


def test_one_process_evaluates_plain_and_every_variant(tiny_models, sample_rows, local_prompts, tmp_path):
    prompts, _ = local_prompts
    preds, plain_r, timed_r = _run(tiny_models, sample_rows, prompts, tmp_path)
    assert set(preds) == {"plain", "sd", "sd_untrained"}
    assert [p["id"] for p in preds["plain"]] == [r["id"] for r in sample_rows]
    timed = [p for p in preds["plain"] if p["timed"]]
    assert len(timed) == 3 and all(p["latency_s"] > 0 for p in timed)
    for v in ("sd", "sd_untrained"):
        rows = preds[v]
        for plain, spec in zip(preds["plain"], rows, strict=True):
            if spec["timed"]:
                assert spec["same_as_plain"] and spec["simulation_matches_engine"], spec
            else:  # untimed: the plain answer stands for the speculative one
                assert spec["output"] == plain["output"] and "latency_s" not in spec
            assert spec["sim_accepted"] <= spec["sim_proposed"] <= 2 * spec["sim_rounds"]
        m = speculative_metrics(rows, 2)
        assert m["timed_n"] == 3 and m["simulation_matches_engine"] == 3 and m["diverging_outputs"] == 0
        assert 0 <= m["acceptance_rate"] <= 1 and m["speedup"] > 0
    # the target as its own (int8) draft is accepted far more often than a 1-layer draft
    assert speculative_metrics(preds["sd_untrained"], 2)["acceptance_rate"] > \
        speculative_metrics(preds["sd"], 2)["acceptance_rate"]
    assert plain_metrics(preds["plain"])["batched_equals_batch1"] == 3
    plain_r.close()
    timed_r.close()


def test_a_killed_evaluation_resumes_without_decoding_again(tiny_models, sample_rows, local_prompts, tmp_path):
    prompts, _ = local_prompts
    first, plain_r, timed_r = _run(tiny_models, sample_rows, prompts, tmp_path)
    plain_r._app.close()  # as if the process died here: partial files stay
    timed_r._app.close()
    lines = [len((tmp_path / f).read_text().splitlines()) for f in ("p.jsonl", "t.jsonl")]
    again, plain_r, timed_r = _run(tiny_models, sample_rows, prompts, tmp_path)
    assert [len((tmp_path / f).read_text().splitlines()) for f in ("p.jsonl", "t.jsonl")] == lines
    assert [p["output"] for p in again["plain"]] == [p["output"] for p in first["plain"]]
    assert [p["latency_s"] for p in again["sd"] if p["timed"]] == [p["latency_s"] for p in first["sd"] if p["timed"]]


def test_simulation_equals_engine_counts_for_every_prompt(tiny_models, sample_rows, local_prompts):
    prompts, _ = local_prompts
    from specdraft.prompts import messages

    eng = HFEngine(tiny_models / "target", tiny_models / "draft", GenerationConfig(max_new_tokens=24))
    for r in sample_rows:
        text = eng.render(messages(prompts, "cot", r["question"]))
        ids = eng.tokenizer(text, add_special_tokens=False)["input_ids"]
        plain = eng.generate_one(text)
        spec = eng.generate_one(text, speculative=True)
        sim = eng.simulate(ids, plain.token_ids)
        assert spec.token_ids == plain.token_ids == sim.token_ids
        assert (sim.rounds, sim.proposed, sim.accepted) == (spec.rounds, spec.proposed, spec.accepted)
