"""The one round accounting (specdraft.generate.rounds): known match vectors give known
counts, and the decoding loop counts the same rounds as the teacher-forced rule."""

from __future__ import annotations

import pytest

from specdraft.generate.rounds import Rounds, count_rounds


@pytest.mark.parametrize(("match", "k", "budget", "want"), [
    # round 1 keeps 2 of 2, round 2 keeps 1 of 2 (position 4 missed), round 3 keeps 0 of 2
    ([1, 1, 0, 1, 0, 0], 2, None, (3, 6, 3, [1, 1, 1])),
    # every token matches; the last round drafts 3 but only the answer's last token is left
    ([1, 1, 1, 1, 1], 3, None, (2, 6, 4, [0, 1, 0, 1])),
    # the same answer cut at a budget of 5: the budget's last token is drafted by no one
    ([1, 1, 1, 1, 1], 3, 5, (2, 3, 3, [0, 0, 0, 1])),
    # nothing matches: one token per round, every round drafting k
    ([0, 0, 0], 4, None, (3, 12, 0, [3, 0, 0, 0, 0])),
    # plain decoding: a round per token, no drafts, no histogram
    ([1, 0, 1], 0, None, (3, 0, 0, [])),
])
def test_count_rounds_on_known_match_vectors(match, k, budget, want):
    r = count_rounds([bool(m) for m in match], k, budget)
    assert (r.rounds, r.proposed, r.accepted, r.hist) == (want[0], want[1], want[2], want[3])


def test_a_round_cannot_keep_more_than_it_drafted():
    r = Rounds(2)
    with pytest.raises(ValueError, match="cannot keep 3 of 2"):
        r.record(2, 3)


def test_decoding_loop_counts_what_the_match_vector_counts(tiny_models):
    """The simulation loop (which decides each round by running the draft) and count_rounds
    (which reads the decisions off one teacher-forced draft forward) agree on tiny models,
    at every k and with the budget cutting the answer short."""
    import torch
    from transformers import AutoModelForCausalLM

    from specdraft.generate.greedy import decode, simulate

    target = AutoModelForCausalLM.from_pretrained(tiny_models / "target").eval()
    draft = AutoModelForCausalLM.from_pretrained(tiny_models / "draft").eval()
    prompt = [1, 17, 230, 55, 9, 301]
    for budget in (12, 24):
        out = decode(target, prompt, budget, eos=set()).token_ids  # no EOS: cut at the budget
        with torch.inference_mode():
            pred = draft(torch.tensor([prompt + out])).logits[0, len(prompt) - 1:-1].argmax(-1).tolist()
        match = [p == t for p, t in zip(pred, out, strict=True)]
        for k in (1, 2, 4):
            loop = simulate(draft, prompt, out, set(), k, budget)
            rule = count_rounds(match, k, budget)
            assert (loop.rounds, loop.proposed, loop.accepted, loop.hist) == (
                rule.rounds, rule.proposed, rule.accepted, rule.hist), (budget, k)
