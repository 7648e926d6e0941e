"""The one interface every generation engine implements.

    engine.generate(prompts, params) -> Iterator[tuple[int, Generation]]

yields (index into `prompts`, Generation) as each generation finishes, in any order, so the
runner can commit each one the moment it exists. A prompt is a completion string or a list of
chat messages ({"role", "content"}); engines that talk to a chat template apply it themselves.

A prompt whose generation still fails after the engine's retries (a server that keeps answering
500, a request that keeps timing out) is yielded as a `GenerationFailed` in place of its
Generation, and the other prompts go on; the runner records it per item. It is never dropped
and never turned into an empty text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    # Budget forcing (see crbench/engines/budget.py): once `thinking_budget` thinking tokens are
    # spent, `</think>` and `answer_cue` (None: budget.ANSWER_CUE) are appended and the model
    # answers; an end of thinking before `min_thinking` tokens is replaced by "Wait".
    thinking_budget: int | None = None
    min_thinking: int | None = None
    answer_cue: str | None = None

    def __post_init__(self) -> None:
        if self.thinking_budget is not None and self.thinking_budget < 0:
            raise ValueError(f"thinking_budget must be >= 0, not {self.thinking_budget}")
        if self.min_thinking is not None and self.min_thinking < 0:
            raise ValueError(f"min_thinking must be >= 0, not {self.min_thinking}")
        if (self.thinking_budget is not None and self.min_thinking is not None
                and self.min_thinking > self.thinking_budget):
            raise ValueError(f"min_thinking ({self.min_thinking}) is above thinking_budget "
                             f"({self.thinking_budget})")

    @property
    def forces_thinking(self) -> bool:
        """Whether budget forcing is asked for (either bound set)."""
        return self.thinking_budget is not None or bool(self.min_thinking)


@dataclass
class Generation:
    text: str  # what the model wrote (for servers that split it out: the answer part)
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS / stop string) or "length" (hit max_new_tokens)
    wall_s: float
    reasoning: str | None = None  # a server's separate `reasoning_content`, when it sends one
    token_ids: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hit_limit(self) -> bool:
        return self.finish_reason == "length"


class GenerationFailed(Exception):
    """The generation for prompt `index` failed after `attempts` tries; `error` says why."""

    def __init__(self, index: int, error: str, attempts: int):
        self.index = index
        self.error = error
        self.attempts = attempts
        super().__init__(f"{error} (after {attempts} attempt{'s' if attempts != 1 else ''})")


class Engine(Protocol):
    name: str

    def generate(
        self, prompts: list[Prompt], params: SamplingParams
    ) -> Iterator[tuple[int, Generation | GenerationFailed]]: ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...
