"""An EAGLE-3 draft head: a draft that sees the target's own features.

Why: a separate small draft (the 2-layer self-draft) never sees the deep layers where the
target forms its next token; its per-token acceptance stalls near 0.72, and digits are what
it misses. EAGLE-3 (Li et al. 2025) drafts from the target's hidden states of the last
verify instead: one decoder layer over

    [RMSNorm(embedding of token t+1) ; RMSNorm(fc(low_t ; mid_t ; high_t))]

where low/mid/high are the target's hidden states at three layers (vLLM's default layer
ids 2, N/2 and N-3: the inputs of those decoder layers), and a head over a reduced draft
vocabulary whose ids map to the target's with `d2t` (target id = draft id + d2t[draft id]).
Its output at position t proposes token t+2; each further draft step feeds the layer's own
pre-norm output back in place of the target's features (the "training-time test" that
train_draft_eagle trains for).

The weights and config.json follow the `speculators` eagle3 layout, which vLLM's `eagle3`
method loads (vllm/model_executor/models/llama_eagle3.py, names `fc`, `layers.0.*`, `norm`,
`lm_head`, `d2t`, `t2d`; the embeddings are the target's, shared as vLLM shares them when
the checkpoint has none). The module here is the minimum beside speculators' own
Eagle3Speculator: speculators 0.9 needs transformers <= 5.19, the main environment runs
5.24 (tests load the saved head with vLLM's config and weight mapping in .venv-vllm).

The decoding side (`EagleDraft`) keeps the head's KV cache of "step-0" entries (positions
whose target features are known) and crops the entries of its own drafted steps after
every round, so the loop in specdraft.generate.greedy stays exact: proposals are only ever
checked by the target.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from specdraft.io import InputError, atomic_dir

SPECULATORS_TYPE = "eagle3"


def aux_layers(n_layers: int) -> list[int]:
    """vLLM's default EAGLE-3 feature layers for a target of `n_layers` decoder layers.
    Below 7 layers (the rehearsal's 4-layer stand-ins) the default repeats a layer, whose
    state vLLM collects once, so its fc would get two features instead of three: the last
    three layers' inputs then, distinct and ascending as vLLM returns them."""
    ids = [2, n_layers // 2, n_layers - 3]
    return ids if len(set(ids)) == 3 and ids == sorted(ids) else list(range(max(n_layers - 3, 0), n_layers))


def target_features(model: Any, ids: list[int], cache: Any, keep: int, layers: list[int]) -> tuple[Any, Any]:
    """(logits of the last `keep` positions, features of every fed position: the inputs of
    decoder layers `layers`, concatenated) after feeding `ids` to the target."""
    import torch

    x = torch.tensor([ids], dtype=torch.long, device=model.device)
    out = model(input_ids=x, cache=cache, use_cache=True, logits_to_keep=keep,
                output_hidden_states=True)
    return out.logits[0], torch.cat([out.hidden_states[i][0] for i in layers], dim=-1)


def is_head_dir(path: str | Path) -> bool:
    cfg = Path(path) / "config.json"
    return cfg.is_file() and json.loads(cfg.read_text()).get("speculators_model_type") == SPECULATORS_TYPE


def _modules():
    import torch
    from torch import nn
    from transformers.models.llama.modeling_llama import (
        LlamaMLP,
        LlamaRMSNorm,
        LlamaRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    class Attention(nn.Module):
        """Llama attention whose q/k/v read the 2H-wide concatenation; keys may come in
        blocks: block 0 attends causally, later blocks (training-time-test steps) only on
        the diagonal (each position sees its own earlier draft steps)."""

        def __init__(self, cfg: Any):
            super().__init__()
            h, self.nh, self.nkv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
            self.hd = getattr(cfg, "head_dim", None) or h // self.nh
            self.q_proj = nn.Linear(2 * h, self.nh * self.hd, bias=False)
            self.k_proj = nn.Linear(2 * h, self.nkv * self.hd, bias=False)
            self.v_proj = nn.Linear(2 * h, self.nkv * self.hd, bias=False)
            self.o_proj = nn.Linear(self.nh * self.hd, h, bias=False)

        def qkv(self, x: Any, cos: Any, sin: Any) -> tuple[Any, Any, Any]:
            b, t, _ = x.shape
            q = self.q_proj(x).view(b, t, self.nh, self.hd).transpose(1, 2)
            k = self.k_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
            v = self.v_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            return q, k, v

        def attend(self, q: Any, keys: list[Any], values: list[Any], mask0: Any) -> Any:
            """softmax over [q.K0 (+mask0) ; q.K1 diag ; ...] times [V0 ; V1 ; ...]."""
            rep = self.nh // self.nkv
            keys = [k.repeat_interleave(rep, dim=1) for k in keys]
            values = [v.repeat_interleave(rep, dim=1) for v in values]
            scale = self.hd ** -0.5
            if q.device.type != "cpu":
                return self._attend_fused(q, keys, values, mask0, scale)
            s0 = (q @ keys[0].transpose(-1, -2)) * scale
            if mask0 is not None:
                s0 = s0.masked_fill(~mask0, float("-inf"))
            diag = [((q * k).sum(-1, keepdim=True) * scale) for k in keys[1:]]
            p = torch.softmax(torch.cat([s0, *diag], dim=-1), dim=-1)
            n0 = s0.shape[-1]
            out = p[..., :n0] @ values[0]
            for i, v in enumerate(values[1:]):
                out = out + p[..., n0 + i:n0 + i + 1] * v
            b, _, t, _ = out.shape
            return self.o_proj(out.transpose(1, 2).reshape(b, t, self.nh * self.hd))

        def _attend_fused(self, q: Any, keys: list[Any], values: list[Any], mask0: Any, scale: float) -> Any:
            """The same attention as one SDPA call over the concatenated blocks, the
            diagonal blocks as identity masks: on a GPU the memory-efficient kernel never
            holds the T x T scores, which the explicit form above keeps for each unrolled
            training step (at 2048 tokens and 40 heads, 0.7 GB per step and batch row).
            The CPU keeps the explicit form, whose outputs the committed local run holds;
            tests check that both agree."""
            import torch.nn.functional as F

            t, n0 = q.shape[2], keys[0].shape[2]
            first = mask0 if mask0 is not None else torch.ones(t, n0, dtype=torch.bool, device=q.device)
            eye = torch.eye(t, dtype=torch.bool, device=q.device)
            mask = torch.cat([first, *[eye] * (len(keys) - 1)], dim=-1)
            out = F.scaled_dot_product_attention(q, torch.cat(keys, dim=2), torch.cat(values, dim=2),
                                                 attn_mask=mask, scale=scale)
            b = out.shape[0]
            return self.o_proj(out.transpose(1, 2).reshape(b, t, self.nh * self.hd))

    class Layer(nn.Module):
        """EAGLE-3's decoder layer (speculators' Eagle3DecoderLayer, vLLM's layer 0)."""

        def __init__(self, cfg: Any, norm_before_residual: bool):
            super().__init__()
            h, eps = cfg.hidden_size, cfg.rms_norm_eps
            self.norm_before_residual = norm_before_residual
            self.input_layernorm = LlamaRMSNorm(h, eps=eps)
            self.hidden_norm = LlamaRMSNorm(h, eps=eps)
            self.self_attn = Attention(cfg)
            self.post_attention_layernorm = LlamaRMSNorm(h, eps=eps)
            self.mlp = LlamaMLP(cfg)

        def prologue(self, embeds: Any, hidden: Any) -> tuple[Any, Any]:
            """(the attention input, the residual)."""
            normed = self.hidden_norm(hidden)
            residual = normed if self.norm_before_residual else hidden
            return torch.cat([self.input_layernorm(embeds), normed], dim=-1), residual

        def epilogue(self, attn: Any, residual: Any) -> Any:
            h = residual + attn
            return h + self.mlp(self.post_attention_layernorm(h))

    class Eagle3Head(nn.Module):
        def __init__(self, cfg: Any, draft_vocab: int, target_hidden: int, layers: list[int],
                     norm_before_residual: bool = True):
            super().__init__()
            h = cfg.hidden_size
            self.config, self.aux = cfg, list(layers)
            self.norm_before_residual = norm_before_residual
            self.embed_tokens = nn.Embedding(cfg.vocab_size, h)  # the target's (not saved)
            self.fc = nn.Linear(len(layers) * target_hidden, h, bias=False)
            self.layers = nn.ModuleList([Layer(cfg, norm_before_residual)])
            self.norm = LlamaRMSNorm(h, eps=cfg.rms_norm_eps)
            self.lm_head = nn.Linear(h, draft_vocab, bias=False)
            self.register_buffer("d2t", torch.zeros(draft_vocab, dtype=torch.long))
            self.register_buffer("t2d", torch.zeros(cfg.vocab_size, dtype=torch.bool))
            self.rotary = LlamaRotaryEmbedding(config=cfg)

        @property
        def device(self) -> Any:
            return self.fc.weight.device

        def step(self, ids: Any, hidden: Any, positions: Any, past: tuple[Any, Any] | None) -> tuple[Any, Any, Any]:
            """One draft step over new rows (batch 1 or more): `hidden` is fc(features) or
            the head's own previous output. Returns (pre-norm output, draft-vocab logits,
            the keys/values including `past`). The new rows attend causally to `past` and
            each other."""
            layer = self.layers[0]
            x, residual = layer.prologue(self.embed_tokens(ids), hidden)
            cos, sin = self.rotary(x, positions)
            q, k, v = layer.self_attn.qkv(x, cos, sin)
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            t, n = q.shape[2], k.shape[2]
            mask = None
            if t > 1:
                mask = torch.ones(t, n, dtype=torch.bool, device=q.device).tril(n - t)
            out = layer.epilogue(layer.self_attn.attend(q, [k], [v], mask), residual)
            return out, self.lm_head(self.norm(out)), (k, v)

        def to_target(self, draft_ids: Any) -> Any:
            return draft_ids + self.d2t[draft_ids]

    return Eagle3Head


def layer_config(target_cfg: Any) -> Any:
    """The head's decoder-layer config: a one-layer Llama config of the target's sizes.
    (An EAGLE-3 head is a Llama layer whatever the target family: vLLM maps model_type
    llama to Eagle3LlamaForCausalLM.)"""
    from transformers import LlamaConfig

    t = target_cfg
    rope = getattr(t, "rope_parameters", None) or {"rope_type": "default", "rope_theta": getattr(t, "rope_theta", 10000.0)}
    return LlamaConfig(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                       num_hidden_layers=1, num_attention_heads=t.num_attention_heads,
                       num_key_value_heads=t.num_key_value_heads, head_dim=getattr(t, "head_dim", None)
                       or t.hidden_size // t.num_attention_heads, hidden_act=t.hidden_act,
                       max_position_embeddings=t.max_position_embeddings, rms_norm_eps=t.rms_norm_eps,
                       rope_parameters=dict(rope), tie_word_embeddings=False, attention_bias=False,
                       architectures=["LlamaForCausalLM"])


INITS = ("target_last_layer", "random")


def new_head(target: Any, vocab: list[int], layers: list[int] | None = None,
             init: str = "target_last_layer") -> Any:
    """A head for `target` drafting over the token ids `vocab` (sorted): embeddings, final
    norm and the `vocab` rows of the output head copied from the target (the head starts by
    speaking the target's language).

    init "target_last_layer": the layer starts as the target's last decoder layer reading
    the high features (fc picks them, q/k/v see only the feature half): the head's first
    draft is then close to what the target would compute from its layer N-3 state, which
    measured on gsm8k-cot (16 held-out answers, k = 4) lifts the mean accepted length from
    3.38 to 3.81 at 20 epochs. "random": fc and the layer at Llama's initialisation."""
    import torch

    if init not in INITS:
        raise InputError(f"train_draft_eagle.init: {init!r} is not one of {list(INITS)}")
    tc = target.config
    cfg = layer_config(tc)
    head = _modules()(cfg, len(vocab), tc.hidden_size, layers or aux_layers(tc.num_hidden_layers))
    torch.manual_seed(0)
    for m in head.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=cfg.initializer_range)
    with torch.no_grad():
        head.embed_tokens.weight.copy_(target.get_input_embeddings().weight)
        ids = torch.tensor(vocab, dtype=torch.long)
        head.lm_head.weight.copy_(target.get_output_embeddings().weight[ids])
        head.norm.weight.copy_(target.model.norm.weight)
        head.d2t.copy_(ids - torch.arange(len(vocab)))
        head.t2d.zero_()
        head.t2d[ids] = True
        if init == "target_last_layer":
            _copy_last_layer(head, target)
    head.embed_tokens.weight.requires_grad_(False)
    return head.to(target.device)


def _copy_last_layer(head: Any, target: Any) -> None:
    """Start the head's layer as the target's last one over the high (last aux) features.
    Biases, if the target has them (Qwen2's q/k/v), are left out: the head has none."""
    import torch

    last, lay, h = target.model.layers[-1], head.layers[0], target.config.hidden_size
    for name in ("q_proj", "k_proj", "v_proj"):
        w = getattr(lay.self_attn, name).weight
        w.zero_()
        w[:, h:] = getattr(last.self_attn, name).weight
    lay.self_attn.o_proj.weight.copy_(last.self_attn.o_proj.weight)
    lay.mlp.load_state_dict(last.mlp.state_dict())
    lay.post_attention_layernorm.weight.copy_(last.post_attention_layernorm.weight)
    lay.hidden_norm.weight.copy_(last.input_layernorm.weight)
    head.fc.weight.zero_()
    head.fc.weight[:, -h:] = torch.eye(h)


def save_head(head: Any, out: Path, verifier: str, k: int, extra: dict[str, Any] | None = None) -> None:
    """config.json and model.safetensors in speculators' eagle3 layout (atomic)."""
    from safetensors.torch import save_file

    cfg = {
        "architectures": ["Eagle3Speculator"],
        "speculators_model_type": SPECULATORS_TYPE,
        "speculators_version": "0.3.0",
        "transformer_layer_config": head.config.to_dict(),
        "draft_vocab_size": head.lm_head.out_features,
        "target_hidden_size": head.fc.in_features // len(head.aux),
        "norm_before_residual": head.norm_before_residual,
        "eagle_aux_hidden_state_layer_ids": head.aux,
        "speculators_config": {
            "algorithm": SPECULATORS_TYPE,
            "default_proposal_method": "greedy",
            "proposal_methods": [{"proposal_type": "greedy", "speculative_tokens": k,
                                  "verifier_accept_k": 1, "accept_tolerance": 0.0}],
            "verifier": {"name_or_path": verifier, "architectures": ["LlamaForCausalLM"]},
        },
        **(extra or {}),
    }
    state = {n: t.detach().contiguous().cpu() for n, t in head.state_dict().items()
             if not n.startswith(("embed_tokens.", "rotary."))}
    with atomic_dir(out) as tmp:
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, default=str) + "\n")


