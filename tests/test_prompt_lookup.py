"""Drafts for speculative decoding looked up in the row's own text."""

from __future__ import annotations

from crbench.engines.prompt_lookup import NgramDraft


def test_the_longest_recent_match_proposes_what_followed_it():
    draft = NgramDraft([1, 2, 3, 4, 5, 6, 7, 9, 2, 3, 4, 8, 8, 1, 2, 3])
    # "2 3" and "1 2 3" occurred before; the longest (3 tokens) was followed by 4 5 6 7 9
    assert draft.propose(4) == [4, 5, 6, 7]
    draft.extend([4])  # "2 3 4" last occurred at 8..10, followed by 8 8 1
    assert draft.propose(3) == [8, 8, 1]


def test_a_match_of_the_last_token_alone_proposes_what_followed_it():
    draft = NgramDraft([5, 6, 7, 8, 9, 3, 5])
    assert draft.propose(3) == [6, 7, 8]
    assert draft.propose(10) == [6, 7, 8, 9, 3, 5]  # up to the end of the context


def test_nothing_to_propose():
    assert NgramDraft([1, 2, 3]).propose(4) == []  # 3 never occurred before
    assert NgramDraft([1, 2, 1]).propose(0) == []
