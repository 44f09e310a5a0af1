"""Several GPUs, faked on this CPU machine: what each launcher does on a 4-GPU topology.

The topology is torch's answer, faked: torch.cuda.device_count honours
CUDA_VISIBLE_DEVICES on every call as torch's NVML count does before CUDA is initialised
(or gives a fixed count, as once torch has set CUDA up), and CUDA_VISIBLE_DEVICES is set
per test. Our code and accelerate's launch code run as they are.
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
import subprocess
import sys

import pytest
import torch
import yaml

from specdraft.io import InputError
from specdraft.train import launch
from specdraft.train.launch import launch_command, use_gpus, visible_gpus

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
STAGE = ["-m", "specdraft.stages.train_target", "--scenario", "gsm8k", "--style", "cot"]
DISTRIBUTED = ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "ACCELERATE_USE_CPU")


def nvml_count(total: int) -> int:
    """torch's count on a machine with `total` GPUs: the CUDA_VISIBLE_DEVICES entries up to
    the first that names no device (as CUDA reads it), else all."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return total
    n = 0
    for x in env.split(","):
        if not x.strip().isdigit() or int(x) >= total:
            break
        n += 1
    return n


@pytest.fixture
def gpus(monkeypatch):
    """gpus(total, visible=None, counted=False): a machine with `total` GPUs and
    CUDA_VISIBLE_DEVICES=`visible` (None: unset); counted=True: torch has already counted
    them for good (CUDA initialised), so CUDA_VISIBLE_DEVICES no longer changes its count.
    No launcher's variables are set; every variable is restored after the test."""

    def topology(total: int, visible: str | None = None, counted: bool = False) -> None:
        for k in ("CUDA_VISIBLE_DEVICES", *DISTRIBUTED):
            monkeypatch.setenv(k, "x")  # recorded first, so that undo restores the original
            monkeypatch.delenv(k)
        if visible is not None:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        monkeypatch.setattr(torch.cuda, "device_count", (lambda: total) if counted else (lambda: nvml_count(total)))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: torch.cuda.device_count() > 0)

    return topology


# ---------------------------------------------------------------- plain python: one GPU


@pytest.mark.parametrize(("visible", "first"), [(None, "0"), ("0,1,2,3", "0"), ("2,3", "2"), ("3,1,0", "3")])
def test_plain_python_on_several_gpus_trains_on_the_first_visible_one(gpus, visible, first):
    gpus(4, visible)
    shown = 4 if visible is None else len(visible.split(","))
    rec = use_gpus()
    assert (rec["gpus_visible"], rec["gpus_used"], rec["gpu"]) == (shown, 1, first)
    assert rec["why"].startswith(f"plain python with {shown} GPUs visible")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == first
    # what transformers' Trainer reads as n_gpu (> 1: nn.DataParallel) is now 1
    assert torch.cuda.device_count() == 1
    assert visible_gpus() == [first]
    # a second call (another stage in the same process) keeps the choice
    assert use_gpus()["gpu"] == first


def test_the_trainer_takes_n_gpu_from_torchs_device_count():
    """The reason for cutting CUDA_VISIBLE_DEVICES (use_gpus's docstring), as the pinned
    transformers has it: n_gpu is torch.cuda.device_count() and n_gpu > 1 wraps in
    nn.DataParallel."""
    from transformers import Trainer, TrainingArguments

    assert "self._n_gpu = torch.cuda.device_count()" in inspect.getsource(TrainingArguments._setup_devices.func)
    wrap = inspect.getsource(Trainer._wrap_model)
    assert "self.args.n_gpu > 1" in wrap and "nn.DataParallel(model)" in wrap


def test_one_or_no_gpu_is_left_as_it_is(gpus):
    gpus(4, "1")
    assert use_gpus() == {"gpus_visible": 1, "gpus_used": 1, "gpu": "1", "why": "one GPU visible"}
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    gpus(0)
    assert use_gpus() == {"gpus_visible": 0, "gpus_used": 0, "gpu": None, "why": "no CUDA GPU visible: the CPU"}
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    gpus(2, "0,5,1")  # CUDA stops at the first id that names no device
    assert visible_gpus() == ["0"]


