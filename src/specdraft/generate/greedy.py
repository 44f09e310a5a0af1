"""Greedy decoding at batch 1, plain or speculative, in one short loop.

Why not `model.generate(assistant_model=...)`: transformers' assisted generation calls
the draft's own `generate()` every round, whose set-up (generation config, logits
processors, stopping criteria) costs ~4-6 ms per round on this CPU, about as much as the
two drafted tokens themselves; a round of the 135M target costs ~50 ms, so that overhead
alone eats the gain. This loop does only what greedy speculative decoding needs
(Leviathan et al. 2023 with temperature 0):

1. the draft proposes k tokens greedily, one forward each (its KV cache kept);
2. the target scores the pending token and the k proposals in one forward;
3. proposals are accepted while they equal the target's own greedy choice, and the
   target's choice at the first mismatch (or after the last proposal) is appended;
4. both caches drop the rejected positions.

Plain decoding is the same loop with k = 0, so plain and speculative timings share
every line of code but the drafting. The output equals plain greedy decoding token for
token whenever the target's argmax does not depend on how many rows a forward has
(tests check it against `generate()` and across kernels). The counts are exact: rounds
= target forwards, proposed = drafted tokens, accepted = drafted tokens kept, counted
by the one round accounting (specdraft.generate.rounds) that train_draft's teacher-forced
estimate uses too.

Every prompt of a pass starts with the same tokens (chat template, system prompt, few-shot
turns). A `Prefix` holds each model's KV cache after them, computed once per engine; a
decode with one starts from copies of those caches and feeds only the rest of its prompt,
plain and speculative alike (vLLM's prefix caching does the same). The prompt's prefill
is then a few tokens instead of the whole prompt, which no draft could speed up.

`simulate` runs the same loop with the target's choices read from its known greedy output
instead of computed: the draft makes exactly the calls it makes in real speculative
decoding, so acceptance is exact for any draft (int8 included) at a few percent of the
cost, which lets evaluation report acceptance on every test question.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

from specdraft.generate.rounds import Rounds


@dataclasses.dataclass
class Decoded:
    token_ids: list[int]
    rounds: int  # target forwards (verify steps; with k = 0, one per token)
    proposed: int
    accepted: int
    target_s: float  # seconds inside target forwards (simulate: 0)
    draft_s: float  # seconds inside draft forwards
    hist: list[int] = dataclasses.field(default_factory=list)  # drafting rounds by accepted count (0..k)


@dataclasses.dataclass(frozen=True)
class Prefix:
    """Token ids every prompt of a pass starts with, and each model's cache after them."""

    ids: list[int]
    caches: dict[Any, Any]  # model -> its DynamicCache after `ids`

    def start(self, model: Any, prompt_ids: list[int]) -> tuple[Any, list[int]]:
        """(cache, tokens still to feed) for `model` on `prompt_ids`: a copy of the prefix's
        cache and the rest of the prompt where the prompt extends the prefix, else an
        empty cache and the whole prompt."""
        n = len(self.ids)
        if model in self.caches and len(prompt_ids) > n and prompt_ids[:n] == self.ids:
            return copy.deepcopy(self.caches[model]), list(prompt_ids[n:])
        return _empty(model), list(prompt_ids)


def prefill(models: list[Any], ids: list[int]) -> Prefix:
    """The Prefix of `ids` for each model (one forward each)."""
    import torch

    caches = {}
    with torch.inference_mode():
        for m in models:
            caches[m] = _empty(m)
            _forward(m, ids, caches[m], 1)
    return Prefix(list(ids), caches)


