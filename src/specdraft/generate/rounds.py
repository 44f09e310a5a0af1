"""The one round accounting of greedy speculative decoding.

A round drafts n tokens (n = k, fewer near the token budget: the last token of the budget
is decoded without drafting), the target verifies them in one forward, the proposals are
kept while they equal the target's own greedy choice, and the target's token at the first
mismatch (or after the last proposal) is appended. Every acceptance figure follows from
three counts and a histogram: rounds (target forwards), proposed and accepted draft
tokens, and drafting rounds by how many of their tokens were accepted
(specdraft.evaluate.stats.acceptance_stats turns them into rates).

Two callers, one rule (`Rounds`): the decoding loop (specdraft.generate.greedy), which
decides each round's accepted count by running the models, and `count_rounds`, which reads
the decisions off a teacher-forced match vector (one forward of the draft over the target's
answer instead of k per round: train_draft's held-out estimate). A test checks the two on
the same outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass
class Rounds:
    """Counts of one answer's speculative rounds with draft length `k` (0: plain
    decoding, one round per token) under a budget of `budget` new tokens (None: no
    budget, drafting is never cut short)."""

    k: int
    budget: int | None = None
    rounds: int = 0
    proposed: int = 0
    accepted: int = 0
    hist: list[int] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.hist = [0] * (self.k + 1) if self.k else []

    def drafted(self, done: int) -> int:
        """How many tokens the next round drafts after `done` output tokens: k, but none
        past the budget (the budget's last token is the target's own)."""
        if self.budget is None:
            return self.k
        return max(0, min(self.k, self.budget - done - 1))

    def record(self, n: int, accepted: int) -> None:
        """One round that drafted n tokens and kept `accepted` of them."""
        if not 0 <= accepted <= n:
            raise ValueError(f"a round cannot keep {accepted} of {n} drafted tokens")
        self.rounds += 1
        self.proposed += n
        self.accepted += accepted
        if n:  # a drafting round (one without drafts is plain decoding)
            self.hist[accepted] += 1


def count_rounds(match: Sequence[bool], k: int, budget: int | None = None) -> Rounds:
    """The rounds greedy speculative decoding goes through on an output of len(match)
    tokens, where match[i] says whether the draft, fed the output's first i tokens,
    proposes token i (its greedy choice equals the target's). Past the output's end nothing
    matches (the decoding loop stops at the output's last token, the EOS or the budget's)."""
    r = Rounds(k, budget)
    pos = 0
    while pos < len(match):
        n = r.drafted(pos)
        a = 0
        while a < n and pos + a < len(match) and match[pos + a]:
            a += 1
        r.record(n, a)
        pos += a + 1
    return r
