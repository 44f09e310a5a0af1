"""One evaluation process per target: plain answers, exact simulated acceptance, timed runs.

On tiny random-weight models with the real tokenizer (conftest.tiny_models), so the logic
runs in seconds. What must hold: the simulation reproduces the engine's own counts on
every timed question, speculative output equals plain output, a speculative
configuration's answers are the plain answers where it was not timed, a killed run
resumes without decoding again, and a failed divergence check throws no work away.
"""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from specdraft.evaluate.run import (
    EvalConfig,
    PassFiles,
    Variant,
    evaluate,
    evaluate_target,
    plain_metrics,
    speculative_metrics,
)
from specdraft.generate.api import GenerationConfig
from specdraft.generate.hf_engine import HFEngine
from specdraft.io import StageError, read_jsonl


@pytest.fixture(scope="module")
def sample_rows():
    rows = [json.loads(x) for x in (ROOT / "data/sample/gsm8k/test.jsonl").read_text().splitlines()[:6]]
    return [{"id": f"q{i}", "question": r["question"], "answer": r["answer"].rsplit("#### ", 1)[1]}
            for i, r in enumerate(rows)]


GEN = GenerationConfig(max_new_tokens=20, batch_size=4, num_speculative_tokens=2, cpu_kernels="onednn",
                       draft_quant="int8")
CFG = EvalConfig(variants={"sd": Variant("trained"), "sd_untrained": Variant("base")}, timed_prompts=3)


def _drafts(tiny):
    # two drafts: the self-draft, and the target itself (accepts every proposal)
    return {"sd": tiny / "draft", "sd_untrained": tiny / "target"}


def _run(tiny, rows, prompts, tmp_path):
    files = PassFiles(tmp_path, "cot", "fp")
    with HFEngine(tiny / "target", _drafts(tiny), GEN) as eng:
        preds = evaluate_target(eng, rows, "cot", prompts, ["sd", "sd_untrained"], 3, files)
    return preds, files


def test_one_process_evaluates_plain_and_every_variant(tiny_models, sample_rows, local_prompts, tmp_path):
    prompts, _ = local_prompts
    preds, files = _run(tiny_models, sample_rows, prompts, tmp_path)
    assert set(preds) == {"plain", "sd", "sd_untrained", "prefix_tokens", "timed_sample"}
    assert preds["timed_sample"]["n"] == 3 and preds["timed_sample"]["ids"] == [p["id"] for p in preds["plain"]
                                                                                  if p["timed"]]
    assert [p["id"] for p in preds["plain"]] == [r["id"] for r in sample_rows]
    timed = [p for p in preds["plain"] if p["timed"]]
    assert len(timed) == 3 and all(p["latency_s"] > 0 for p in timed)
    for v in ("sd", "sd_untrained"):
        rows = preds[v]
        for plain, spec in zip(preds["plain"], rows, strict=True):
            if spec["timed"]:
                assert spec["same_as_plain"] and spec["simulation_matches_engine"], spec
            else:  # untimed: the plain answer stands for the speculative one
                assert spec["output"] == plain["output"] and "latency_s" not in spec and not spec["own_output"]
            assert spec["spec_accepted"] <= spec["spec_proposed"] <= 2 * sum(spec["spec_hist"])
        m = speculative_metrics(rows, 2)
        assert m["timed_n"] == 3 and m["simulation_matches_engine"] == 3 and m["diverging_outputs"] == 0
        assert m["compared_n"] == 3 and 0 <= m["acceptance_rate"] <= 1 and m["speedup"] > 0
        assert m["acceptance_source"] == "simulated exactly on every question"
        assert m["throughput_speedup"] is None  # the hf engine has no batched speculative decoding
    # the target as its own (int8) draft is accepted far more often than a 1-layer draft
    assert speculative_metrics(preds["sd_untrained"], 2)["acceptance_rate"] > \
        speculative_metrics(preds["sd"], 2)["acceptance_rate"]
    pm = plain_metrics(preds["plain"])
    assert pm["batched_equals_batch1"] == 3 and pm["throughput_tokens_per_s"] > 0
    files.close()