def test_gpus_torch_already_counted_are_refused_and_the_variable_restored(gpus):
    gpus(4, counted=True)
    with pytest.raises(InputError, match="4 GPUs are visible to plain python and torch had already set up CUDA"):
        use_gpus()
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    gpus(4, "2,3", counted=True)
    with pytest.raises(InputError, match="CUDA_VISIBLE_DEVICES to one GPU"):
        use_gpus()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_under_a_launcher_each_process_takes_its_gpu(gpus, monkeypatch):
    gpus(4)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert use_gpus() == {"gpus_visible": 4, "gpus_used": 4, "gpu": "0,1,2,3",
                          "why": "4 processes, one GPU each (LOCAL_RANK)"}
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # not cut: accelerate places each rank
    # the old fixed `num_processes: 8` on 4 GPUs: refused before any model is loaded
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    with pytest.raises(InputError, match=r"8 training processes on this machine but 4 GPU\(s\) visible \(0,1,2,3\)"):
        use_gpus()
    # cpu_ddp.yaml on a GPU machine: CPU ranks
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    assert use_gpus()["gpus_used"] == 0


def _stage(tmp_path, root, site: str, rows: int):
    """The train_target stage under plain python with torch's GPU count replaced at start-up
    (sitecustomize), on `rows` teacher rows and no model."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site/sitecustomize.py").write_text(site)
    (tmp_path / "params.yaml").write_text((root / "params.yaml").read_text())
    row = {"question": "What is 3 + 4?", "answer": "7", "response": "3 + 4 = 7\n#### 7"}
    for f in ("cot.jsonl", "cod.jsonl"):
        (tmp_path / f).write_text("".join(json.dumps({**row, "id": f"q{i}"}) + "\n" for i in range(rows)))
    cmd = [sys.executable, *STAGE, "--base", "models/base/target", "--cot", "cot.jsonl", "--cod", "cod.jsonl",
           "--out", "out", "--live", "live"]
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", *DISTRIBUTED)}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), str(root / "src")])
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_the_stage_on_4_gpus_goes_on_with_the_first(tmp_path, root):
    """The real stage process on a faked 4-GPU machine: no refusal for the GPUs; it logs the
    choice and stops at the next check (one training row), before any model is loaded."""
    site = f"import os, torch\n{inspect.getsource(nvml_count)}\ntorch.cuda.device_count = lambda: nvml_count(4)\n"
    p = _stage(tmp_path, root, site, rows=1)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "plain python with 4 GPUs visible (0,1,2,3): trains on the first (CUDA_VISIBLE_DEVICES=0)" in p.stderr
    assert p.stderr.strip().splitlines()[-1] == "error: too few training rows (1) for out"


def test_the_stage_is_refused_where_torch_already_counted_every_gpu(tmp_path, root):
    p = _stage(tmp_path, root, "import torch\ntorch.cuda.device_count = lambda: 2\n", rows=2)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "2 GPUs are visible to plain python and torch had already set up CUDA" in p.stderr
    assert "python -m specdraft.train.launch --config_file conf/accelerate/ddp.yaml" in p.stderr
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------ accelerate: one process per GPU


def _accelerate(cmd: list[str]):
    """What accelerate's own `accelerate launch` makes of `cmd` (its argument checks and
    config merge, without starting anything)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    assert cmd[:3] == LAUNCH
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(cmd[3:]))
    return args


@pytest.mark.parametrize(("visible", "n"), [("0,1,2,3", 4), ("2,3", 2), (None, 4)])
@pytest.mark.parametrize("config", ["ddp", "fsdp", "zero3"])
def test_gpu_configs_start_one_process_per_visible_gpu(gpus, root, monkeypatch, config, visible, n):
    monkeypatch.chdir(root)
    gpus(4, visible)
    argv = ["--config_file", f"conf/accelerate/{config}.yaml", *STAGE]
    cmd = launch_command(argv)
    assert cmd == [*LAUNCH, "--num_processes", str(n), *argv]
    args = _accelerate(cmd)
    assert args.num_processes == n and args.num_machines == 1 and args.mixed_precision == "bf16"
    assert (args.multi_gpu, args.use_fsdp, args.use_deepspeed) == \
        {"ddp": (True, False, False), "fsdp": (False, True, False), "zero3": (False, False, True)}[config]
    assert args.module and args.training_script == "specdraft.stages.train_target"
    assert args.training_script_args == ["--scenario", "gsm8k", "--style", "cot"]
    if config != "zero3":  # (DeepSpeed's own launcher needs deepspeed installed)
        from accelerate.utils.launch import prepare_multi_gpu_env

        prepare_multi_gpu_env(args)
        assert args.nproc_per_node == str(n)  # torchrun's processes on this machine


