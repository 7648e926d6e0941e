"""Budget forcing (s1, arXiv 2501.19393), shared by every engine.

`SamplingParams.thinking_budget = N`: once N thinking tokens are spent and the thinking is still
open, `</think>` and the answer cue are appended and the model goes on to answer.
`SamplingParams.min_thinking = M`: an end of thinking (`</think>`, or the end of the sequence)
before M thinking tokens is taken out and replaced by "Wait", and the model goes on thinking.

Thinking is open from the start of the completion when the prompt ends inside a thinking
block (prefilled with `<think>`), else from the token that completes a `<think>` the model
writes itself. Thinking tokens are the generated (or inserted) tokens after that point and
before the tokens that spell `</think>` (one special token in R1-style tokenizers, or
several).

`ThinkingControl` watches one sequence token by token: the engine appends each sampled token and
calls `step`, which answers None (go on) or an `Edit`: drop the last `drop` tokens, then feed
`insert` before sampling again. The hf engine applies edits inside its decode loop; vLLM and
the OpenAI-compatible engine replay each finished request through `step` and send the next
request (prompt + kept tokens + inserted tokens) where it asks for an edit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crbench.engines.base import SamplingParams
from crbench.extract import THINK_CLOSE, THINK_OPEN

# The one answer cue after a forced `</think>` (a task may pass its own: SamplingParams.answer_cue).
ANSWER_CUE = "\n\nFinal answer: "
WAIT_TEXT = "Wait"
# A tag of 8 ASCII characters spans at most 8 tokens, plus one that starts before it.
TAIL_TOKENS = 9


@dataclass(frozen=True)
class Edit:
    """Drop the last `drop` tokens of the sequence, then feed `insert`."""

    drop: int
    insert: list[int]


@dataclass(frozen=True)
class ForcingTokens:
    """Token ids inserted by budget forcing, for one tokenizer and one answer cue."""

    close: list[int]  # `</think>` + answer cue
    wait: list[int]


def forcing_tokens(tokenizer: Any, params: SamplingParams) -> ForcingTokens:
    cue = ANSWER_CUE if params.answer_cue is None else params.answer_cue

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    return ForcingTokens(close=ids(THINK_CLOSE + cue), wait=ids(WAIT_TEXT))


def prompt_opens_thinking(prompt_text: str) -> bool:
    """A prompt that ends inside a thinking block (prefilled with `<think>`, maybe with the
    start of the thinking): the completion starts inside the thinking."""
    opened = prompt_text.rfind(THINK_OPEN)
    return opened >= 0 and prompt_text.rfind(THINK_CLOSE) < opened


@dataclass
class ThinkingControl:
    """Budget forcing for one sequence (see the module docstring)."""

    params: SamplingParams
    forced: ForcingTokens
    eos_ids: frozenset[int]
    decode: Callable[[list[int]], str]  # token ids -> text, special tokens kept
    open_at: int | None = None  # index in the completion where thinking starts
    closed: bool = False
    forced_close: bool = False
    waits: int = 0
    thinking_tokens: int = 0  # final once closed
    inserted: list[tuple[int, int]] = field(default_factory=list)  # (at, tokens) per edit

    @classmethod
    def start(cls, params: SamplingParams, forced: ForcingTokens, eos_ids: list[int],
              decode: Callable[[list[int]], str], prompt_text: str) -> ThinkingControl:
        opened = 0 if prompt_opens_thinking(prompt_text) else None
        return cls(params, forced, frozenset(eos_ids), decode, open_at=opened)

    @property
    def thinking(self) -> bool:
        return self.open_at is not None and not self.closed

    def count(self, tokens: list[int]) -> int:
        """Thinking tokens so far (all of the thinking, while it is open)."""
        if self.open_at is None:
            return 0
        return self.thinking_tokens if self.closed else len(tokens) - self.open_at

    def at_start(self) -> Edit | None:
        """Before the first token: a budget of 0 closes a prefilled thinking at once."""
        if self.thinking and self.params.thinking_budget == 0:
            return self._close([], drop=0, forced=True)
        return None

    def step(self, tokens: list[int]) -> Edit | None:
        """`tokens`: the completion so far, its last token just sampled (not yet fed)."""
        if self.closed:
            return None
        if self.open_at is None:
            if THINK_OPEN in self.decode(tokens[-TAIL_TOKENS:]):
                self.open_at = len(tokens)
            return None
        tag = self._tag_length(tokens)
        if tag:
            return self._early_end(tokens, tag) or self._close(tokens, drop=tag, forced=False,
                                                               keep_tag=True)
        if tokens[-1] in self.eos_ids:
            return self._early_end(tokens, 1)  # None: the sequence ends, thinking unclosed
        budget = self.params.thinking_budget
        if budget is not None and self.count(tokens) >= budget:
            return self._close(tokens, drop=self.count(tokens) - budget, forced=True)
        return None

    def force_close(self, tokens: list[int]) -> Edit | None:
        """Close now (a server stopped a request at the budget, counting its own tokens)."""
        return self._close(tokens, drop=0, forced=True) if self.thinking else None

    def record(self) -> dict[str, Any]:
        """What happened, for Generation.extra["thinking"]."""
        return {
            "thinking_budget": self.params.thinking_budget,
            "min_thinking": self.params.min_thinking,
            "opened": self.open_at is not None,
            "closed": self.closed,
            "thinking_tokens": self.thinking_tokens if self.closed else None,
            "forced_close": self.forced_close,
            "waits": self.waits,
            "inserted": [list(span) for span in self.inserted],  # [start, length] in the output
        }

    # --- helpers ------------------------------------------------------------------------------

    def _tag_length(self, tokens: list[int]) -> int:
        """How many of the last tokens spell a `</think>` that ends in the last token (0: none)."""
        assert self.open_at is not None
        thinking = tokens[self.open_at:]
        if THINK_CLOSE not in self.decode(thinking[-TAIL_TOKENS:]):
            return 0
        for k in range(1, min(TAIL_TOKENS, len(thinking)) + 1):
            if THINK_CLOSE in self.decode(thinking[-k:]):
                return k
        return 0  # pragma: no cover - the full tail contained it

    def _early_end(self, tokens: list[int], drop: int) -> Edit | None:
        """The thinking ends after fewer than min_thinking tokens: "Wait" in place of the end
        (unless that would pass the budget, when the end stands)."""
        kept = len(tokens) - drop - (self.open_at or 0)
        wanted = self.params.min_thinking or 0
        budget = self.params.thinking_budget
        if kept >= wanted or (budget is not None and kept + len(self.forced.wait) > budget):
            return None
        self.waits += 1
        self.inserted.append((len(tokens) - drop, len(self.forced.wait)))
        return Edit(drop, list(self.forced.wait))

    def _close(self, tokens: list[int], drop: int, forced: bool, keep_tag: bool = False
               ) -> Edit | None:
        self.closed = True
        self.forced_close = forced
        self.thinking_tokens = len(tokens) - drop - (self.open_at or 0)
        if keep_tag:  # the model closed it: nothing to change
            return None
        self.inserted.append((len(tokens) - drop, len(self.forced.close)))
        return Edit(drop, list(self.forced.close))


# --- engines that generate in requests (vLLM, servers) ----------------------------------------


def stage_limit(control: ThinkingControl, tokens: list[int], params: SamplingParams) -> int:
    """max_tokens of the next request: what is left of max_new_tokens, and no more than the
    thinking budget left while the thinking is open (or may still open)."""
    room = params.max_new_tokens - len(tokens)
    budget = params.thinking_budget
    if budget is None or control.closed:
        return room
    return max(1, min(room, budget - control.count(tokens)))


def replay(control: ThinkingControl, tokens: list[int], new: list[int]) -> bool:
    """Feed a request's tokens through the control, as if sampled one by one; at its first edit
    apply it (the rest of the request is dropped) and say True. With no `new` tokens, the last
    token of `tokens` is the one checked."""
    checks: list[int | None] = list(new) or [None]
    for token in checks:
        if token is not None:
            tokens.append(token)
        edit = control.step(tokens)
        if edit is not None:
            del tokens[len(tokens) - edit.drop:]
            tokens.extend(edit.insert)
            return True
    return False