def test_a_killed_evaluation_resumes_without_decoding_again(tiny_models, sample_rows, local_prompts, tmp_path):
    prompts, _ = local_prompts
    first, files = _run(tiny_models, sample_rows, prompts, tmp_path)
    files.close(remove=False)  # as if the process died here: partial files stay
    names = sorted(p.name for p in tmp_path.glob("cot.*.jsonl"))
    assert names == ["cot.plain.jsonl", "cot.plain.timed.jsonl", "cot.sd.speculative.jsonl", "cot.sd.timed.jsonl",
                     "cot.sd_untrained.speculative.jsonl", "cot.sd_untrained.timed.jsonl"]
    lines = {n: len((tmp_path / n).read_text().splitlines()) for n in names}
    again, files = _run(tiny_models, sample_rows, prompts, tmp_path)
    assert {n: len((tmp_path / n).read_text().splitlines()) for n in names} == lines
    assert [p["output"] for p in again["plain"]] == [p["output"] for p in first["plain"]]
    assert [p["latency_s"] for p in again["sd"] if p["timed"]] == [p["latency_s"] for p in first["sd"] if p["timed"]]
    files.close()


def test_a_failed_divergence_check_keeps_the_decoded_passes(tiny_models, sample_rows, local_prompts, tmp_path):
    """One speculative output differs from its plain twin (here the plain batch-1 record of
    q0 in a resumed run's partial file ends differently, as a bf16 near-tie flip would):
    with a tolerance of 0 the stage fails after all its decoding, writes nothing and keeps
    every partial file; rerun with a bf16 profile's tolerance it decodes nothing again and
    reports the difference."""
    prompts, _ = local_prompts
    cfg = EvalConfig(variants={"sd": Variant("trained")}, timed_prompts=2, max_diverging_share=0.0)
    drafts = {"sd": tiny_models / "draft"}
    part, preds_dir, metrics_dir = tmp_path / "partial", tmp_path / "preds", tmp_path / "metrics"

    from specdraft.evaluate.run import timed_sample

    first = timed_sample(sample_rows, 2, cfg.timed_seed)[0][0]  # a question the run will time
    with HFEngine(tiny_models / "target", drafts, GEN) as eng:  # its real plain batch-1 record, flipped at the end
        files = PassFiles(part, "cot", "fp")
        evaluate_target(eng, [first], "cot", prompts, [], 0, files)
        from specdraft.generate.passes import record
        from specdraft.prompts import messages

        o = eng.generate_one(eng.render(messages(prompts, "cot", first["question"])))
        o.token_ids = o.token_ids[:-1] + [o.token_ids[-1] + 1]
        files.open("plain.timed").add(record(first, o, 1))
        files.close(remove=False)

    def run(share):
        return evaluate("gsm8k", "cot", tiny_models / "target", drafts, sample_rows, prompts, GEN,
                        EvalConfig(variants=cfg.variants, timed_prompts=2, max_diverging_share=share), None,
                        PassFiles(part, "cot", "fp"), preds_dir, metrics_dir)

    with pytest.raises(StageError, match=r"1 of 2 speculative outputs differ .* eval.max_diverging_share"):
        run(0.0)
    assert not metrics_dir.exists() and not preds_dir.exists()
    kept = {p.name: len(p.read_text().splitlines()) for p in part.glob("*.jsonl")}
    assert kept == {"cot.plain.jsonl": 7, "cot.plain.timed.jsonl": 3, "cot.sd.timed.jsonl": 3,
                    "cot.sd.speculative.jsonl": 7}  # fingerprint line + every question of every pass
    m = run(1.0)["cot_sd"]
    assert (m["diverging_outputs"], m["compared_n"]) == (1, 2) and m["diverging"][0]["id"] == first["id"]
    assert len(read_jsonl(preds_dir / "cot_sd.jsonl")) == len(sample_rows)
    assert not list(part.glob("*.jsonl"))  # removed once the outputs are written


def test_simulation_equals_engine_counts_for_every_prompt(tiny_models, sample_rows, local_prompts):
    prompts, _ = local_prompts
    from specdraft.prompts import messages

    eng = HFEngine(tiny_models / "target", tiny_models / "draft", GenerationConfig(max_new_tokens=24))
    for r in sample_rows:
        text = eng.render(messages(prompts, "cot", r["question"]))
        ids = eng.tokenizer(text, add_special_tokens=False)["input_ids"]
        plain = eng.generate_one(text)
        spec = eng.generate_one(text, "draft")
        sim = eng.simulate(ids, plain.token_ids, "draft")
        assert spec.token_ids == plain.token_ids == sim.token_ids
        assert (sim.rounds, sim.proposed, sim.accepted, sim.hist) == \
            (spec.rounds, spec.proposed, spec.accepted, spec.accepted_hist)


