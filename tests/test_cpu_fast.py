"""The CPU fast path: oneDNN-packed linears, the lean greedy loop, the cheap draft.

Logic tests run on tiny random-weight Llama models built here (same architecture as
SmolLM2, a few layers), so they take seconds. The rule they guard: whatever the kernels,
the draft's quantisation or its vocabulary, greedy speculative output equals greedy plain
output token for token; only the acceptance may change.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from specdraft.generate import draft as draft_mod
from specdraft.generate.api import GenerationConfig
from specdraft.generate.cpu_kernels import check_available, pack_linears
from specdraft.generate.greedy import decode
from specdraft.io import InputError

VOCAB = 384
EOS = 2


def tiny_llama(layers: int = 4, seed: int = 0, vocab: int = VOCAB):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, eos_token_id=EOS, bos_token_id=1, pad_token_id=EOS)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger logits: fewer near-ties, outputs that vary with the prompt
        model.lm_head.weight.mul_(8.0)
    return model


def self_draft(target, layers: int = 1):
    from specdraft.generate.models import self_draft as make

    return make(target, layers).eval()


def prompts(n: int = 6, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (int(torch.randint(4, 20, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def hf_greedy(model, ids: list[int], max_new: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=max_new, pad_token_id=EOS, eos_token_id=EOS,
                             temperature=None, top_p=None, top_k=None)
    return out[0, len(ids):].tolist()


# ------------------------------------------------------------------------- oneDNN kernels
def test_onednn_ops_exist_and_equal_linear():
    """Fails loudly when a torch release drops the private mkldnn ops the fast path uses."""
    check_available()
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 160, bias=True)
    holder = torch.nn.Sequential(lin)
    assert len(pack_linears(holder)) == 1
    packed = holder[0]
    assert type(packed).__name__ == "PackedLinear"
    for shape in ((1, 96), (3, 96), (8, 96), (1, 5, 96)):
        x = torch.randn(*shape)
        torch.testing.assert_close(packed(x), torch.nn.functional.linear(x, lin.weight, lin.bias),
                                   rtol=1e-5, atol=1e-5)


def test_pack_linears_keeps_model_outputs():
    model = tiny_llama()
    ids = torch.tensor([prompts(1)[0]])
    with torch.no_grad():
        before = model(ids).logits
        n = len(pack_linears(model))
        after = model(ids).logits
    assert n == 4 * 7 + 1  # 7 linears per layer and the head
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------- the lean loop
def test_lean_plain_loop_equals_transformers_generate():
    model = tiny_llama()
    for ids in prompts():
        d = decode(model, ids, 24, {EOS})
        assert d.token_ids == hf_greedy(model, ids, 24)
        assert d.rounds == len(d.token_ids) and d.proposed == d.accepted == 0


COMBOS = list(itertools.product(("default", "onednn"), ("none", "int8"), (0, 64), (1, 2, 3)))


@pytest.mark.parametrize("kernels,quant,vocab,k", COMBOS)
def test_speculative_equals_plain_for_every_combination(kernels, quant, vocab, k):
    target = tiny_llama()
    draft = self_draft(target, 2)
    ranking = list(range(3, VOCAB))  # any ranking: exactness must not depend on it
    if vocab:
        draft_mod.restrict_head(draft, draft_mod.vocab_subset(_Tok(), ranking, vocab, VOCAB))
    if quant == "int8":
        draft = draft_mod.quantize_int8(draft)
    if kernels == "onednn":
        pack_linears(target)
        pack_linears(draft)
    proposed = 0
    for ids in prompts():
        plain = decode(target, ids, 24, {EOS})
        spec = decode(target, ids, 24, {EOS}, draft=draft, k=k)
        assert spec.token_ids == plain.token_ids
        assert spec.accepted <= spec.proposed <= k * spec.rounds
        assert len(spec.token_ids) <= spec.accepted + spec.rounds
        proposed += spec.proposed
    assert proposed > 0


def test_identical_draft_accepts_every_proposal():
    target = tiny_llama()
    for ids in prompts(3):
        d = decode(target, ids, 30, {EOS}, draft=target, k=3)
        assert d.accepted == d.proposed > 0
        assert len(d.token_ids) == d.accepted + d.rounds
        if len(d.token_ids) == 30:
            assert d.rounds <= 30 / 4 + 1  # 3 drafted + 1 verified token per full round


@pytest.mark.parametrize("quant,vocab", [("none", 0), ("int8", 64)])
def test_simulation_reproduces_the_engine_counts_with_early_eos(quant, vocab):
    """The real loop drafts past an EOS it cannot foresee; the simulation must too."""
    from specdraft.generate.greedy import simulate

    target = tiny_llama()
    for ids in prompts():
        free = decode(target, ids, 12, {EOS}).token_ids
        eos = {free[5]}  # a token the target emits early: outputs end there, well inside the budget
        draft = self_draft(target, 3)
        if vocab:
            draft_mod.restrict_head(draft, draft_mod.vocab_subset(_Tok(), list(range(3, VOCAB)), vocab, VOCAB))
        if quant == "int8":
            draft = draft_mod.quantize_int8(draft)
        plain = decode(target, ids, 40, eos)
        spec = decode(target, ids, 40, eos, draft=draft, k=3)
        sim = simulate(draft, ids, plain.token_ids, eos, 3, 40)
        assert len(plain.token_ids) < 40 and plain.token_ids[-1] in eos
        assert sim.token_ids == spec.token_ids == plain.token_ids
        assert (sim.rounds, sim.proposed, sim.accepted) == (spec.rounds, spec.proposed, spec.accepted)


@pytest.mark.parametrize("kernels", ["default", "onednn"])
def test_a_cached_prompt_prefix_changes_no_output_and_no_count(kernels):
    """Prompts sharing 30 tokens (a system prompt): plain, speculative and simulated runs
    from the prefix's caches give the same tokens and counts as runs that prefill the whole
    prompt; a prompt that does not extend the prefix is prefilled whole."""
    from specdraft.generate.greedy import common_prefix, prefill, simulate

    target = tiny_llama()
    draft = draft_mod.quantize_int8(self_draft(target, 2))
    if kernels == "onednn":
        pack_linears(target)
        pack_linears(draft)
    system = prompts(1, seed=7)[0] * 3
    rows = [system[:30] + q for q in prompts(3)]
    shared = common_prefix(rows)
    assert shared[:30] == system[:30] and all(len(shared) < len(r) for r in rows)
    prefix = prefill([target, draft], shared)
    for ids in rows + prompts(1, seed=9):  # the last one does not start with the prefix
        plain, cached = decode(target, ids, 24, {EOS}), decode(target, ids, 24, {EOS}, prefix=prefix)
        spec = decode(target, ids, 24, {EOS}, draft=draft, k=3, prefix=prefix)
        sim = simulate(draft, ids, cached.token_ids, {EOS}, 3, 24, prefix=prefix)
        uncached_sim = simulate(draft, ids, plain.token_ids, {EOS}, 3, 24)
        assert cached.token_ids == plain.token_ids == spec.token_ids == sim.token_ids
        assert (sim.rounds, sim.proposed, sim.accepted, sim.hist) == (spec.rounds, spec.proposed, spec.accepted,
                                                                      spec.hist)
        assert (uncached_sim.proposed, uncached_sim.accepted) == (sim.proposed, sim.accepted)
    # the prefix's caches are copied, never extended: still exactly the prefix
    assert all(c.get_seq_length() == len(shared) for c in prefix.caches.values())
    assert common_prefix([[1, 2, 3], [1, 2, 3]]) == [1, 2] and common_prefix([[1, 2], [3, 4]]) == []


def test_an_engine_prefills_its_prompts_shared_prefix_once(tiny_models, local_prompts):
    """HFEngine.cache_prefix on rendered chat prompts: the shared part is the template and
    the system prompt; with generation.prefix_cache off it caches nothing."""
    from specdraft.generate.hf_engine import HFEngine
    from specdraft.prompts import messages

    prompts_cfg, _ = local_prompts
    gen = GenerationConfig(max_new_tokens=12, num_speculative_tokens=2)
    with HFEngine(tiny_models / "target", {"sd": tiny_models / "draft"}, gen) as eng:
        texts = [eng.render(messages(prompts_cfg, "cod", q)) for q in ("What is 2 + 3?", "Solve x + 1 = 4.")]
        plain = [eng.generate_one(t) for t in texts]
        n = eng.cache_prefix(texts)
        system = eng.tokenizer(eng.render(messages(prompts_cfg, "cod", "Q")), add_special_tokens=False)["input_ids"]
        assert 0 < n < len(system) and len(eng.prefix.caches) == 2  # the target and the draft
        for t, p in zip(texts, plain, strict=True):
            assert eng.generate_one(t).token_ids == eng.generate_one(t, "sd").token_ids == p.token_ids
    off = dataclasses.replace(gen, prefix_cache=False)
    with HFEngine(tiny_models / "target", {"sd": tiny_models / "draft"}, off) as eng:
        assert eng.cache_prefix(texts) == 0 and eng.prefix.caches == {}


def test_stops_after_eos_and_at_the_token_budget():
    target = tiny_llama()
    for ids in prompts(6):
        plain = decode(target, ids, 40, {EOS})
        assert EOS not in plain.token_ids[:-1]
        assert len(plain.token_ids) == 40 or plain.token_ids[-1] == EOS
        for budget in (1, 2, 5):
            spec = decode(target, ids, budget, {EOS}, draft=self_draft(target), k=3)
            assert spec.token_ids == plain.token_ids[:budget] or spec.token_ids[-1] == EOS


# ------------------------------------------------------------------ the restricted head
class _Tok:
    """The two tokenizer attributes vocab_subset reads."""

    all_special_ids = [0, 1, 2]


def test_token_ranking_orders_by_answer_then_question_frequency():
    class WordTok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [int(w) for w in text.split()]}

    ranking = draft_mod.token_ranking(WordTok(), ["5 5 5 7 7 9", "7"], ["9 9 11", "12"])
    assert ranking == [5, 7, 9, 11, 12]  # 5 and 7 tie (3 each, absent from questions): lower id first
    assert draft_mod.vocab_subset(_Tok(), ranking, 2, 10) == [0, 1, 2, 5, 7]
    assert draft_mod.coverage([5, 7], [[5, 7, 9], [7]]) == pytest.approx(3 / 4)


def test_restricted_head_never_proposes_outside_its_subset():
    draft = tiny_llama(2, seed=3)
    subset = draft_mod.vocab_subset(_Tok(), list(range(100, 140)), 40, VOCAB)
    draft_mod.restrict_head(draft, subset)
    with torch.no_grad():
        logits = draft(torch.randint(3, VOCAB, (4, 12))).logits
    assert logits.shape[-1] == VOCAB
    assert set(logits.argmax(-1).flatten().tolist()) <= set(subset)


def test_wrong_subset_stays_exact_with_lower_acceptance():
    """A subset that misses the target's tokens only costs acceptance, never correctness."""
    target = tiny_llama()
    ids_list = prompts(4)
    produced = {t for ids in ids_list for t in decode(target, ids, 24, {EOS}).token_ids}
    good, bad = self_draft(target, 3), self_draft(target, 3)
    wrong = draft_mod.vocab_subset(_Tok(), [t for t in range(3, VOCAB) if t not in produced], 64, VOCAB)
    draft_mod.restrict_head(bad, wrong)
    acc_good = acc_bad = 0
    for ids in ids_list:
        plain = decode(target, ids, 24, {EOS}).token_ids
        g, b = decode(target, ids, 24, {EOS}, good, 2), decode(target, ids, 24, {EOS}, bad, 2)
        assert g.token_ids == plain and b.token_ids == plain
        acc_good += g.accepted
        acc_bad += b.accepted
    assert acc_good > 0
    if not set(wrong) & produced:  # only special ids can be in both
        assert acc_bad == 0
    assert acc_bad < acc_good


