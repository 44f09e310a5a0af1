"""Scenario preparation: leak-free splits, stable ids, shortfall, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specdraft.config import build, load_params
from specdraft.data.prepare import PrepareConfig, ScenarioConfig, normalize_question, prepare
from specdraft.data.sources import DataConfig
from specdraft.io import InputError, read_jsonl, write_jsonl


def _data(root: Path, source: str = "sample") -> tuple[DataConfig, dict]:
    """Section `data` as a stage builds it, with another source."""
    params = load_params(root / "params.yaml")
    d = {**params["data"], "source": source, "sample_dir": str(root / params["data"]["sample_dir"])}
    return build(DataConfig, d, "data"), params["scenarios"]


def _sc(scenarios: dict, name: str, **over) -> ScenarioConfig:
    return build(ScenarioConfig, {**scenarios[name], **over}, name)


@pytest.mark.parametrize("name", ["gsm8k", "math_algebra_l12", "math_intalg_l34"])
def test_sample_scenarios_are_leak_free_and_filtered(root, name):
    data, scenarios = _data(root)
    out = prepare(name, _sc(scenarios, name), data, PrepareConfig(n_train=40, n_test=12, seed=0))
    assert len(out.train) == 40 and len(out.test) == 12
    train_q = {normalize_question(r["question"]) for r in out.train}
    assert not train_q & {normalize_question(r["question"]) for r in out.test}
    assert len({r["id"] for r in out.train + out.test}) == 52
    for r in out.train + out.test:
        assert set(r) == {"id", "scenario", "source_split", "question", "solution", "answer", "format", "stratum"}
        assert r["scenario"] == name and r["answer"]
        # the question's kind (the sample generator's template), by which the timed questions are drawn
        assert r["stratum"] in ({"two_colours", "bag", "same_number"} if name == "gsm8k" else
                                {"add_eq_small", "mul_eq"} if name == "math_algebra_l12" else
                                {"vieta_sum", "vieta_product", "vieta_sum_scaled", "vieta_product_scaled"})
    if name == "math_algebra_l12":
        raw = {json.loads(x)["unique_id"]: json.loads(x) for s in ("train", "test")
               for x in (root / f"data/sample/math/{s}.jsonl").open()}
        for r in out.train + out.test:
            rec = raw[r["id"].split("/", 1)[1]]
            assert rec["type"] == "Algebra" and rec["level"] in ("Level 1", "Level 2")
    # test rows come from the test split only
    assert {r["source_split"] for r in out.test} == {"test"}


@pytest.mark.parametrize("name", ["gsm8k", "math_algebra_l12", "math_intalg_l34"])
def test_extra_questions_are_new_filtered_and_leave_the_splits_unchanged(root, name):
    """The drafts' extra questions: the rest of the pool after train and val, then the
    sample generator's extra split; none a train, val or test question; the other splits
    exactly as without them; filtered like the scenario; their order fixed by the seed."""
    data, scenarios = _data(root)
    sc, cfg = _sc(scenarios, name), PrepareConfig(n_train=40, n_test=40, n_val=16, seed=0)
    out = prepare(name, sc, data, cfg)
    without = prepare(name, sc, DataConfig(data.source, data.sample_dir, data.datasets, extra_split=None), cfg)
    assert (out.train, out.val, out.test) == (without.train, without.val, without.test)
    rest = without.extra  # the pool's leftovers only
    assert out.extra[: len(rest)] == rest and len(out.extra) > len(rest) + 60
    assert {r["source_split"] for r in out.extra[len(rest):]} == {"extra"}
    taken = {normalize_question(r["question"]) for r in out.train + out.val + out.test}
    extra_q = [normalize_question(r["question"]) for r in out.extra]
    assert len(set(extra_q)) == len(extra_q) and not set(extra_q) & taken
    assert out.stats["n_extra"] == len(out.extra) and out.stats["extra_split"] == "extra"
    assert prepare(name, sc, data, cfg).extra == out.extra  # same seed, same order
    if name != "gsm8k":
        raw = {json.loads(x)["unique_id"]: json.loads(x) for x in (root / "data/sample/math/extra.jsonl").open()}
        want = {"math_algebra_l12": ("Algebra", {"Level 1", "Level 2"}),
                "math_intalg_l34": ("Intermediate Algebra", {"Level 3", "Level 4"})}[name]
        for r in out.extra[len(rest):]:
            rec = raw[r["id"].split("/", 1)[1]]
            assert rec["type"] == want[0] and rec["level"] in want[1]


def test_a_source_without_the_extra_split_offers_the_rest_of_the_pool(root, shared_data):
    """A real copy of the datasets has no `extra` split: the drafts' extra questions are then
    the training pool's leftovers (thousands on GSM8K), not an error."""
    data, scenarios = _data(root, source=f"dir:{shared_data}")
    out = prepare("gsm8k", _sc(scenarios, "gsm8k"), data, PrepareConfig(n_train=40, n_test=40, n_val=16, seed=0))
    assert out.stats["extra_split"] is None and len(out.extra) >= 7000
    assert {r["source_split"] for r in out.extra} == {"train"}
    assert not {r["id"] for r in out.extra} & {r["id"] for r in out.train + out.val + out.test}