def test_the_k_sweep_at_the_configured_k_equals_the_main_pass(tiny_models, sample_rows, local_prompts, tmp_path):
    """The sweep is the same exact simulation at other k, on the questions it is given
    (validation questions in the pipeline): at the configured k its counts equal the main
    pass's on the same questions; every k's figures come from
    acceptance_stats (per-position list of length k); the predicted speedup is L / (k c + v)."""
    from specdraft.evaluate.run import sweep_metrics
    from specdraft.evaluate.stats import acceptance_stats, pooled_hist

    prompts, _ = local_prompts
    files = PassFiles(tmp_path, "cot", "fp")
    with HFEngine(tiny_models / "target", _drafts(tiny_models), GEN) as eng:
        # the sweep's questions are its own (validation) set, answered in their own pass:
        # here the first 4 test rows, so its counts can be checked against the main pass
        preds = evaluate_target(eng, sample_rows, "cot", prompts, ["sd", "sd_untrained"], 0, files,
                                (["sd"], [1, 2, 3], sample_rows[:4]))
    files.close()
    assert set(preds["sweep"]) == {"sd"} and [r["k"] for r in preds["sweep"]["sd"]] == [1, 2, 3]
    main = preds["sd"][:4]
    at2 = preds["sweep"]["sd"][1]
    want = acceptance_stats(sum(p["spec_proposed"] for p in main), sum(p["spec_accepted"] for p in main),
                            pooled_hist([p["spec_hist"] for p in main]))
    assert {k: at2[k] for k in want} == want and at2["questions"] == 4
    for r in preds["sweep"]["sd"]:
        assert len(r["acceptance_per_position"]) == r["k"]
    fm = preds["forward_ms"]
    assert set(fm) == {1, 2, 3, 4} and min(fm.values()) > 0
    rows = sweep_metrics(preds["sweep"]["sd"], {1: 10.0, 2: 11.0, 3: 12.0, 4: 13.0}, 0.1)
    assert rows[2]["verify_cost"] == pytest.approx(1.3)
    assert rows[2]["predicted_speedup"] == pytest.approx(rows[2]["mean_acceptance_length"] / (3 * 0.1 + 1.3))
    assert sweep_metrics(preds["sweep"]["sd"], fm, None)[0]["predicted_speedup"] is None


def test_evaluation_runs_the_runs_kernel_path_whatever_the_probe_said(tiny_models, sample_rows, local_prompts,
                                                                       tmp_path):
    """Two probes that straddle a tie (the timings perturbed between runs, as on a machine
    where the two paths are within noise) decide the same path; two evaluations with it
    give the same output on every row, and every metrics file names that path."""
    import dataclasses

    from specdraft.device import resolve
    from specdraft.generate.cpu_kernels import decide

    prompts, _ = local_prompts
    gen = dataclasses.replace(GEN, cpu_kernels="auto")
    cfg = EvalConfig(variants={"sd": Variant("trained")}, timed_prompts=2)
    probes = [{"default": {1: 44.0, 3: 43.9}, "onednn": {1: 44.0, 3: 43.8}},
              {"default": {1: 44.0, 3: 43.8}, "onednn": {1: 43.9, 3: 43.9}}]
    outputs, paths = [], []
    for i, timings in enumerate(probes):
        path = decide({"forward_ms": timings})
        plan = resolve(gen, "cpu", path, drafts=True)
        out = evaluate("gsm8k", "cot", tiny_models / "target", {"sd": tiny_models / "draft"}, sample_rows, prompts,
                       gen, cfg, None, PassFiles(tmp_path / f"part{i}", "cot", "fp"), tmp_path / f"preds{i}",
                       tmp_path / f"metrics{i}", plan)
        paths.append({c: m["cpu_kernels"] for c, m in out.items()} | {"decided": path})
        outputs.append({c: [r["output"] for r in read_jsonl(tmp_path / f"preds{i}/{c}.jsonl")] for c in out})
    assert paths[0] == paths[1] == {"cot": "default", "cot_sd": "default", "decided": "default"}
    assert outputs[0] == outputs[1]
    for c in ("cot", "cot_sd"):
        m = json.loads((tmp_path / f"metrics0/{c}.json").read_text())
        assert m["cpu_kernels_setting"] == "auto" and m["applied"]["generation.cpu_kernels"] == "default"