def test_restricted_head_at_paper_shape_qwen2_tied_vocab():
    """Qwen2.5-0.5B's head is tied to its 151,936-row embedding; the restricted head is a
    separate copy of the kept rows, so the embeddings stay intact and logits keep the
    full width the target verifies against."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg).eval()
    emb = model.get_input_embeddings().weight.clone()
    keep = sorted(torch.randperm(151936)[:4096].tolist())
    draft_mod.restrict_head(model, keep)
    torch.testing.assert_close(model.get_input_embeddings().weight, emb)
    with torch.no_grad():
        logits = model(torch.tensor([keep[:7]])).logits
    assert logits.shape == (1, 7, 151936)
    assert set(logits.argmax(-1).flatten().tolist()) <= set(keep)
    assert sum(p.numel() for p in model.get_output_embeddings().parameters()) == 4096 * 32


# ------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("key,value,match", [
    ("cpu_kernels", "mkl", r"generation.cpu_kernels: 'mkl' unknown; valid: \['default', 'onednn', 'auto'\]"),
    ("draft_quant", "int4", r"generation.draft_quant: 'int4' unknown; valid: \['none', 'int8'\]"),
    ("decode_loop", "fast", r"generation.decode_loop: 'fast' unknown"),
    ("max_new_tokens", 0, r"generation.max_new_tokens: must be >= 1"),
    ("draft_vocab", -5, r"generation.draft_vocab: must be >= 0, got -5"),
    ("vllm", {"draft_tensor_parallel_size": 0}, r"generation.vllm.draft_tensor_parallel_size: must be >= 1"),
])
def test_bad_generation_settings_are_refused(key, value, match):
    """Checked once, where params become settings (specdraft.config.build)."""
    from specdraft.config import build

    with pytest.raises(InputError, match=match):
        build(GenerationConfig, {key: value}, "generation")


def test_both_paths_are_probed_interleaved_and_the_model_left_as_it_was(tiny_models):
    """probe_paths times both paths at the requested shapes and leaves the model on torch's
    default path, computing what it computed before."""
    from transformers import AutoModelForCausalLM

    from specdraft.generate.cpu_kernels import probe_paths

    model = AutoModelForCausalLM.from_pretrained(tiny_models / "target", dtype=torch.float32).eval()
    x = torch.tensor([[5, 17, 300, 42, 7, 99]])
    with torch.inference_mode():
        ref = model(x).logits
        probe = probe_paths(model, [1, 3], reps=3)
        got = model(x).logits
    t = probe["forward_ms"]
    assert set(t) == {"default", "onednn"} and all(set(v) == {1, 3} and min(v.values()) > 0 for v in t.values())
    assert not [m for m in model.modules() if type(m).__name__ == "PackedLinear"]
    assert torch.equal(got, ref)


@pytest.mark.parametrize(("default", "onednn", "choice"), [
    ({1: 44.0, 5: 43.9}, {1: 44.0, 5: 43.8}, "default"),  # within noise (an Intel Xeon with AMX): default
    ({1: 44.0, 5: 43.9}, {1: 44.1, 5: 43.7}, "default"),  # the same machine, the other side of the tie
    ({1: 47.0, 5: 66.0}, {1: 26.0, 5: 31.0}, "onednn"),  # AMD EPYC without AMX: clearly faster
    ({1: 30.0, 5: 40.0}, {1: 40.0, 5: 45.0}, "default"),
])
def test_the_kernel_choice_does_not_flip_with_noise(tiny_models, default, onednn, choice):
    """choose_kernels with injected timings: oneDNN only where it wins by the margin, so two
    probes that straddle a tie decide alike; the model is packed exactly when it is chosen,
    and its greedy choices are those of the default path either way."""
    from transformers import AutoModelForCausalLM

    from specdraft.generate.cpu_kernels import ONEDNN_MARGIN, choose_kernels

    assert ONEDNN_MARGIN >= 0.05
    model = AutoModelForCausalLM.from_pretrained(tiny_models / "target", dtype=torch.float32).eval()
    x = torch.tensor([[5, 17, 300, 42, 7, 99]])
    with torch.inference_mode():
        ref = model(x).logits
    probe = choose_kernels(model, [1, 5], timer=lambda m, rows: {"rows": rows, "forward_ms": {
        "default": default, "onednn": onednn}})
    assert probe["choice"] == choice
    packed = [m for m in model.modules() if type(m).__name__ == "PackedLinear"]
    assert bool(packed) is (choice == "onednn")
    with torch.inference_mode():
        got = model(x).logits
    assert torch.allclose(got, ref, atol=1e-4) and torch.equal(got.argmax(-1), ref.argmax(-1))


def test_an_auto_engine_records_its_choice(tiny_models):
    from specdraft.generate.api import GenerationConfig
    from specdraft.generate.hf_engine import HFEngine

    gen = GenerationConfig(max_new_tokens=8, batch_size=4, num_speculative_tokens=3, cpu_kernels="auto")
    with HFEngine(tiny_models / "target", {"d": tiny_models / "draft"}, gen) as eng:
        assert eng.kernel_probe["rows"] == [1, 4]  # a decode step and a verify of 3 drafts
        assert eng.cpu_kernels == eng.kernel_probe["choice"] in ("default", "onednn")
    with HFEngine(tiny_models / "target", None, gen) as eng:  # no drafts: a step of the batch size
        assert eng.kernel_probe["rows"] == [1, 4]
    with HFEngine(tiny_models / "target", None, dataclasses.replace(gen, batch_size=16)) as eng:
        assert eng.kernel_probe["rows"] == [1, 16]
