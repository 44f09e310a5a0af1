"""One step of each GPU stage at the profile's real shapes, on meta tensors
(specdraft.plan.track), and vLLM's memory accounting for the decoding stages.

Each planner builds what the stage builds, from the same settings, with the stage's own
code: the target from its real config.json (specdraft.rehearsal.standins keeps the
published values of every paper model), peft's adapter from `train.settings.lora_config`,
the loss `train.trainers.completion_loss`, AdamW with its state already allocated (a
steady-state step, not the first); the EAGLE head from `generate.eagle.new_head`, its
features from `generate.eagle.target_features`, its loss `train.eagle.ttt_loss` on a
batch from `train.eagle.make_batch`. Every labelled position is a completion token and
every example is `max_length` long: the most one batch can hold.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from specdraft.plan.track import GIB, Footprint, cuda_kernels, measure

# SmolLM2-135M-Instruct's config.json (the local profile's target, shipped as GGUF)
SMOLLM2 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
           "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
           "vocab_size": 49152, "tie_word_embeddings": True, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
           "max_position_embeddings": 8192, "hidden_act": "silu", "head_dim": 64}


def architecture(spec: Any, target: dict | None = None) -> dict:
    """The real config.json fields of a model spec (params `models.target` / `models.draft`):
    hub ids from the published configs, the local GGUF's, or a self-draft's (the target's
    first N layers)."""
    from specdraft.io import InputError
    from specdraft.rehearsal.standins import FAMILIES

    if isinstance(spec, dict) or hasattr(spec, "layers"):
        layers = spec["layers"] if isinstance(spec, dict) else spec.layers
        return {**(target or {}), "num_hidden_layers": layers}
    if spec.startswith("gguf:") and "SmolLM2-135M" in spec:
        return dict(SMOLLM2)
    repo = spec.removeprefix("hf:")
    for fam in FAMILIES.values():
        for s in fam.values():
            if s.repo_id == repo:
                return dict(s.config)
    raise InputError(f"params.yaml: models: no published config known for {spec!r} (specdraft.plan.stages)")


def hf_config(arch: dict, layers: int | None = None) -> Any:
    from transformers import AutoConfig

    fields = {k: v for k, v in arch.items() if k not in ("architectures", "torch_dtype")}
    if layers is not None:
        fields["num_hidden_layers"] = layers
        if "max_window_layers" in fields:
            fields["max_window_layers"] = layers
    cfg = AutoConfig.for_model(**fields)
    cfg._attn_implementation = "sdpa"
    return cfg


def count_parameters(arch: dict) -> int:
    """The model's parameter count, from a meta build of its config."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(hf_config(arch))
    return sum(p.numel() for p in m.parameters())


def _dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def _init_adam(opt: Any) -> None:
    """AdamW's state as after its first step (both moments per trainable parameter)."""
    import torch

    for group in opt.param_groups:
        for p in group["params"]:
            opt.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                            "exp_avg_sq": torch.zeros_like(p)}


