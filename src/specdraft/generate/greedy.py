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

from specdraft.generate import eagle
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
    """Token ids every prompt of a pass starts with, and each model's state after them (a
    DynamicCache; for an EAGLE head its step-0 entries and the last position's features)."""

    ids: list[int]
    caches: dict[Any, Any]

    def start(self, model: Any, prompt_ids: list[int]) -> tuple[Any, list[int]]:
        """(state, tokens still to feed) for `model` on `prompt_ids`: a copy of the prefix's
        state and the rest of the prompt where the prompt extends the prefix, else an empty
        state and the whole prompt."""
        head, rest = eagle.is_head(model), self.rest(model, prompt_ids)
        if len(rest) < len(prompt_ids):
            st = self.caches[model]
            return (eagle.copy_state(st) if head else copy.deepcopy(st)), rest
        return (eagle.fresh(model) if head else _empty(model)), rest

    def rest(self, model: Any, prompt_ids: list[int]) -> list[int]:
        """The prompt's tokens `model` still has to read after the prefix's state."""
        n = len(self.ids)
        if model in self.caches and len(prompt_ids) > n and prompt_ids[:n] == self.ids:
            return list(prompt_ids[n:])
        return list(prompt_ids)


def prefill(models: list[Any], ids: list[int]) -> Prefix:
    """The Prefix of `ids` for each model (one forward each; an EAGLE head reads the
    features of the target, models[0])."""
    import torch

    caches: dict[Any, Any] = {}
    heads = [m for m in models if eagle.is_head(m)]
    with torch.inference_mode():
        for m in models:
            if eagle.is_head(m):
                continue
            caches[m] = _empty(m)
            if m is models[0] and heads:
                feats = eagle.target_features(m, ids, caches[m], 1, heads[0].aux)[1]
            else:
                _forward(m, ids, caches[m], 1)
        for h in heads:
            if h.aux != heads[0].aux:
                feats = eagle.target_features(models[0], ids, _empty(models[0]), 1, h.aux)[1]
            caches[h] = eagle.prefill_head(h, ids, feats)
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
    """Verifies with the target model: one forward over the pending token and proposals.
    With `layers` (an EAGLE head drafts) it also keeps the fed rows' features."""

    def __init__(self, model: Any, cache: Any, layers: list[int] | None = None):
        self.model, self.cache, self.layers, self.feats = model, cache, layers, None

    def choices(self, pending: list[int], props: list[int], done: int) -> list[int]:
        if self.layers is None:
            return _forward(self.model, pending + props, self.cache, len(props) + 1).argmax(-1).tolist()
        logits, self.feats = eagle.target_features(self.model, pending + props, self.cache, len(props) + 1,
                                                   self.layers)
        return logits.argmax(-1).tolist()

    def kept(self, rows: int) -> Any:
        """Features of the first `rows` rows of the last verify (the ones kept)."""
        return self.feats[:rows]

    def reject(self, n: int) -> None:
        if n:
            self.cache.crop(-n)


class _Known:
    """Verifies against the target's known greedy output (simulation). Past its end (an
    EOS the loop stops at) no proposal can match: -1 is no token id. `feats`: the target's
    features of positions `pos`.. from one teacher-forced pass (an EAGLE head drafts)."""

    def __init__(self, target_ids: list[int], feats: Any = None, pos: int = 0):
        self.ids, self.feats, self.pos = target_ids, feats, pos

    def choices(self, pending: list[int], props: list[int], done: int) -> list[int]:
        got = self.ids[done:done + len(props) + 1]
        return got + [-1] * (len(props) + 1 - len(got))

    def kept(self, rows: int) -> Any:
        out = self.feats[self.pos:self.pos + rows]
        self.pos += rows
        return out

    def reject(self, n: int) -> None:
        pass


class _ModelDraft:
    """A separate draft model: its own KV cache and the tokens it has not read yet."""

    def __init__(self, model: Any, cache: Any, pending: list[int]):
        self.model, self.cache, self.pending = model, cache, pending

    def ready(self, seq: list[int]) -> bool:
        return True

    def propose(self, seq: list[int], n: int) -> list[int]:
        props: list[int] = []
        feed = self.pending
        for _ in range(n):
            props.append(int(_forward(self.model, feed, self.cache, 1)[-1].argmax()))
            feed = props[-1:]
        return props

    def accept(self, props: list[int], a: int, token: int, feats: Any) -> None:
        """Drop the rejected proposals: the cache holds pending + the first n - 1 proposals
        (the last was never fed)."""
        n = len(props)
        if n == 0:  # the draft sat this round out (last token, or the target's first)
            self.pending = self.pending + [token]
            return
        if a < n - 1:
            self.cache.crop(-(n - 1 - a))
        self.pending = ([props[-1]] if a == n else []) + [token]


