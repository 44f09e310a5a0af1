"""How a training stage was launched, and what that allows: checks made before any model
is loaded, and where the work after training runs.

- Plain `python` with several GPUs visible is refused: the Trainer would silently wrap the
  model in nn.DataParallel, which splits the loss's index tensor across GPUs.
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
"""

from __future__ import annotations

import os
from typing import Any

from specdraft.io import InputError

SHARDED = ("FSDP", "DEEPSPEED")  # accelerate DistributedType values that shard the model


def check_launcher() -> None:
    """Refuse several visible GPUs under a plain `python` launcher (see the module docstring).
    A process started by accelerate or torchrun has WORLD_SIZE set."""
    import torch

    n = torch.cuda.device_count()
    if n > 1 and "WORLD_SIZE" not in os.environ:
        raise InputError(f"{n} GPUs are visible but the stage was started by plain python: the Trainer would wrap the "
                         "model in torch.nn.DataParallel, which splits the loss's index tensor across GPUs. Set "
                         "train_target.launcher / train_draft.launcher to 'accelerate launch --config_file "
                         "conf/accelerate/ddp.yaml' (or fsdp.yaml, zero3.yaml), or CUDA_VISIBLE_DEVICES to one GPU")


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
                         f"held this way ({how}). The draft is small: set train_draft.launcher to 'accelerate launch "
                         "--config_file conf/accelerate/ddp.yaml' (plain data parallel, the teacher in bf16 on each "
                         "GPU), or leave sd_kd out of eval.variants")


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