def sft_step(arch: dict, cfg: Any, layers: int, device: str = "meta") -> Footprint:
    """One training step of train_target / train_draft (`cfg`: its TrainConfig) on a model
    of `layers` decoder layers: forward, backward, optimizer step."""
    import torch
    from transformers import AutoModelForCausalLM

    from specdraft.train.settings import lora_config, weights_dtype
    from specdraft.train.trainers import completion_loss

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config(arch, layers), dtype=_dtype(weights_dtype(cfg)))
    if cfg.method == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(cfg))  # adapters in fp32, as TRL leaves them
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.method == "lora":
            model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, foreach=False)
    _init_adam(opt)
    b, t = cfg.batch_size, cfg.max_length
    ids = torch.randint(0, arch["vocab_size"], (b, t), device=device) if device != "meta" else \
        torch.zeros(b, t, dtype=torch.long, device=device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    keep = torch.arange(t - 1, device=device)

    def step() -> None:
        loss, out = completion_loss(model, inputs, keep=keep)
        del out
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return measure(step, [model, opt])


def plan_sft(arch: dict, cfg: Any) -> dict[str, Any]:
    """train_target / train_draft at full depth: the footprint with the step's FLOPs, and
    what QLoRA changes (4-bit base weights cannot be built on meta tensors: bitsandbytes'
    NF4 holds 0.5 byte per weight plus a float32 scale per 64, replacing the bf16 2 bytes
    of every quantised linear weight; activations are the bf16 compute's)."""
    with cuda_kernels():
        fp = sft_step(arch, cfg, arch["num_hidden_layers"])
    notes = []
    if cfg.load_in_4bit:
        linear = _linear_weights(arch)
        fp.peak["Parameter"] = max(0.0, fp.peak["Parameter"] - linear * (2.0 - 0.5 - 4 / 64))
        notes.append(f"QLoRA: NF4 base weights ({linear / 1e9:.1f}B linear weights at 0.56 B each)")
    if cfg.bf16 and cfg.method == "full":
        notes.append("full fine-tuning: bf16 autocast does not act on meta tensors, activations counted in fp32 "
                     "(an upper bound)")
    return {"footprint": fp, "tokens_per_step": cfg.batch_size * cfg.max_length, "notes": notes}


def _linear_weights(arch: dict) -> int:
    h, i, n = arch["hidden_size"], arch["intermediate_size"], arch["num_hidden_layers"]
    hd = arch.get("head_dim") or h // arch["num_attention_heads"]
    q, kv = arch["num_attention_heads"] * hd, arch["num_key_value_heads"] * hd
    return n * (h * q + 2 * h * kv + q * h + 3 * h * i)


def eagle_steps(arch: dict, cfg: Any, k_max: int, seq: int, layers: int, device: str = "meta"
                ) -> tuple[Footprint, Footprint]:
    """train_draft_eagle: (collecting one answer's features with the frozen target in
    bf16, one training step of the head with the target freed), on a target of `layers`
    layers. The features go to host memory as they are collected (train.eagle.collect)."""
    import torch
    from transformers import AutoModelForCausalLM

    from specdraft.generate.eagle import aux_layers, new_head, target_features
    from specdraft.train.eagle import Sequence, make_batch, ttt_loss

    aux = aux_layers(arch["num_hidden_layers"])
    aux_here = [min(a, layers - 1) for a in aux]  # same count of features at probe depth
    with torch.device(device):
        target = AutoModelForCausalLM.from_config(hf_config(arch, layers), dtype=torch.bfloat16).eval()
    for p in target.parameters():
        p.requires_grad_(False)
    ids = [0] * seq

    def collect() -> None:
        with torch.inference_mode():
            _, feats = target_features(target, ids, None, 1, aux_here)
            del feats  # moved to host memory at once in the stage

    collected = measure(collect, [target])
    vocab = list(range(min(cfg.draft_vocab, arch["vocab_size"])))
    with torch.device(device):
        head = new_head(target, vocab, layers=aux_here, init="random")
    # the target is off the GPU from here on (stages.train_draft_eagle): not tracked in the next step
    n_feat = len(aux) * arch["hidden_size"]
    seqs = [Sequence(ids, 1, torch.zeros(seq, n_feat, dtype=torch.bfloat16, device="cpu" if device != "meta"
                                         else "meta")) for _ in range(cfg.batch_size)]
    to_draft = torch.zeros(arch["vocab_size"], dtype=torch.long, device=device)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, foreach=False)
    _init_adam(opt)
    head.train()

    class Step(torch.nn.Module):
        """ttt_loss calls the head's modules once per unrolled step: MemTracker follows a
        module called repeatedly only inside a parent module's call."""

        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self) -> Any:
            batch = make_batch(seqs, cfg.ttt_steps, to_draft, head.device)
            return ttt_loss(self.head, batch, cfg.ttt_steps, cfg.step_decay)[0]

    wrapped = Step()

    def train() -> None:
        loss = wrapped()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return collected, measure(train, [wrapped, opt])