@pytest.mark.parametrize("name", ["gsm8k", "math_algebra_l12", "math_intalg_l34"])
def test_validation_questions_are_new_and_leave_training_unchanged(root, name):
    """The k sweep's questions: 16 per scenario in the local profile, none of them a training
    or test question, and adding them leaves the training set as it was (train and test
    are drawn first from the same shuffle)."""
    data, scenarios = _data(root)
    sc = _sc(scenarios, name)
    without = prepare(name, sc, data, PrepareConfig(n_train=40, n_test=40, seed=0))
    out = prepare(name, sc, data, PrepareConfig(n_train=40, n_test=40, n_val=16, seed=0))
    assert out.train == without.train and out.test == without.test and without.val == []
    assert len(out.val) == 16 and out.stats["n_val"] == 16
    val_q = {normalize_question(r["question"]) for r in out.val}
    assert not val_q & {normalize_question(r["question"]) for r in out.train + out.test}
    with pytest.raises(InputError, match="prepare.n_val is 90 but only"):
        prepare(name, sc, data, PrepareConfig(n_train=40, n_test=40, n_val=90, seed=0))


def test_same_seed_same_selection_other_seed_differs(root):
    data, scenarios = _data(root)
    sc = _sc(scenarios, "gsm8k")
    a = prepare("gsm8k", sc, data, PrepareConfig(n_train=20, n_test=5, seed=1))
    b = prepare("gsm8k", sc, data, PrepareConfig(n_train=20, n_test=5, seed=1))
    c = prepare("gsm8k", sc, data, PrepareConfig(n_train=20, n_test=5, seed=2))
    assert a.train == b.train and a.test == b.test
    assert [r["id"] for r in a.test] != [r["id"] for r in c.test]


def test_pool_with_test_split_excludes_drawn_test_rows_and_records_shortfall(root):
    data, scenarios = _data(root)
    sc = _sc(scenarios, "math_intalg_l34")
    assert sc.pool_splits == ["train", "test"]
    # more training rows than there are: an error naming the counts, unless allowed
    with pytest.raises(InputError, match=r"scenarios.math_intalg_l34: prepare.n_train is 1000 but only 94 rows are "
                                         r"available .*prepare.allow_shortfall: true"):
        prepare("math_intalg_l34", sc, data, PrepareConfig(n_train=1000, n_test=10, seed=0))
    out = prepare("math_intalg_l34", sc, data, PrepareConfig(n_train=1000, n_test=10, seed=0, allow_shortfall=True))
    # 56 train + 48 test rows of IA L3-4 in the sample; 10 go to test.
    assert out.stats["pool_size"] == 56 + 48 - 10
    assert len(out.train) == 94 and out.stats["shortfall"] == 1000 - 94
    assert out.stats["warnings"] == ["prepare.n_train: 94 of 1000 rows available"]
    assert not {r["id"] for r in out.train} & {r["id"] for r in out.test}


@pytest.mark.parametrize("over,msg", [
    ({"test_split": "validation"}, "unknown split 'validation'; valid: ['extra', 'test', 'train']"),
    ({"filters": {"level": ["Level 9"]}}, "unknown level 'Level 9'; valid: ['Level 1'"),
    ({"filters": {"type": ["Algebr"]}}, "unknown type 'Algebr'; valid: ['Algebra'"),
    ({"dataset": "aime"}, "unknown dataset 'aime'; valid: ['gsm8k', 'math']"),
])
def test_bad_scenario_settings_name_the_valid_values(root, over, msg):
    data, scenarios = _data(root)
    with pytest.raises(InputError, match=msg.replace("[", r"\[").replace("(", r"\(")):
        prepare("math_algebra_l12", _sc(scenarios, "math_algebra_l12", **over), data,
                PrepareConfig(n_train=5, n_test=5))