class _HeadDraft:
    """An EAGLE head (specdraft.generate.eagle): it drafts from the target's features of the
    positions verified so far, so it sits out the first round (the prompt's prefill)."""

    def __init__(self, state: Any):
        self.state = state

    def ready(self, seq: list[int]) -> bool:
        st = self.state
        return st.pending is not None and st.n_ctx + len(st.pending) == len(seq) - 1

    def propose(self, seq: list[int], n: int) -> list[int]:
        return self.state.propose(seq, n)

    def accept(self, props: list[int], a: int, token: int, feats: Any) -> None:
        self.state.read(feats)


def _loop(verifier: Any, t_pending: list[int], max_new_tokens: int, eos: set[int], drafter: Any, k: int,
          prompt_ids: list[int]) -> Decoded:
    """`t_pending`: the prompt tokens the target's cache lacks; `drafter`: a _ModelDraft or
    _HeadDraft (speculative), or None."""
    import torch

    speculative = drafter is not None and k > 0
    out: list[int] = []
    counts = Rounds(k if speculative else 0, max_new_tokens)
    target_s = draft_s = 0.0
    with torch.inference_mode():
        while len(out) < max_new_tokens:
            seq = prompt_ids + out
            n = counts.drafted(len(out)) if speculative and drafter.ready(seq) else 0
            props: list[int] = []
            if n:
                t0 = time.perf_counter()
                props = drafter.propose(seq, n)
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
            verifier.reject(n - a)  # the target holds pending + all n proposals
            if speculative:
                t0 = time.perf_counter()
                drafter.accept(props, a, choice[a], verifier.kept(len(t_pending) + a) if isinstance(
                    drafter, _HeadDraft) else None)
                draft_s += time.perf_counter() - t0
            t_pending = [choice[a]]
    return Decoded(out[:max_new_tokens], counts.rounds, counts.proposed, counts.accepted, target_s, draft_s,
                   counts.hist)


def _drafter(draft: Any, prefix: Prefix, prompt_ids: list[int]) -> Any:
    state, rest = prefix.start(draft, prompt_ids)
    return _HeadDraft(state) if eagle.is_head(draft) else _ModelDraft(draft, state, rest)


NO_PREFIX = Prefix([], {})


def decode(target: Any, prompt_ids: list[int], max_new_tokens: int, eos: set[int],
           draft: Any = None, k: int = 0, prefix: Prefix = NO_PREFIX) -> Decoded:
    """Greedy continuation of `prompt_ids` (at most max_new_tokens, stopping after an EOS
    token, which is kept). With `draft` (a model or an EAGLE head) and k > 0: speculative
    decoding with k draft tokens per round. `prefix`: the models' caches after the
    prompt's first tokens."""
    cache, pending = prefix.start(target, prompt_ids)
    speculative = draft is not None and k > 0
    drafter = _drafter(draft, prefix, prompt_ids) if speculative else None
    layers = draft.aux if speculative and eagle.is_head(draft) else None
    return _loop(_Target(target, cache, layers), pending, max_new_tokens, eos, drafter, k, list(prompt_ids))


def head_features(target: Any, prompt_ids: list[int], target_ids: list[int], layers: list[int],
                  prefix: Prefix = NO_PREFIX) -> Any:
    """The target's features (eagle.target_features) over the prompt's tokens after the
    prefix and the known output but its last token: what an EAGLE head reads in decoding."""
    import torch

    cache, rest = prefix.start(target, prompt_ids)
    with torch.inference_mode():
        return eagle.target_features(target, rest + list(target_ids[:-1]), cache, 1, layers)[1]


def simulate(draft: Any, prompt_ids: list[int], target_ids: list[int], eos: set[int], k: int,
             max_new_tokens: int, prefix: Prefix = NO_PREFIX, target: Any = None, features: Any = None) -> Decoded:
    """The counts speculative decoding with `draft` would give on a prompt whose greedy
    target output is `target_ids` (ending with EOS, or cut at max_new_tokens). The budget
    must be the real one: near it the loop drafts fewer tokens, and the real loop does
    not know in advance where the EOS comes. With the `prefix` the decode used, the draft
    makes the very same calls. An EAGLE head needs the `target`: one teacher-forced
    forward over the prompt and the known output gives every feature the decode's
    verifies would (equal up to float rounding: the decode computes them a few rows at a
    time). `features`: those features, when the caller keeps them (head_features)."""
    known = _Known(target_ids)
    t_pending: list[int] = []
    if eagle.is_head(draft):
        if target is None:
            raise ValueError("simulating an EAGLE head needs the target (its features)")
        if features is None:
            features = head_features(target, prompt_ids, target_ids, draft.aux, prefix)
        t_pending = prefix.rest(target, prompt_ids)
        if len(features) != len(t_pending) + len(target_ids) - 1:
            raise ValueError("features must cover the prompt's uncached tokens and the output but its last token")
        known = _Known(target_ids, features)
    d = _loop(known, t_pending, max_new_tokens, eos, _drafter(draft, prefix, prompt_ids), k, list(prompt_ids))
    if d.token_ids != target_ids[:len(d.token_ids)]:
        raise RuntimeError("simulation left the target's known output: the loop's bookkeeping is broken")
    return d
