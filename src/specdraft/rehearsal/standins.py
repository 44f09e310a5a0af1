"""Tiny random-weight stand-ins for the paper profiles' models, under their real hub ids.

Why: no GPU is at hand and the real weights cannot be downloaded here, yet the code only
the paper profiles take (Qwen2 and Qwen3 architectures, bf16, a draft padded to the
target's vocabulary, Qwen's generation_config.json, the ChatML template with thinking
switched off, vLLM's draft_model) must run before a GPU day is spent on it. Each
stand-in keeps every field of the real config.json except the sizes, which are scaled
down (the draft shallower and narrower than the target, with tied embeddings; the two
vocabulary sizes differ by padding exactly as 152064 and 151936 do), carries the real
generation_config.json (sampling defaults, repetition penalty, two EOS ids) and a
tokenizer of Qwen2's own class whose BPE vocabulary is trained here on the rehearsal's
data. Weights are random (seeded): the rehearsal tests mechanics, not answers.

Config values: the public config.json / generation_config.json of each repository at the
pinned revision (see conf/profile/paper*.yaml and ../shared/REFERENCE.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# ChatML as Qwen2.5-Instruct renders it: a default system turn when none is given, one
# "<|im_start|>role\n...<|im_end|>\n" block per message, the assistant header to generate.
# (Tool calls are left out: the pipeline never sends any.)
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen3: no default system turn; an assistant turn after the last user message carries a
# (here empty) think block, and the generation prompt gets an empty think block when
# enable_thinking is false, so the evaluated prompt is a prefix of the trained text.
QWEN3_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.last_user = loop.index0 %}"
    "{%- endif %}{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- set content = message['content'] %}{%- set reasoning = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}{%- endif %}"
    "{%- if loop.index0 > ns.last_user %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + content + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 151643-151645 in Qwen's vocabulary
BPE_SIZE = 1536  # regular tokens (Qwen: 151643), then the special ones


@dataclasses.dataclass(frozen=True)
class StandIn:
    """One model repository: its real config fields, the sizes that replace them, and
    its generation_config.json (token ids are Qwen's; remapped to the tiny tokenizer)."""

    repo_id: str
    revision: str
    config: dict[str, Any]  # the real config.json
    tiny: dict[str, Any]  # the scaled-down size fields
    generation: dict[str, Any]  # the real generation_config.json
    template: str
    extra_tokens: tuple[str, ...] = ()  # added (non-special) tokens, e.g. Qwen3's <think>


_QWEN2_COMMON = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_dropout": 0.0,
                 "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu", "initializer_range": 0.02,
                 "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
                 "sliding_window": 131072, "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False}
_QWEN25_GEN = {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
               "temperature": 0.7, "top_p": 0.8, "top_k": 20}
_QWEN3_COMMON = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "attention_bias": False,
                 "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu",
                 "initializer_range": 0.02, "max_position_embeddings": 40960, "rms_norm_eps": 1e-06,
                 "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None, "torch_dtype": "bfloat16",
                 "use_cache": True, "use_sliding_window": False, "vocab_size": 151936}
_QWEN3_GEN = {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
              "temperature": 0.6, "top_p": 0.95, "top_k": 20}
# The size fields, in this order, of each model's real config and of its stand-in.
SIZE = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
# Larger random weights than the real init range: distinct greedy choices, fewer bf16 ties.
_INIT = {"initializer_range": 0.2}


def _model(common: dict, real: tuple, tiny: tuple, tied: bool, **extra: tuple) -> tuple[dict, dict]:
    """(the real config.json, the stand-in's size fields): SIZE values, max_window_layers
    (= the layer count), and `extra` fields given as (real, tiny) pairs (vocab_size, head_dim)."""
    config = {**common, **dict(zip(SIZE, real, strict=True)), "max_window_layers": real[2],
              "tie_word_embeddings": tied, **{k: v[0] for k, v in extra.items()}}
    small = {**dict(zip(SIZE, tiny, strict=True)), "max_window_layers": tiny[2], **{k: v[1] for k, v in extra.items()},
             **_INIT}
    return config, small


def _qwen25(repo: str, rev: str, model: tuple[dict, dict], penalty: float) -> StandIn:
    return StandIn(repo, rev, *model, {**_QWEN25_GEN, "repetition_penalty": penalty}, QWEN25_TEMPLATE)


def _qwen3(repo: str, rev: str, model: tuple[dict, dict]) -> StandIn:
    return StandIn(repo, rev, *model, _QWEN3_GEN, QWEN3_TEMPLATE, ("<think>", "</think>"))