def test_unknown_source_and_empty_selection(root, tmp_path):
    with pytest.raises(InputError, match=r"data.source: 'ftp:x' is not of the form hub\|sample\|dir:\.\+"):
        _data(root, source="ftp:x")
    _, scenarios = _data(root)
    (tmp_path / "math").mkdir()
    row = {"problem": "p", "solution": "\\boxed{1}", "type": "Algebra", "level": "Level 5"}
    write_jsonl(tmp_path / "math/test.jsonl", [row])
    write_jsonl(tmp_path / "math/train.jsonl", [])
    data, _ = _data(root, source=f"dir:{tmp_path}")
    # the id field the settings name must be in the data, not silently replaced by row numbers
    with pytest.raises(InputError, match=r"math/test.jsonl:1: no field 'unique_id' \(data.datasets.math.id_field"):
        prepare("x", _sc(scenarios, "math_algebra_l12", filters={"type": ["Algebra"]}), data,
                PrepareConfig(n_train=5, n_test=5))
    write_jsonl(tmp_path / "math/test.jsonl", [{**row, "unique_id": "test/a/1.json"}])
    with pytest.raises(InputError, match="empty selection"):
        prepare("x", _sc(scenarios, "math_algebra_l12", filters={"type": ["Algebra"]}), data,
                PrepareConfig(n_train=5, n_test=5))


def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"question": "a", "answer": "b"}\n{"question": oops}\n')
    with pytest.raises(InputError, match=r"x.jsonl:2: malformed JSON"):
        read_jsonl(p, ["question"])
    p.write_text('{"question": "a"}\n')
    with pytest.raises(InputError, match=r"x.jsonl:1: missing field 'answer'"):
        read_jsonl(p, ["question", "answer"])


def test_real_gsm8k_from_shared_dir(root, shared_data):
    data, scenarios = _data(root, source=f"dir:{shared_data}")
    out = prepare("gsm8k", _sc(scenarios, "gsm8k"), data, PrepareConfig(n_train=1000, n_test=200, seed=0))
    assert all(r["id"].startswith("gsm8k/test/") for r in out.test)
    assert all(r["id"].startswith("gsm8k/train/") for r in out.train)
    assert len(out.train) == 1000 and out.stats["pool_size"] >= 7400
    assert not {normalize_question(r["question"]) for r in out.train} & {
        normalize_question(r["question"]) for r in out.test}


def test_real_math_intalg_from_shared_dir(root, shared_data):
    data, scenarios = _data(root, source=f"dir:{shared_data}")
    with pytest.raises(InputError, match="prepare.n_train is 1000 but only 784 rows are available"):
        prepare("math_intalg_l34", _sc(scenarios, "math_intalg_l34"), data,
                PrepareConfig(n_train=1000, n_test=300, seed=0))
    out = prepare("math_intalg_l34", _sc(scenarios, "math_intalg_l34"), data,
                  PrepareConfig(n_train=1000, n_test=300, seed=0, allow_shortfall=True))
    # 641 train + 443 test rows of IA L3-4; 300 drawn for test (the paper profile's sizes).
    assert out.stats["pool_size"] == 641 + 443 - 300 == len(out.train)
    assert out.stats["shortfall"] == 1000 - 784 and out.stats["warnings"] == ["prepare.n_train: 784 of 1000 rows available"]
    assert all(r["id"].startswith("math/test/intermediate_algebra/") for r in out.test)


@pytest.mark.parametrize("line,msg", [
    ('{"question": null, "answer": "#### 2"}', "field 'question' must be a non-empty string, got None"),
    ('{"question": 12345, "answer": "#### 2"}', "field 'question' must be a non-empty string, got 12345"),
    ('{"question": "  ", "answer": "#### 2"}', "field 'question' must be a non-empty string, got '  '"),
    ('{"question": "What is 1+1?", "answer": ""}', "field 'answer' must be a non-empty string"),
])
def test_bad_rows_of_a_dir_source_name_file_line_and_field(root, tmp_path, line, msg):
    good = json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"})
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k/test.jsonl").write_text(good + "\n" + line + "\n")
    (tmp_path / "gsm8k/train.jsonl").write_text(good + "\n")
    data, scenarios = _data(root, source=f"dir:{tmp_path}")
    with pytest.raises(InputError, match=rf"gsm8k/test.jsonl:2: {msg}".replace("(", r"\(").replace(")", r"\)")):
        prepare("gsm8k", _sc(scenarios, "gsm8k"), data, PrepareConfig(n_train=1, n_test=2))


def test_non_utf8_file_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"question": "a"}\n{"question": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"x.jsonl:2: not UTF-8 \(byte 0xe9 at column 18\)"):
        read_jsonl(p, ["question"])