def load_head(path: str | Path, target: Any) -> Any:
    """The saved head, bound to `target` (its embeddings); refuses a head made for a
    target of other sizes."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig

    path = Path(path)
    meta = json.loads((path / "config.json").read_text())
    if meta.get("speculators_model_type") != SPECULATORS_TYPE:
        raise InputError(f"{path / 'config.json'}: speculators_model_type is not {SPECULATORS_TYPE!r}")
    cfg = LlamaConfig(**meta["transformer_layer_config"])
    tc = target.config
    if meta["target_hidden_size"] != tc.hidden_size or cfg.vocab_size != tc.vocab_size:
        raise InputError(f"{path / 'config.json'}: target_hidden_size/vocab_size {meta['target_hidden_size']}/"
                         f"{cfg.vocab_size} do not match the target's {tc.hidden_size}/{tc.vocab_size}")
    head = _modules()(cfg, meta["draft_vocab_size"], meta["target_hidden_size"],
                      meta["eagle_aux_hidden_state_layer_ids"], meta.get("norm_before_residual", True))
    state = load_file(str(path / "model.safetensors"))
    with torch.no_grad():
        state["embed_tokens.weight"] = target.get_input_embeddings().weight.detach().clone()
    missing, unexpected = head.load_state_dict(state, strict=False)
    if [m for m in missing if not m.startswith("rotary.")] or unexpected:
        raise InputError(f"{path}: weights missing {missing} / unexpected {unexpected}")
    return head.to(device=target.device, dtype=target.dtype).eval()


def is_head(model: Any) -> bool:
    return type(model).__name__ == "Eagle3Head"


@dataclasses.dataclass
class EagleDraft:
    """The head's state in one decode: keys/values of its step-0 entries (positions
    0..n_ctx-1, each made from the target's features) and the features of positions
    n_ctx.. that the target has verified but the head has not read yet."""

    head: Any
    past: tuple[Any, Any] | None
    n_ctx: int
    pending: Any  # (m, n_aux * H) features of positions n_ctx .. n_ctx + m - 1, or None

    def read(self, feats: Any) -> None:
        """Features of the next verified positions (rows in order)."""
        import torch

        self.pending = feats if self.pending is None else torch.cat([self.pending, feats], dim=0)

    def ready(self) -> bool:
        return self.pending is not None and len(self.pending) > 0

    def propose(self, seq: list[int], n: int) -> list[int]:
        """n draft tokens after `seq` (the prompt and output so far); the pending features
        must cover positions n_ctx .. len(seq) - 2. Step 0 reads them (each with the token
        after its position), steps 1..n-1 the head's own outputs; the drafted steps'
        entries are dropped afterwards."""
        import torch

        head, m = self.head, len(self.pending)
        if self.n_ctx + m != len(seq) - 1:
            raise RuntimeError(f"features cover positions up to {self.n_ctx + m - 1}, the sequence needs {len(seq) - 2}")
        dev = head.device
        ids = torch.tensor([seq[self.n_ctx + 1:]], dtype=torch.long, device=dev)
        pos = torch.arange(self.n_ctx, self.n_ctx + m, device=dev)[None]
        hidden, logits, past = head.step(ids, head.fc(self.pending[None].to(head.fc.weight.dtype)), pos, self.past)
        self.past, self.n_ctx, self.pending = past, self.n_ctx + m, None
        props = [int(head.to_target(logits[0, -1].argmax()))]
        hidden = hidden[:, -1:]
        for j in range(1, n):
            pos = torch.tensor([[self.n_ctx + j - 1]], device=dev)
            tok = torch.tensor([[props[-1]]], dtype=torch.long, device=dev)
            hidden, logits, past = head.step(tok, hidden, pos, past)
            props.append(int(head.to_target(logits[0, -1].argmax())))
        return props[:n]


def prefill_head(head: Any, ids: list[int], feats: Any) -> EagleDraft:
    """The head's state after a prompt prefix `ids` whose target features are `feats`:
    step-0 entries for positions 0..len(ids)-2 (each needs the next token), the last
    position's features pending."""
    import torch

    st = EagleDraft(head, None, 0, None)
    if len(ids) > 1:
        with torch.inference_mode():
            x = torch.tensor([ids[1:]], dtype=torch.long, device=head.device)
            pos = torch.arange(len(ids) - 1, device=head.device)[None]
            _, _, st.past = head.step(x, head.fc(feats[None, :-1].to(head.fc.weight.dtype)), pos, None)
        st.n_ctx = len(ids) - 1
    st.pending = feats[-1:]
    return st


def fresh(head: Any) -> EagleDraft:
    return EagleDraft(head, None, 0, None)


def copy_state(st: EagleDraft) -> EagleDraft:
    return EagleDraft(st.head, st.past, st.n_ctx, st.pending)  # tensors are never written in place
