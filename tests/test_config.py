"""Typed config and profile composition (params.yaml == composed local profile)."""

from __future__ import annotations

import dataclasses
import re

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


@pytest.mark.parametrize("profile,target,draft", [
    ("paper", "Qwen/Qwen2.5-14B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct"),
    ("paper_qwen3", "Qwen/Qwen3-14B", "Qwen/Qwen3-0.6B"),
])
def test_paper_profiles_compose_and_pass_every_check(profile, target, draft):
    """The paper-scale profiles as a GPU user's `dvc exp run -S profile=...` composes them:
    every section passes its schema, every hub input is pinned to a commit, and the vLLM
    settings suit the models (a bf16 divergence tolerance; the draft on one GPU)."""
    import re

    from specdraft.schema import check_all

    p = compose([f"profile={profile}"])
    check_all(p)
    m = p["models"]
    assert (m["target"], m["draft"], m["dtype"]) == (f"hf:{target}", f"hf:{draft}", "bfloat16")
    sha = re.compile(r"[0-9a-f]{40}")
    pins = [m["target_revision"], m["draft_revision"], *(d["hub_revision"] for d in p["data"]["datasets"].values())]
    assert all(isinstance(x, str) and sha.fullmatch(x) for x in pins), pins
    assert p["data"]["datasets"]["math"]["id_field"] is None  # EleutherAI/hendrycks_math has no id field
    assert p["generation"]["engine"] == "vllm" and p["generation"]["num_speculative_tokens"] == 5
    assert p["generation"]["vllm"]["draft_tensor_parallel_size"] == 1 and p["eval"]["max_diverging_share"] == 1.0
    # the rehearsal's stand-ins copy the configs of exactly these revisions
    from specdraft.rehearsal.standins import FAMILIES

    fam = next(f for f in FAMILIES.values() if f["target"].repo_id == target)
    assert (fam["target"].revision, fam["draft"].revision) == (m["target_revision"], m["draft_revision"])


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
    assert sorted(next(iter(m)) for m in stage["metrics"] if not next(iter(m)).startswith("metrics/time/")) == \
        sorted(f"metrics/eval/${{item.scenario}}/{c}.json" for c in configs)


def _sections():
    """params section -> the dataclass that reads it (the schema of each section)."""
    from specdraft.config import RuntimeConfig
    from specdraft.data.prepare import PrepareConfig
    from specdraft.evaluate.run import EvalConfig
    from specdraft.generate.api import GenerationConfig
    from specdraft.generate.models import ModelsConfig
    from specdraft.prompts import PromptsConfig
    from specdraft.report.verdicts import ClaimsConfig
    from specdraft.teacher.core import TeacherConfig
    from specdraft.train.distill import DistillConfig
    from specdraft.train.eagle import EagleSettings
    from specdraft.train.settings import TrainConfig

    return {"runtime": RuntimeConfig, "prepare": PrepareConfig, "eval": EvalConfig, "generation": GenerationConfig,
            "models": ModelsConfig, "prompts": PromptsConfig, "teacher": TeacherConfig, "distill": DistillConfig,
            "train_target": TrainConfig, "train_draft": TrainConfig, "claims": ClaimsConfig,
            "train_draft_eagle": EagleSettings}


def _defaults(cls, where):
    import dataclasses

    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            yield f"{where}.{f.name}", f.default
        elif f.default_factory is not dataclasses.MISSING:
            v = f.default_factory()
            if dataclasses.is_dataclass(v):
                yield from _defaults(type(v), f"{where}.{f.name}")


def test_dataclass_defaults_agree_with_conf(root):
    """conf/ is the one source of settings: a default in code that a section of
    conf/config.yaml sets differently would be a second, silent source."""
    from specdraft.config import get

    base = yaml.safe_load((root / "conf/config.yaml").read_text())
    differ = []
    for section, cls in _sections().items():
        for key, default in _defaults(cls, section):
            try:
                value = get(base, key)
            except InputError:
                continue  # not set in conf/: the default is the only source
            if isinstance(value, str) and value.startswith("${"):
                continue  # an interpolation (train_*.seed: ${seed}): resolved when params are composed
            if value != default and not (isinstance(default, tuple) and list(default) == value):
                differ.append(f"{key}: code {default!r}, conf/config.yaml {value!r}")
    assert differ == []


def test_every_committed_section_builds(root):
    """Every section of the committed params.yaml passes its schema."""
    from specdraft.config import section

    params = load_params(root / "params.yaml")
    for key, cls in _sections().items():
        section(cls, key, params)