# The draft shallower and narrower, with tied embeddings; Qwen2.5's vocabularies differ by
# padding (152064 vs 151936), Qwen3's do not. Qwen3-0.6B's head_dim x heads != hidden_size
# (128 x 16 vs 1024), and so is the stand-in's (64 x 4 vs 128).
FAMILIES: dict[str, dict[str, StandIn]] = {
    "qwen2.5": {
        "target": _qwen25("Qwen/Qwen2.5-14B-Instruct", "cf98f3b3bbb457ad9e2bb7baf9a0125b6b88caa8",
                          _model(_QWEN2_COMMON, (5120, 13824, 48, 40, 8), (256, 704, 4, 4, 2), tied=False,
                                 vocab_size=(152064, BPE_SIZE + 256)), penalty=1.05),
        "draft": _qwen25("Qwen/Qwen2.5-0.5B-Instruct", "7ae557604adf67be50417f59c2c2f167def9a775",
                         _model(_QWEN2_COMMON, (896, 4864, 24, 14, 2), (128, 352, 2, 2, 1), tied=True,
                                vocab_size=(151936, BPE_SIZE + 128), max_window_layers=(21, 2)), penalty=1.1),
    },
    "qwen3": {
        "target": _qwen3("Qwen/Qwen3-14B", "40c069824f4251a91eefaf281ebe4c544efd3e18",
                         _model(_QWEN3_COMMON, (5120, 17408, 40, 40, 8), (256, 704, 4, 4, 2), tied=False,
                                head_dim=(128, 64), vocab_size=(151936, BPE_SIZE + 128))),
        "draft": _qwen3("Qwen/Qwen3-0.6B", "c1899de289a04d12100db370d81485cdf75e47ca",
                        _model(_QWEN3_COMMON, (1024, 3072, 28, 16, 8), (128, 384, 2, 4, 2), tied=True,
                               head_dim=(128, 64), vocab_size=(151936, BPE_SIZE + 128))),
    },
}


def train_tokenizer(texts: Iterable[str], template: str, extra_tokens: tuple[str, ...] = ()) -> Any:
    """A Qwen2Tokenizer (transformers' own class: Qwen's normalizer, pre-tokenizer regex and
    byte-level BPE) whose vocabulary and merges are trained on `texts`, with Qwen's special
    tokens right after the regular ones and Qwen-Instruct's settings (EOS <|im_end|>, pad
    <|endoftext|>, no BOS)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    shape = Qwen2Tokenizer()  # the class's own pipeline, to train the BPE with the same splits
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = shape.backend_tokenizer.normalizer
    bpe.pre_tokenizer = shape.backend_tokenizer.pre_tokenizer
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=BPE_SIZE, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    n = len(model["vocab"])
    vocab = {**model["vocab"], **{t: n + i for i, t in enumerate(SPECIAL)}}  # Qwen's order after the regular ids
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges,
                         unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         errors="replace", model_max_length=131072, split_special_tokens=False,
                         clean_up_tokenization_spaces=False)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL], special_tokens=True)
    if extra_tokens:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra_tokens])
    tok.chat_template = template
    ids = tok.convert_tokens_to_ids(SPECIAL)
    if ids != list(range(n, n + len(SPECIAL))):
        raise RuntimeError(f"special token ids {ids} do not follow the {n} regular ones")
    return tok


def _remap(value: Any, ids: dict[int, int]) -> Any:
    """Qwen's special token ids (151643-151645) -> the tiny tokenizer's."""
    if isinstance(value, list):
        return [ids[v] for v in value]
    return ids.get(value, value) if isinstance(value, int) and not isinstance(value, bool) else value


def write_model(stand_in: StandIn, tokenizer: Any, folder: Path, seed: int) -> dict[str, Any]:
    """Save a seeded random model with the stand-in's config, generation config and tokenizer
    (bf16 safetensors, as the hub ships them); returns the config written."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    qwen_ids = dict(zip(range(151643, 151646), tokenizer.convert_tokens_to_ids(SPECIAL), strict=True))
    fields = {**stand_in.config, **stand_in.tiny}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in fields:
            fields[key] = _remap(fields[key], qwen_ids)
    if fields["vocab_size"] < len(tokenizer):
        raise RuntimeError(f"{stand_in.repo_id}: vocab_size {fields['vocab_size']} < tokenizer {len(tokenizer)}")
    cfg = AutoConfig.for_model(**{k: v for k, v in fields.items() if k not in ("architectures", "torch_dtype")})
    cfg.architectures = fields["architectures"]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    # The hub's files as published (older field names: rope_theta, torch_dtype), not
    # transformers' re-serialisation, so loaders read what a GPU user downloads.
    (folder / "config.json").write_text(json.dumps({**fields, "transformers_version": "4.43.1"}, indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {**{k: _remap(v, qwen_ids) for k, v in stand_in.generation.items()}, "transformers_version": "4.37.0"},
        indent=2))
    return fields


def build_family(name: str, texts: list[str], out: Path, seed: int = 0) -> dict[str, Path]:
    """Write the target and draft stand-ins of a family to out/<repo_id>; returns
    {repo_id: folder}. Both share one tokenizer, as the real pair does."""
    fam = FAMILIES[name]
    tok = train_tokenizer(texts, fam["target"].template, fam["target"].extra_tokens)
    folders = {}
    for i, role in enumerate(("target", "draft")):
        s = fam[role]
        folders[s.repo_id] = out / s.repo_id
        write_model(s, tok, folders[s.repo_id], seed + i)
    return folders