def test_accelerate_alone_needs_the_count_with_a_config_file(root, monkeypatch):
    """Why the count goes on the command line: accelerate takes it from the GPUs only
    without a config file; with one that has none it stops."""
    from accelerate.commands.config.config_args import ClusterConfig

    monkeypatch.chdir(root)
    assert ClusterConfig.__dataclass_fields__["num_processes"].default == -1
    for config in ("ddp", "fsdp", "zero3"):
        assert "num_processes" not in yaml.safe_load((root / f"conf/accelerate/{config}.yaml").read_text())
        with pytest.raises(ValueError, match="manually pass in `--num_processes`"):
            _accelerate([*LAUNCH, "--config_file", f"conf/accelerate/{config}.yaml", *STAGE])


def test_a_count_already_given_is_kept(gpus, root, monkeypatch):
    monkeypatch.chdir(root)
    gpus(4)
    cpu = ["--config_file", "conf/accelerate/cpu_ddp.yaml", *STAGE]  # its own num_processes: 2
    assert launch_command(cpu) == [*LAUNCH, *cpu]
    assert _accelerate(launch_command(cpu)).num_processes == 2
    given = ["--num_processes=2", "--config_file", "conf/accelerate/ddp.yaml", *STAGE]
    assert launch_command(given) == [*LAUNCH, *given]
    assert _accelerate(launch_command(given)).num_processes == 2


def test_a_gpu_config_without_a_gpu_is_refused_with_exit_2(gpus, root, monkeypatch, capsys):
    monkeypatch.chdir(root)
    gpus(0)
    with pytest.raises(SystemExit) as e:
        launch.main(["--config_file", "conf/accelerate/ddp.yaml", *STAGE])
    assert e.value.code == 2
    assert "conf/accelerate/ddp.yaml starts one process per GPU and no CUDA GPU is visible" in capsys.readouterr().err


# ------------------------------------------------------- one param sets every launcher


def test_one_param_sets_every_training_launcher(root, gpus, monkeypatch):
    from specdraft.params import compose

    value = "python -m specdraft.train.launch --config_file conf/accelerate/ddp.yaml"
    p = compose([f"launcher={value}"])
    assert p["launcher"] == p["train_target"]["launcher"] == p["train_draft"]["launcher"] == value
    local = compose([])
    assert local["launcher"] == local["train_target"]["launcher"] == local["train_draft"]["launcher"] == "python"
    one = compose(["train_target.launcher=python -X dev"])  # a section alone still overrides
    assert (one["train_target"]["launcher"], one["train_draft"]["launcher"]) == ("python -X dev", "python")
    # dvc.yaml's training commands start with the param, then `-m <stage>`: the command a
    # 4-GPU machine runs is accelerate with 4 processes on that stage
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    cmds = {name: stages[name]["cmd"] for name in ("train_target", "train_draft", "train_draft_kd")}
    assert cmds["train_target"].startswith("${train_target.launcher} -m specdraft.stages.train_target ")
    assert cmds["train_draft"].startswith("${train_draft.launcher} -m specdraft.stages.train_draft ")
    assert cmds["train_draft_kd"].startswith("${train_draft.launcher} -m specdraft.stages.train_draft ")
    monkeypatch.chdir(root)
    gpus(4)
    for stage in ("train_target", "train_draft"):
        line = shlex.split(cmds[stage].replace(f"${{{stage}.launcher}}", p[stage]["launcher"]))
        assert line[:3] == ["python", "-m", "specdraft.train.launch"]
        args = _accelerate(launch_command(line[3:]))
        assert (args.num_processes, args.training_script) == (4, f"specdraft.stages.{stage}")