BAD_SETTINGS = [
    ("teacher.max_resubmits", -1, "teacher.max_resubmits: must be >= 0, got -1"),
    ("teacher.poll.initial_s", 0, "teacher.poll.initial_s: must be > 0, got 0"),
    ("teacher.min_accepted_share", 1.5, "teacher.min_accepted_share: must be >= 0 and <= 1, got 1.5"),
    ("generation.max_new_tokens", 0, "generation.max_new_tokens: must be >= 1, got 0"),
    ("generation.max_new_tokens", -5, "generation.max_new_tokens: must be >= 1, got -5"),
    ("generation.batch_size", 0, "generation.batch_size: must be >= 1, got 0"),
    ("models.draft", {"layers": "two"}, "models.draft.layers: expected int, got 'two'"),
    ("models.draft", {"layers": 0}, "models.draft.layers: must be >= 1, got 0"),
    ("models.draft", 7, "models.draft: expected str or a mapping, got 7"),
    ("models.target", "Qwen/Qwen2.5-14B", "models.target: 'Qwen/Qwen2.5-14B' is not of the form (hf|dir|gguf):.+"),
    ("data.source", 123, "data.source: expected str, got 123"),
    ("data.source", "ftp:x", "data.source: 'ftp:x' is not of the form hub|sample|dir:.+"),
    ("data.datasets.math.answer_format", "latex", "data.datasets.math.answer_format: 'latex' unknown"),
    ("prompts.system", {"cot": "x"}, "prompts.system: missing 'cod'; needs ['cot', 'cod']"),
    ("teacher.model", "gemini-9", "teacher.model: 'gemini-9' has no entry in teacher.prices_per_mtok"),
    ("teacher.prices_per_mtok", {"gemini-2.5-flash": {"input": 0.3, "output": -2.5}},
     "teacher.prices_per_mtok.gemini-2.5-flash.output: must be >= 0, got -2.5"),
    ("eval.variants", {"sd": {"draft": "other"}}, "eval.variants.sd.draft: 'other' unknown; valid: ['trained', 'kd', 'eagle', 'base']"),
    ("train_target.learning_rate", 0, "train_target.learning_rate: must be > 0, got 0"),
    ("train_draft.method", "qlora", "train_draft.method: 'qlora' unknown; valid: ['lora', 'full']"),
    ("eval.timed_prompts", -1, "eval.timed_prompts: must be >= 0, got -1"),
    ("prepare.n_test", 0, "prepare.n_test: must be >= 1, got 0"),
    ("runtime.threads", 0, "runtime.threads: must be >= 1, got 0"),
]


def _with(params, key, value):
    import copy

    p = copy.deepcopy(params)
    *head, last = key.split(".")
    cur = p
    for k in head:
        cur = cur[k]
    cur[last] = value
    return p


@pytest.mark.parametrize("key,value,msg", BAD_SETTINGS)
def test_every_bad_setting_is_refused_with_its_key(root, key, value, msg):
    from specdraft.schema import check_all

    params = load_params(root / "params.yaml")
    check_all(params)  # the committed settings pass
    with pytest.raises(InputError, match="params.yaml: " + re.escape(msg)):
        check_all(_with(params, key, value))


@pytest.mark.parametrize("key,value,msg", [BAD_SETTINGS[3], BAD_SETTINGS[6], BAD_SETTINGS[0]])
def test_a_stage_refuses_a_bad_setting_at_once_and_writes_nothing(tmp_path, root, key, value, msg):
    """The real stage process: exit 2 within seconds (before any model load), the key in
    the message, no output. train_target checks every section, so a bad generation
    setting stops it before training rather than after."""
    import os
    import subprocess
    import sys
    import time

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_with(load_params(root / "params.yaml"), key, value)))
    cmd = [sys.executable, "-m", "specdraft.stages.train_target", "--scenario", "gsm8k", "--style", "cot", "--base",
           "models/base/target", "--cot", "cot.jsonl", "--cod", "cod.jsonl", "--out", "out", "--live", "live"]
    t = time.monotonic()
    p = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root / "src")}, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and time.monotonic() - t < 10, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: params.yaml: " + msg.split(",")[0]), p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["params.yaml"]


# Checks outside the declarations that are not checks of a params field's range or choice:
# each names what it checks instead. Anything else found is a second settings check.
NOT_SETTINGS_CHECKS = {
    ("data/prepare.py", "_apply_filters"): "filter values against the values present in the data",
    ("data/prepare.py", "prepare"): "a reference across sections (scenarios.*.dataset into data.datasets)",
    ("data/sources.py", "load_split"): "a split against the files present",
    ("data/sources.py", "_load_hub"): "the hub's rows",
    ("generate/models.py", "self_draft"): "the draft's layer count against the loaded target's depth",
    ("io.py", "read_jsonl"): "data rows",
    ("schema.py", "check_all"): "a reference across sections (train_draft_kd.scenarios into scenarios)",
    ("prompts.py", "check_style"): "a function argument (the stages' --style, never a params field)",
    ("stages/prepare.py", "main"): "the --scenario argument",
}


def test_settings_are_checked_in_one_place_only(root):
    """Every range, type and choice of a params field is declared beside the field
    (specdraft.config.setting) and checked once, where params become settings (build).
    Any other raise with a range or choice message, or any __post_init__ that raises, is a
    second check that can drift from the declaration."""
    import ast

    class Raises(ast.NodeVisitor):
        """(function, message) of each raise with a range or choice message, or in __post_init__."""

        def __init__(self) -> None:
            self.stack: list[str] = []
            self.hits: dict[str, str] = {}

        def generic_visit(self, node):  # noqa: N802
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.stack.append(node.name)
                super().generic_visit(node)
                self.stack.pop()
                return
            if isinstance(node, ast.Raise) and node.exc is not None:
                text = ast.unparse(node.exc)
                if re.search(r"unknown|must be|valid:|>= |<= ", text) or self.stack[-1:] == ["__post_init__"]:
                    self.hits[self.stack[-1] if self.stack else "<module>"] = text[:100]
            super().generic_visit(node)

    found = {}
    src = root / "src/specdraft"
    for f in sorted(src.rglob("*.py")):
        if f.name != "config.py":
            v = Raises()
            v.visit(ast.parse(f.read_text()))
            found.update({(str(f.relative_to(src)), fn): msg for fn, msg in v.hits.items()})
    assert set(found) == set(NOT_SETTINGS_CHECKS), {k: v for k, v in found.items() if k not in NOT_SETTINGS_CHECKS}

