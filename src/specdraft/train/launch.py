"""How a training stage was launched, and what that allows: checks made before any model
is loaded, the GPUs a stage uses, and where the work after training runs.

- Plain `python` with several GPUs visible trains on one of them, the first visible one
  (`use_gpus`): transformers' Trainer would otherwise wrap the model in nn.DataParallel,
  which splits the loss's index tensor across GPUs. The choice goes into the metrics.
- `python -m specdraft.train.launch --config_file conf/accelerate/<ddp|fsdp|zero3>.yaml -m
  <stage module> ...` starts one process per visible GPU (`main`): accelerate itself
  cannot take the count from the GPUs when a config file is given (see `launch_command`).
- An accelerate config whose FSDP or DeepSpeed accelerate did not turn on is refused (on
  CPU processes accelerate 1.15 silently trains plain data parallel instead).
- The KD draft's frozen teacher under ZeRO-3 or FSDP is refused: under ZeRO-3 every
  `from_pretrained` in the process runs inside `deepspeed.zero.Init` (accelerate keeps an
  HfDeepSpeedConfig alive), so the teacher would load as empty partitioned parameters
  that no DeepSpeed engine gathers; under FSDP it would load whole on every rank (the 14B
  target in bf16 is 28 GB per GPU). The draft is 0.5B: plain data parallel (ddp.yaml)
  holds it and the teacher on each GPU.
- The work after training (merging an adapter, the draft's held-out acceptance) loads
  models again. Under ZeRO-3 that load would again run inside zero.Init, whose
  collectives need every rank while only the main process is left, so it hangs or fails;
  under FSDP and ZeRO-3 it therefore runs in a fresh process (specdraft.train.finish)
  started without the distributed environment. Elsewhere it runs in the training process.

    python -m specdraft.train.launch --config_file conf/accelerate/ddp.yaml -m specdraft.stages.train_target ...
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from specdraft.io import InputError

log = logging.getLogger("launch")

SHARDED = ("FSDP", "DEEPSPEED")  # accelerate DistributedType values that shard the model


def visible_gpus() -> list[str]:
    """The CUDA devices this process can use, named as CUDA_VISIBLE_DEVICES names them
    (indices or UUIDs; "0".."n-1" when it is unset). torch.cuda.device_count() already
    honours CUDA_VISIBLE_DEVICES; the variable only supplies the names, cut where CUDA
    stops reading it (an empty or negative entry) and to the devices that exist."""
    import torch

    n = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(n)]
    names: list[str] = []
    for x in env.split(","):
        x = x.strip()
        if not x or x.startswith("-"):
            break
        names.append(x)
    return names[:n]


def use_gpus() -> dict[str, Any]:
    """Decide, before torch sets up CUDA, which GPUs this training process uses; returns
    the record for the stage's metrics: {"gpus_visible", "gpus_used", "gpu", "why"}.

    Plain `python` (no WORLD_SIZE) with several GPUs visible: CUDA_VISIBLE_DEVICES is cut to
    the first visible GPU, in this process, before the trainer is built. Why that and not
    torch.cuda.set_device: transformers 5.24's TrainingArguments._setup_devices
    (training_args.py) sets, for a process that is not distributed,
    `device = cuda:0` and `self._n_gpu = torch.cuda.device_count()`, and Trainer wraps the
    model in `nn.DataParallel(model)` whenever `args.n_gpu > 1` (trainer.py,
    `_wrap_model`); set_device changes neither. torch.cuda.device_count() reads
    CUDA_VISIBLE_DEVICES again on every call until torch initialises CUDA (NVML count,
    torch/cuda/__init__.py: "Do not cache the device count prior to CUDA
    initialization"), so after the cut n_gpu is 1 and cuda:0 is the chosen GPU. Where torch
    has already counted CUDA devices for good (initialised, or no NVML after the driver
    started), the cut cannot take and the stage is refused, as before.

    Under a multi-process launcher (WORLD_SIZE set: accelerate, torchrun) each process
    takes the GPU of its LOCAL_RANK (accelerate's PartialState); more processes on this
    machine than visible GPUs are refused here, before any model is loaded."""
    gpus = visible_gpus()
    n = len(gpus)
    if "WORLD_SIZE" in os.environ:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" or n == 0:
            return {"gpus_visible": n, "gpus_used": 0, "gpu": None,
                    "why": f"{local} CPU processes ({'use_cpu in the accelerate config' if n else 'no CUDA GPU'})"}
        if local > n:
            raise InputError(f"{local} training processes on this machine but {n} GPU(s) visible "
                             f"({','.join(gpus)}): start it with `python -m specdraft.train.launch --config_file "
                             "conf/accelerate/<ddp|fsdp|zero3>.yaml`, which starts one process per visible GPU")
        return {"gpus_visible": n, "gpus_used": local, "gpu": ",".join(gpus[:local]),
                "why": f"{local} processes, one GPU each (LOCAL_RANK)"}
    if n == 0:
        return {"gpus_visible": 0, "gpus_used": 0, "gpu": None, "why": "no CUDA GPU visible: the CPU"}
    if n == 1:
        return {"gpus_visible": 1, "gpus_used": 1, "gpu": gpus[0], "why": "one GPU visible"}
    import torch

    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[0]
    if torch.cuda.device_count() != 1:  # torch counted the GPUs for good before this process got here
        if before is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before
        raise InputError(f"{n} GPUs are visible to plain python and torch had already set up CUDA with all of them, "
                         "so the stage cannot keep to one: the Trainer would wrap the model in torch.nn.DataParallel, "
                         "which splits the loss's index tensor across GPUs. Set CUDA_VISIBLE_DEVICES to one GPU, or "
                         "launcher to 'python -m specdraft.train.launch --config_file conf/accelerate/ddp.yaml' "
                         "(or fsdp.yaml, zero3.yaml) for every GPU")
    why = (f"plain python with {n} GPUs visible ({','.join(gpus)}): trains on the first (CUDA_VISIBLE_DEVICES="
           f"{gpus[0]}), since the Trainer would wrap the model in nn.DataParallel; every GPU: launcher 'python -m "
           "specdraft.train.launch --config_file conf/accelerate/ddp.yaml'")
    log.warning(why)
    return {"gpus_visible": n, "gpus_used": 1, "gpu": gpus[0], "why": why}


NUM_PROCESSES = ("--num_processes", "--num-processes")
CONFIG_FILE = ("--config_file", "--config-file")


def _option(args: list[str], names: tuple[str, ...]) -> str | None:
    """The value of an `accelerate launch` option among `args` (`--x v` or `--x=v`)."""
    for i, a in enumerate(args):
        if a in names and i + 1 < len(args):
            return args[i + 1]
        name, eq, value = a.partition("=")
        if eq and name in names:
            return value
    return None


def launch_command(argv: list[str]) -> list[str]:
    """The `accelerate launch` command for `argv` (its options, then `-m module args...`),
    with `--num_processes <visible GPUs>` added where neither argv nor the config file
    sets a count.

    Why a count on the command line: accelerate 1.15 cannot take it from the GPUs when a
    config file is given. Its ClusterConfig defaults `num_processes: int = -1`
    (commands/config/config_args.py) and `_validate_launch_command` stops with "You need
    to manually pass in `--num_processes` using this config yaml" when it is -1
    (commands/launch.py); it counts `torch.cuda.device_count()` only without any config
    file. A `--num_processes` given on the command line wins over the config's (the
    config's values fill only the arguments left None), so this is the one value added."""
    cut = argv.index("-m") if "-m" in argv else len(argv)
    own = argv[:cut]  # accelerate's options; what follows is the stage and its arguments
    if _option(own, NUM_PROCESSES) is not None:
        return [sys.executable, "-m", "accelerate.commands.launch", *argv]
    config = _option(own, CONFIG_FILE)
    if config is None:
        raise InputError("specdraft.train.launch: name the accelerate config (--config_file "
                         "conf/accelerate/<ddp|fsdp|zero3>.yaml)")
    import yaml

    settings = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    if "num_processes" in settings:  # a fixed count (cpu_ddp.yaml: 2 CPU processes)
        return [sys.executable, "-m", "accelerate.commands.launch", *argv]
    gpus = visible_gpus()
    if not gpus:
        raise InputError(f"{config} starts one process per GPU and no CUDA GPU is visible: on a CPU set launcher to "
                         "'python' or to 'python -m specdraft.train.launch --config_file conf/accelerate/cpu_ddp.yaml'")
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(len(gpus)), *argv]


def main(argv: list[str] | None = None) -> None:
    """Replace this process by `accelerate launch` (the same process id, so signals reach
    it as before) with one process per visible GPU."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        cmd = launch_command(sys.argv[1:] if argv is None else argv)
    except (InputError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    log.info("%s", " ".join(cmd[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


def check_distributed(args: Any) -> None:
    """Refuse an accelerate config whose FSDP or DeepSpeed accelerate did not turn on.
    Measured with accelerate 1.15: with CPU ranks (`use_cpu: true`, gloo) it runs plain data
    parallel and ignores both (state.py enables FSDP only from GPU-type process groups and
    DeepSpeed only off the CPU), so a run asked to shard would silently not shard."""
    from accelerate.utils import DistributedType

    asked = [name for name, env in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
             if os.environ.get(env, "").lower() == "true"]
    got = args.distributed_state.distributed_type
    if asked and got not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise InputError(f"the accelerate config asks for {asked[0]}, but accelerate runs {got.value}: it uses FSDP and "
                         "DeepSpeed only on GPUs and otherwise trains plain data parallel without sharding; on CPU "
                         "processes use conf/accelerate/cpu_ddp.yaml")


def _name(distributed_type: Any) -> str:
    return getattr(distributed_type, "name", str(distributed_type)).upper()


def check_kd_teacher(distributed_type: Any) -> None:
    """Refuse the KD draft's teacher under a sharding launcher (see the module docstring),
    before anything is loaded."""
    name = _name(distributed_type)
    if name in SHARDED:
        how = "DeepSpeed ZeRO-3 would load it as empty partitioned parameters that nothing gathers" \
            if name == "DEEPSPEED" else "FSDP would load it unsharded on every rank beside the sharded draft"
        raise InputError(f"train_draft_kd under {name}: the frozen target that the draft is distilled from cannot be "
                         f"held this way ({how}). The draft is small: set train_draft.launcher to 'python -m "
                         "specdraft.train.launch --config_file conf/accelerate/ddp.yaml' (plain data parallel, the "
                         "teacher in bf16 on each GPU), or leave sd_kd out of eval.variants")


def post_training_in_fresh_process(distributed_type: Any) -> bool:
    """Whether merging and the held-out acceptance run in a fresh process: under a sharding
    launcher (FSDP, DeepSpeed), whose context outlives training in this process."""
    return _name(distributed_type) in SHARDED


# what a fresh process must not inherit: the process group and accelerate's launch settings
DISTRIBUTED_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                   "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """`env` without the distributed launch variables (and accelerate's ACCELERATE_*)."""
    return {k: v for k, v in env.items()
            if k not in DISTRIBUTED_ENV and not k.startswith(("ACCELERATE_", "TORCHELASTIC_", "FSDP_"))}


if __name__ == "__main__":
    main()
