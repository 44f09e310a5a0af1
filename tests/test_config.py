"""Typed config and profile composition (params.yaml == composed local profile)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from specdraft.config import build, load_params
from specdraft.io import InputError
from specdraft.params import compose


def test_committed_params_equal_composed_local_profile(root):
    assert load_params(root / "params.yaml") == compose([])


def test_paper_profile_switches_scale(root):
    paper = compose(["profile=paper"])
    local = load_params(root / "params.yaml")
    assert paper["meta"]["profile"] == "paper" and paper["data"]["source"] == "hub"
    assert paper["prepare"]["n_train"] == 1000
    # scenarios are profile-independent
    assert paper["scenarios"] == local["scenarios"]
    assert compose(["prepare.n_test=7"])["prepare"]["n_test"] == 7


@dataclasses.dataclass(frozen=True)
class _Cfg:
    n: int
    name: str = "x"


def test_build_rejects_unknown_and_wrong_types():
    assert build(_Cfg, {"n": 3}, "sec") == _Cfg(3)
    with pytest.raises(InputError, match=r"sec: unknown key\(s\) \['m'\]; valid: \['n', 'name'\]"):
        build(_Cfg, {"n": 1, "m": 2}, "sec")
    with pytest.raises(InputError, match=r"sec.n: expected int, got 'a'"):
        build(_Cfg, {"n": "a"}, "sec")
    with pytest.raises(InputError, match="sec: missing key 'n'"):
        build(_Cfg, {}, "sec")


def test_dvc_config_is_offline_and_hydra_enabled(root):
    text = (root / ".dvc/config").read_text()
    assert "analytics = false" in text and "check_update = false" in text and "enabled = true" in text


def test_each_stage_declares_params_it_reads(root):
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    prep = stages["prepare"]["do"]
    assert "prepare" in prep["params"] and "scenarios.${key}" in prep["params"]


def test_prompts_keep_the_separator(root):
    """An unquoted ' ####' in YAML starts a comment; every prompt must still ask for '####'."""
    p = load_params(root / "params.yaml")["prompts"]
    for style in ("cot", "cod"):
        assert p["system"][style].endswith("after a separator ####."), p["system"][style]
    assert "####" in p["summarize"]


def test_evaluate_stage_declares_every_variant(root):
    """One evaluate@ stage writes every variant of eval.variants: dvc.yaml must list them all."""
    import yaml

    params = yaml.safe_load((root / "params.yaml").read_text())
    stage = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["evaluate"]
    configs = ["${item.style}"] + [f"${{item.style}}_{v}" for v in params["eval"]["variants"]]
    assert sorted(stage["outs"]) == sorted(f"data/eval/${{item.scenario}}/{c}.jsonl" for c in configs)
    assert sorted(next(iter(m)) for m in stage["metrics"]) == \
        sorted(f"metrics/eval/${{item.scenario}}/{c}.json" for c in configs)