def test_an_opt_in_variant_writes_only_its_own_files(tiny_models, sample_rows, local_prompts, tmp_path):
    """evaluate_kd's call (`--variant sd_kd=kd`): its variant, not eval.variants, measured
    against the plain configuration it decodes and times itself; the plain files are left
    to the evaluate stage, the variant's are identical to what evaluate would write."""
    prompts, _ = local_prompts
    rows = sample_rows[:3]
    cfg = EvalConfig(variants={"sd": Variant("trained")}, timed_prompts=2, sweep_k=[1, 2])
    val = ("val.jsonl", sample_rows[3:5])
    args = (rows, prompts, GEN, cfg, None)
    both = evaluate("gsm8k", "cot", tiny_models / "target", {"sd": tiny_models / "draft"}, *args,
                    PassFiles(tmp_path / "p1", "cot", "fp"), tmp_path / "a", tmp_path / "a", None, val)
    only = evaluate("gsm8k", "cot", tiny_models / "target", {"sd_kd": tiny_models / "draft"}, *args,
                    PassFiles(tmp_path / "p2", "cot_sd_kd", "fp"), tmp_path / "b", tmp_path / "b", None, val,
                    variants={"sd_kd": Variant("kd")}, write_plain=False)
    assert set(both) == {"cot", "cot_sd"} and set(only) == {"cot_sd_kd"}
    assert sorted(f.name for f in (tmp_path / "b").iterdir()) == ["cot_sd_kd.json", "cot_sd_kd.jsonl"]
    a, b = both["cot_sd"], only["cot_sd_kd"]
    keys = ["accuracy", "acceptance_rate", "mean_acceptance_length", "acceptance_per_position", "diverging_outputs"]
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert [r["mean_acceptance_length"] for r in a["k_sweep"]] == [r["mean_acceptance_length"] for r in b["k_sweep"]]
    assert b["simulation_matches_engine"] == b["timed_n"] == 2 and b["speedup"] > 0


def test_timed_questions_are_a_stratified_random_draw():
    """Every kind of question is timed (at least one of each while n allows), the rest in
    proportion; the draw is random (another seed, another sample), reproducible, recorded,
    and keeps the file's order."""
    from specdraft.evaluate.run import timed_sample

    rows = [{"id": f"q{i:02d}", "stratum": "a" if i < 19 else "b" if i < 38 else "c"} for i in range(40)]
    chosen, rec = timed_sample(rows, 10, seed=0)
    assert len(chosen) == 10 and [r["id"] for r in chosen] == sorted(r["id"] for r in chosen)
    # 4.75 / 4.75 / 0.5 by proportion: floors 4 / 4 / 1 (at least one), the tie to "a"
    assert rec["by_stratum"] == {"a": {"timed": 5, "questions": 19}, "b": {"timed": 4, "questions": 19},
                                 "c": {"timed": 1, "questions": 2}}
    assert rec["seed"] == 0 and rec["ids"] == [r["id"] for r in chosen] and rec["n"] == 10 and rec["of"] == 40
    assert timed_sample(rows, 10, seed=0)[1]["ids"] == rec["ids"]
    assert timed_sample(rows, 10, seed=1)[1]["ids"] != rec["ids"]
    # not the file's first rows (the bias this replaces): the draw reaches past them
    assert rec["ids"] != [r["id"] for r in rows[:10]]
    # one stratum (GSM8K: no kinds): a plain random draw; n >= all: every row; n = 0: none
    plain = [{"id": str(i)} for i in range(30)]
    assert len(timed_sample(plain, 7, 3)[0]) == 7 and timed_sample(plain, 7, 3)[1]["by_stratum"] == {
        "None": {"timed": 7, "questions": 30}}
    assert timed_sample(plain, 40, 3)[0] == plain and timed_sample(plain, 0, 3)[0] == []
    # fewer questions than kinds: no floor, still n
    many = [{"id": str(i), "stratum": str(i % 6)} for i in range(12)]
    assert len(timed_sample(many, 4, 0)[0]) == 4