def plan_eagle(arch: dict, cfg: Any, seq: int) -> dict[str, Any]:
    with cuda_kernels():
        collect, train = eagle_steps(arch, cfg, cfg.ttt_steps, seq, arch["num_hidden_layers"])
    return {"collect": collect, "train": train, "tokens_per_step": cfg.batch_size * seq,
            "notes": ["features in host memory (bf16), the target off the GPU while the head trains; "
                      "autocast does not act on meta tensors: the head's activations counted in fp32 (upper bound)"]}


# ------------------------------------------------------------------------------ vLLM
@dataclasses.dataclass
class EnginePlan:
    """What one vLLM engine of a target (and draft) holds on each GPU, in bytes."""

    weights: float
    kv_cache: float
    activations: float
    cuda_graphs: float
    draft: float
    reserved: float  # gpu_memory_utilization x the GPU's memory

    @property
    def needed(self) -> float:
        return self.weights + self.kv_cache + self.activations + self.cuda_graphs + self.draft


def kv_bytes_per_token(arch: dict, dtype_bytes: int = 2) -> float:
    hd = arch.get("head_dim") or arch["hidden_size"] // arch["num_attention_heads"]
    return 2.0 * arch["num_hidden_layers"] * arch["num_key_value_heads"] * hd * dtype_bytes


def plan_engine(target: dict, draft: dict | None, head_params: int, v: Any, gpu_gib: float,
                tp: int, draft_tp: int) -> EnginePlan:
    """vLLM's own accounting (vllm/v1/worker/gpu_worker.py determine_available_memory):
    it reserves gpu_memory_utilization of the GPU, loads the weights, profiles one forward
    of max_num_batched_tokens (the activation peak), captures CUDA graphs, and gives the
    rest to the KV cache, which must hold at least one max_model_len sequence; this plan
    asks that it hold max_num_seqs of them (no request waits for cache). Activations: the
    profile forward's largest tensors, tokens x (gate+up of the MLP in bf16 + fp32 logits
    of the sampled rows); CUDA graphs: 1 GiB unless enforce_eager."""
    tokens = max(8192, v.max_model_len)  # vLLM's default max_num_batched_tokens for LLM() on a GPU
    weights = 2.0 * count_parameters(target) / tp
    kv = kv_bytes_per_token(target) * v.max_num_seqs * v.max_model_len / tp
    act = tokens * (2 * target["intermediate_size"] * 2 + 3 * target["hidden_size"] * 2) / tp \
        + v.max_num_seqs * target["vocab_size"] * 4
    graphs = 0.0 if v.enforce_eager else 1.0 * GIB
    extra = 0.0
    if draft is not None:
        extra = (2.0 * count_parameters(draft) + kv_bytes_per_token(draft) * v.max_num_seqs * v.max_model_len) / draft_tp
    if head_params:
        extra += 2.0 * head_params + kv_bytes_per_token({**target, "num_hidden_layers": 1}) * v.max_num_seqs \
            * v.max_model_len
    return EnginePlan(weights, kv, act, graphs, extra, v.gpu_memory_utilization * gpu_gib * GIB)


def head_parameters(arch: dict, draft_vocab: int) -> int:
    """An EAGLE-3 head's weights (fc over 3 features, one decoder layer over 2H, norm, a
    head over the draft vocabulary; embeddings are the target's)."""
    h, i = arch["hidden_size"], arch["intermediate_size"]
    hd = arch.get("head_dim") or h // arch["num_attention_heads"]
    q, kv = arch["num_attention_heads"] * hd, arch["num_key_value_heads"] * hd
    return 3 * h * h + 2 * h * (q + 2 * kv) + q * h + 3 * h * i + 4 * h + draft_vocab * h
