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
= target forwards, proposed = drafted tokens, accepted = drafted tokens kept.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any


@dataclasses.dataclass
class Decoded:
    token_ids: list[int]
    rounds: int  # target forwards (verify steps; with k = 0, one per token)
    proposed: int
    accepted: int
    target_s: float  # seconds inside target forwards
    draft_s: float  # seconds inside draft forwards


def _forward(model: Any, ids: list[int], cache: Any, keep: int, device: Any) -> Any:
    """Logits of the last `keep` positions after feeding `ids` (appended to `cache`)."""
    import torch

    x = torch.tensor([ids], dtype=torch.long, device=device)
    return model(input_ids=x, cache=cache, use_cache=True, logits_to_keep=keep).logits[0]


def decode(target: Any, prompt_ids: list[int], max_new_tokens: int, eos: set[int],
           draft: Any = None, k: int = 0) -> Decoded:
    """Greedy continuation of `prompt_ids` (at most max_new_tokens, stopping after an EOS
    token, which is kept). With `draft` and k > 0: speculative decoding with k draft
    tokens per round."""
    import torch
    from transformers import DynamicCache

    speculative = draft is not None and k > 0
    device = target.device
    t_cache = DynamicCache(config=target.config)
    d_cache = DynamicCache(config=draft.config) if speculative else None
    out: list[int] = []
    t_pending = list(prompt_ids)  # fed to the target next round
    d_pending = list(prompt_ids)  # fed to the draft next round
    rounds = proposed = accepted = 0
    target_s = draft_s = 0.0
    with torch.inference_mode():
        while len(out) < max_new_tokens:
            n = min(k, max_new_tokens - len(out) - 1) if speculative else 0
            props: list[int] = []
            if n:
                t0 = time.perf_counter()
                feed = d_pending
                for _ in range(n):
                    nxt = int(_forward(draft, feed, d_cache, 1, device)[-1].argmax())
                    props.append(nxt)
                    feed = [nxt]
                draft_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            logits = _forward(target, t_pending + props, t_cache, n + 1, device)
            choice = logits.argmax(-1).tolist()  # the target's greedy token after each fed prefix
            target_s += time.perf_counter() - t0
            rounds += 1
            proposed += n
            a = 0
            while a < n and props[a] == choice[a]:
                a += 1
            new = props[:a] + [choice[a]]
            stop = next((i for i, t in enumerate(new) if t in eos), None)
            if stop is not None:
                new = new[:stop + 1]
            accepted += min(a, len(new))
            out += new
            if stop is not None:
                break
            # Drop the rejected proposals: the target holds pending + all n proposals,
            # the draft holds its pending + the first n - 1 (the last was never fed).
            if n - a:
                t_cache.crop(-(n - a))
            if speculative and n == 0:  # the draft sat this round out (last token)
                d_pending = d_pending + [choice[0]]
            elif speculative:
                if a < n - 1:
                    d_cache.crop(-(n - 1 - a))
                d_pending = ([props[-1]] if a == n else []) + [choice[a]]
            t_pending = [choice[a]]
    return Decoded(out[:max_new_tokens], rounds, proposed, accepted, target_s, draft_s)