# ------------------------------------------------------------ vLLM tensor parallelism


@pytest.fixture
def qwen_dirs(tmp_path):
    """Folders holding the real config.json of each paper model (the rehearsal's record of
    them), named by model."""
    from specdraft.rehearsal.standins import FAMILIES

    out = {}
    for family in FAMILIES.values():
        for s in family.values():
            d = tmp_path / s.repo_id.split("/")[1]
            d.mkdir()
            (d / "config.json").write_text(json.dumps(s.config))
            out[d.name] = d
    return out


def test_head_counts_of_the_paper_models(qwen_dirs):
    from specdraft.generate.vllm_engine import attention_heads

    assert attention_heads(qwen_dirs["Qwen2.5-14B-Instruct"]) == (40, 8)
    assert attention_heads(qwen_dirs["Qwen2.5-0.5B-Instruct"]) == (14, 2)
    assert attention_heads(qwen_dirs["Qwen3-14B"]) == (40, 8)
    assert attention_heads(qwen_dirs["Qwen3-0.6B"]) == (16, 8)


def test_a_draft_that_cannot_split_runs_on_one_gpu(qwen_dirs):
    from specdraft.generate.vllm_engine import attention_heads, draft_tensor_parallel

    q05 = attention_heads(qwen_dirs["Qwen2.5-0.5B-Instruct"])
    # the default (1) beside a 4-way target: nothing to change
    assert draft_tensor_parallel(1, 4, q05) == {"requested": 1, "used": 1, "why": None}
    # 14 heads do not split 4 ways: mapped to 1, the largest size vLLM allows that splits
    assert draft_tensor_parallel(4, 4, q05) == {"requested": 4, "used": 1,
                                                "why": "the draft's 14 attention heads do not split over 4 GPUs"}
    assert draft_tensor_parallel(2, 2, q05) == {"requested": 2, "used": 2, "why": None}
    # vLLM takes 1 or the target's size only
    assert draft_tensor_parallel(2, 4, q05) == {"requested": 2, "used": 1,
                                                "why": "vLLM runs a draft on 1 GPU or on the target's 4"}
    # Qwen3-0.6B: 16 heads, 8 KV heads split 4 ways
    assert draft_tensor_parallel(4, 4, attention_heads(qwen_dirs["Qwen3-0.6B"]))["used"] == 4
    assert draft_tensor_parallel(8, 8, (14, 2))["why"] == "the draft's 14 attention heads do not split over 8 GPUs"
    assert draft_tensor_parallel(4, 4, (12, 3))["why"] == "the draft's 3 KV heads cannot be replicated evenly over 4 GPUs"


def test_the_engine_maps_the_draft_and_refuses_a_target_that_cannot_split(qwen_dirs):
    """At the engine's construction, before vLLM is imported or a model loaded."""
    from specdraft.generate.api import GenerationConfig, VLLMSettings
    from specdraft.generate.vllm_engine import VLLMEngine
    from specdraft.rehearsal.standins import QWEN25_TEMPLATE, train_tokenizer

    target, draft = qwen_dirs["Qwen2.5-14B-Instruct"], qwen_dirs["Qwen2.5-0.5B-Instruct"]
    train_tokenizer(["What is 3 + 4? 3 + 4 = 7"] * 4, QWEN25_TEMPLATE).save_pretrained(target)
    cfg = GenerationConfig(engine="vllm", vllm=VLLMSettings(tensor_parallel_size=4, draft_tensor_parallel_size=4))
    eng = VLLMEngine(target, {"sd": draft}, cfg)
    assert eng.draft_tp == {"sd": {"requested": 4, "used": 1,
                                   "why": "the draft's 14 attention heads do not split over 4 GPUs"}}
    assert eng.llm is None
    bad = GenerationConfig(engine="vllm", vllm=VLLMSettings(tensor_parallel_size=3))
    with pytest.raises(InputError, match=r"tensor_parallel_size 3: the target .*Qwen2.5-14B-Instruct's 40 attention "
                                         r"heads do not split over 3 GPUs \(sizes that split it: \[1, 2, 4, 8\]\)"):
        VLLMEngine(target, {"sd": draft}, bad)