def common_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest token prefix of all prompts that leaves each at least one token of its own."""
    if not prompts:
        return []
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        n = min(n, next((i for i, (a, b) in enumerate(zip(first, p, strict=False)) if a != b), n))
    return first[:max(n, 0)]


def _empty(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _forward(model: Any, ids: list[int], cache: Any, keep: int) -> Any:
    """Logits of the last `keep` positions after feeding `ids` (appended to `cache`)."""
    import torch

    x = torch.tensor([ids], dtype=torch.long, device=model.device)
    return model(input_ids=x, cache=cache, use_cache=True, logits_to_keep=keep).logits[0]


class _Target:
    """Verifies with the target model: one forward over the pending token and proposals."""

    def __init__(self, model: Any, cache: Any):
        self.model, self.cache = model, cache

    def choices(self, pending: list[int], props: list[int], done: int) -> list[int]:
        return _forward(self.model, pending + props, self.cache, len(props) + 1).argmax(-1).tolist()

    def reject(self, n: int) -> None:
        if n:
            self.cache.crop(-n)


class _Known:
    """Verifies against the target's known greedy output (simulation). Past its end (an
    EOS the loop stops at) no proposal can match: -1 is no token id."""

    def __init__(self, target_ids: list[int]):
        self.ids = target_ids

    def choices(self, pending: list[int], props: list[int], done: int) -> list[int]:
        got = self.ids[done:done + len(props) + 1]
        return got + [-1] * (len(props) + 1 - len(got))

    def reject(self, n: int) -> None:
        pass


def _loop(verifier: Any, t_pending: list[int], max_new_tokens: int, eos: set[int], draft: Any, k: int,
          d_start: tuple[Any, list[int]] | None) -> Decoded:
    """`t_pending`: the prompt tokens the target's cache lacks; `d_start`: the draft's cache
    and the prompt tokens it lacks (speculative only)."""
    import torch

    speculative = draft is not None and k > 0
    d_cache, d_pending = d_start if speculative and d_start is not None else (None, [])
    out: list[int] = []
    counts = Rounds(k if speculative else 0, max_new_tokens)
    target_s = draft_s = 0.0
    with torch.inference_mode():
        while len(out) < max_new_tokens:
            n = counts.drafted(len(out))
            props: list[int] = []
            if n:
                t0 = time.perf_counter()
                feed = d_pending
                for _ in range(n):
                    props.append(int(_forward(draft, feed, d_cache, 1)[-1].argmax()))
                    feed = props[-1:]
                draft_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            choice = verifier.choices(t_pending, props, len(out))  # the target's token after each prefix
            target_s += time.perf_counter() - t0
            a = 0
            while a < n and props[a] == choice[a]:
                a += 1
            new = props[:a] + [choice[a]]
            stop = next((i for i, t in enumerate(new) if t in eos), None)
            if stop is not None:
                new = new[:stop + 1]
            counts.record(n, min(a, len(new)))  # an accepted EOS ends the answer: nothing after it counts
            out += new
            if stop is not None:
                break
            # Drop the rejected proposals: the target holds pending + all n proposals,
            # the draft holds its pending + the first n - 1 (the last was never fed).
            verifier.reject(n - a)
            if speculative and n == 0:  # the draft sat this round out (last token)
                d_pending = d_pending + [choice[0]]
            elif speculative:
                if a < n - 1:
                    d_cache.crop(-(n - 1 - a))
                d_pending = ([props[-1]] if a == n else []) + [choice[a]]
            t_pending = [choice[a]]
    return Decoded(out[:max_new_tokens], counts.rounds, counts.proposed, counts.accepted, target_s, draft_s,
                   counts.hist)


NO_PREFIX = Prefix([], {})


def decode(target: Any, prompt_ids: list[int], max_new_tokens: int, eos: set[int],
           draft: Any = None, k: int = 0, prefix: Prefix = NO_PREFIX) -> Decoded:
    """Greedy continuation of `prompt_ids` (at most max_new_tokens, stopping after an EOS
    token, which is kept). With `draft` and k > 0: speculative decoding with k draft
    tokens per round. `prefix`: the models' caches after the prompt's first tokens."""
    cache, pending = prefix.start(target, prompt_ids)
    d_start = prefix.start(draft, prompt_ids) if draft is not None and k > 0 else None
    return _loop(_Target(target, cache), pending, max_new_tokens, eos, draft, k, d_start)


def simulate(draft: Any, prompt_ids: list[int], target_ids: list[int], eos: set[int], k: int,
             max_new_tokens: int, prefix: Prefix = NO_PREFIX) -> Decoded:
    """The counts speculative decoding with `draft` would give on a prompt whose greedy
    target output is `target_ids` (ending with EOS, or cut at max_new_tokens). The budget
    must be the real one: near it the loop drafts fewer tokens, and the real loop does
    not know in advance where the EOS comes. With the `prefix` the decode used, the draft
    makes the very same calls."""
    d = _loop(_Known(target_ids), [], max_new_tokens, eos, draft, k, prefix.start(draft, prompt_ids))
    if d.token_ids != target_ids[:len(d.token_ids)]:
        raise RuntimeError("simulation left the target's known output: the loop's bookkeeping is broken")
    return d
