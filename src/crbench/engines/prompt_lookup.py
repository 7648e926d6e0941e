"""Draft tokens for speculative greedy decoding, looked up in the row's own text ("prompt
lookup", n-gram speculation: no draft model).

Reasoning traces repeat themselves: a phrase, a formula, a line of the prompt, a loop. When the
last n tokens (n = 3, 2, then 1) occurred earlier in the prompt or the output, the tokens that
followed them then are a guess for the tokens that come next. The engine feeds the guess with
the row's last token in one forward and keeps the longest prefix the model itself would have
chosen greedily, plus the model's own next token: the output is the greedy output, in fewer
forwards, each with more rows per weight read (decoding a few rows is bound by reading the
weights, so the extra rows cost little). On the reasoning-style generations of
benchmarks/generation_vs_lmeval.py, measured offline on the greedy outputs: 2.96 tokens per
forward with up to 4 draft tokens, 3.76 with up to 8.

The index maps each n-gram to where it was last followed by a token, updated as tokens come,
so a lookup costs O(1) and not a scan of the context.
"""

from __future__ import annotations

LONGEST_NGRAM = 3


class NgramDraft:
    """The context of one row (prompt and output so far) and its n-gram index."""

    def __init__(self, tokens: list[int]):
        self.context: list[int] = []
        self.next_after: dict[tuple[int, ...], int] = {}  # n-gram -> index of what followed
        self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        context = self.context
        for token in tokens:
            end = len(context)  # index `token` will have
            for n in range(1, min(LONGEST_NGRAM, end) + 1):
                self.next_after[tuple(context[end - n:end])] = end
            context.append(token)

    def propose(self, most: int) -> list[int]:
        """Up to `most` tokens that followed the longest earlier occurrence of the context's
        last n-gram (the most recent one), or [] if none occurred before."""
        if most <= 0:
            return []
        context = self.context
        for n in range(min(LONGEST_NGRAM, len(context)), 0, -1):
            found = self.next_after.get(tuple(context[len(context) - n:]))
            if found is not None:
                return context[found:found + most]
        return []
