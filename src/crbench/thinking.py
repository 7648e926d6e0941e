"""What a trace shows about thinking, one trace at a time: no model calls. `load_traces` turns
stored rows into traces, each bound to its item's scorer (the items reloaded from the rows'
stored task options, as rescoring does); the rest are pure functions of one trace.

The *trace* of a generation is its thinking (the text inside `<think> ... </think>`, or a
server's separate reasoning) when it has one, and otherwise its whole output: a model that does
not think out loud reasons, if at all, in its answer. Positions in a trace are counted in tokens
on a `TokenAxis` (see `token_axis`). Per-variant summaries are in `crbench.thinking_summary`.

* Reading at a budget (s1, arXiv 2501.19393; Dynasor, arXiv 2412.20993): the trace cut after B
  tokens, opened with `<think>` and never closed, read by the task's normal scorer as an
  unfinished output -- so only an explicit answer (`\\boxed{}`, "Answer:", "final answer") in
  the last `extract.TAIL_CHARS` of the prefix counts. A trace no longer than B is read whole,
  answer part included: the budget did not bind.
* First correct position (arXiv 2606.00206): the trace split into sentences and lines
  (`cues.split_sentences`); each segment read alone by the task's own scorer as a complete
  output with no thinking (every answer marker, the task's weak rule too: a last number, a
  label word, an option letter); the first segment read as the reference answer. Its position
  is the token count up to the segment's end.
* Loops: a truncated trace that ends in a repetition loop ends in a run of words that repeats
  with a fixed period (`loop_at_end`).
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType

from crbench.cues import DEFAULT_CUES, CueSet, Marker, split_sentences
from crbench.extract import THINK_OPEN, split_thinking
from crbench.records import StoredGeneration, VariantRecord
from crbench.tasks.base import Item

# read(text, hit_limit) -> (correct, extracted): the task's scorer, bound to one item.
Reader = Callable[[str, bool], "tuple[bool, str | None]"]
# tokenize(text) -> end offset (in characters) of each token of text.
Tokenize = Callable[[str], "list[int]"]


@dataclass(frozen=True)
class Trace:
    """One stored generation as the thinking analyses read it."""

    key: str
    variant: str
    task: str  # task label
    item_index: int
    repeat: int
    text: str  # the whole turn as the scorer reads it (`extract.as_written`)
    trace: str  # the thinking when there is one, else the output
    has_thinking: bool
    trace_tokens: int  # stored token count of `trace` (thinking or completion tokens)
    completion_tokens: int
    correct: bool  # the stored verdict on the whole output
    truncated: bool
    hit_limit: bool  # the engine stopped at its token limit
    read: Reader | None = field(default=None, compare=False, repr=False)  # None: no item data

    @property
    def question(self) -> tuple[str, int]:
        return (self.task, self.item_index)


@dataclass(frozen=True)
class TokenAxis:
    """Where each token of a trace ends, in characters; `exact` says whether a tokenizer made it
    (False: the character-proportional proxy)."""

    ends: tuple[int, ...]
    exact: bool

    def __len__(self) -> int:
        return len(self.ends)

    def tokens_to(self, char: int) -> int:
        """Tokens needed to cover the first `char` characters (a token cut in half counts)."""
        if char <= 0:
            return 0
        return min(bisect.bisect_left(self.ends, char) + 1, len(self.ends))

    def chars_in(self, tokens: int) -> int:
        """Characters covered by the first `tokens` tokens."""
        if tokens <= 0 or not self.ends:
            return 0
        return self.ends[min(tokens, len(self.ends)) - 1]


def token_axis(text: str, stored_tokens: int, tokenize: Tokenize | None = None) -> TokenAxis:
    """The token axis of `text`: from the model's tokenizer when given; otherwise the stored
    token count spread evenly over the characters (the runner's own proxy when it has no
    tokenizer), or one token per whitespace-separated word when no count was stored."""
    if not text:
        return TokenAxis((), tokenize is not None)
    if tokenize is not None:
        ends = sorted(min(max(end, 1), len(text)) for end in tokenize(text))
        if not ends or text[ends[-1]:].strip():  # trailing text the tokenizer left unmapped
            ends.append(len(text))
        return TokenAxis(tuple(ends), True)
    if stored_tokens <= 0:
        return TokenAxis(tuple(m.end() for m in re.finditer(r"\S+", text)), False)
    n = stored_tokens
    return TokenAxis(tuple(math.ceil((i + 1) * len(text) / n) for i in range(n)), False)


# --- from the store to traces --------------------------------------------------------------


def trace_of(stored: StoredGeneration, read: Reader | None) -> Trace | None:
    """The trace of a scored generation (None when it has no score yet)."""
    from crbench.scoring import as_written

    g, score = stored.generation, stored.score
    if score is None:
        return None
    style = json.loads(g.task_options).get("style") if g.task_options else None
    text = as_written(g.output, prompt=g.prompt_text, style=style, reasoning=g.reasoning)
    parts = split_thinking(text)
    thinks = bool(parts.thinking.strip())
    return Trace(
        key=g.key, variant=g.variant, task=g.task, item_index=g.item_index, repeat=g.repeat,
        text=text, trace=parts.thinking if thinks else parts.answer, has_thinking=thinks,
        trace_tokens=g.thinking_tokens if thinks else (g.answer_tokens or g.completion_tokens),
        completion_tokens=g.completion_tokens, correct=score.correct, truncated=score.truncated,
        hit_limit=g.hit_limit, read=read,
    )


def reader(module: ModuleType, item: Item) -> Reader:
    def read(text: str, hit_limit: bool) -> tuple[bool, str | None]:
        score = module.score(item, text, hit_limit=hit_limit)
        return bool(score.correct), score.extracted

    return read


def local_items(task_id: str, options: str) -> tuple[ModuleType, dict[int, Item]]:
    """A task's items as a row's stored options load them, from local data only: a file, or a
    generated family. Items that would come from the Hugging Face hub are not fetched (the
    analyses read the store and local files, never the network): InputError."""
    from crbench.errors import InputError
    from crbench.rescore import load_items
    from crbench.tasks import get_task

    module = get_task(task_id)
    parsed = json.loads(options or "{}")
    if not (isinstance(parsed, dict) and parsed.get("path")) and not hasattr(module, "generate"):
        raise InputError(None, "its items come from the Hugging Face hub and are not fetched "
                               "here; give the task a local data file")
    return module, load_items(task_id, options or "{}")


def load_traces(rows: Iterable[StoredGeneration]) -> tuple[list[Trace], list[str]]:
    """Traces of the scored, current rows, each bound to its item's scorer; and "label: why" for
    each task whose items could not be loaded (those traces get no reader: no budget or first
    correct reading, the other measures still count them)."""
    from crbench.errors import InputError

    groups: dict[tuple[str, str], list[StoredGeneration]] = defaultdict(list)
    for stored in rows:
        if not stored.superseded and stored.score is not None:
            groups[(stored.generation.task_id, stored.generation.task_options)].append(stored)
    traces: list[Trace] = []
    problems: list[str] = []
    for (task_id, options), group in sorted(groups.items()):
        module: ModuleType | None = None
        items: dict[int, Item] = {}
        try:
            module, items = local_items(task_id, options)
        except (InputError, OSError, KeyError, TypeError, ValueError) as exc:
            label = group[0].generation.task
            problems.append(f"{label}: {exc}")
        for stored in group:
            item = items.get(stored.generation.item_index)
            matches = item is not None and str(item.id) == stored.generation.item_id
            bound = reader(module, item) if module is not None and item and matches else None
            trace = trace_of(stored, bound)
            if trace is not None:
                traces.append(trace)
    traces.sort(key=lambda t: (t.variant, t.task, t.item_index, t.repeat))
    return traces, problems


def hf_tokenizer(path: str) -> Tokenize | None:
    """The token end offsets of a model folder's tokenizer (None when it has no fast one)."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception:  # noqa: BLE001 - no tokenizer, for whatever reason: the proxy is used
        return None
    if not getattr(tokenizer, "is_fast", False):
        return None

    def ends(text: str) -> list[int]:
        mapping = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [int(end) for _, end in mapping["offset_mapping"]]

    return ends


def variant_tokenizers(variants: Mapping[str, VariantRecord]) -> dict[str, Tokenize | None]:
    """Each variant's tokenizer, from its model folder or its base model's (compression keeps
    the tokenizer); None where no folder has one."""
    by_path: dict[str, Tokenize | None] = {}
    found: dict[str, Tokenize | None] = {}
    for name, variant in sorted(variants.items()):
        path = variant.model_path
        if path and path not in by_path:
            by_path[path] = hf_tokenizer(path)
        found[name] = by_path.get(path) if path else None
    for name, variant in variants.items():  # fall back to a sibling with the same base model
        if found[name] is None:
            same_base = [found[n] for n, v in sorted(variants.items())
                         if v.base_model == variant.base_model and found[n] is not None]
            found[name] = same_base[0] if same_base else None
    return found


# --- reading at a budget -------------------------------------------------------------------


def prefix_output(trace: str, axis: TokenAxis, budget: int) -> str:
    """The output an engine stopped after `budget` trace tokens would have left: the prefix,
    inside an unclosed thinking."""
    return f"{THINK_OPEN}\n{trace[:axis.chars_in(budget)]}"


def correct_at_budget(trace: Trace, axis: TokenAxis, budget: int) -> bool | None:
    """Whether the trace read at `budget` tokens gives the right answer (None: no item data)."""
    if trace.read is None:
        return None
    if budget >= len(axis):
        return trace.read(trace.text, trace.hit_limit)[0]
    return trace.read(prefix_output(trace.trace, axis, budget), True)[0]


def default_budgets(longest: int, points: int = 12) -> list[int]:
    """Budgets for a curve: powers of two below the longest trace (at most `points` - 1 of them,
    the largest kept), then the longest trace itself (where no trace is cut)."""
    if longest <= 0:
        return [0]
    powers = [2**k for k in range(longest.bit_length()) if 2**k < longest]
    return [*powers[-(points - 1):], longest]


# --- first correct statement ---------------------------------------------------------------


@dataclass(frozen=True)
class FirstCorrect:
    """Where the reference answer is first stated in a trace."""

    start: int  # characters: the segment that states it
    end: int
    token: int  # tokens up to the end of that segment
    trace_tokens: int  # tokens of the whole trace, on the same axis

    @property
    def after(self) -> int:
        """Tokens spent after the right answer was first stated."""
        return self.trace_tokens - self.token

    @property
    def overthinking_share(self) -> float:
        return self.after / self.trace_tokens if self.trace_tokens else 0.0


def first_correct(trace: Trace, axis: TokenAxis) -> FirstCorrect | None:
    """The first segment of the trace that the task's scorer reads as the right answer."""
    if trace.read is None:
        return None
    for segment in split_sentences(trace.trace):
        if trace.read(segment.text, False)[0]:
            return FirstCorrect(segment.start, segment.end, axis.tokens_to(segment.end),
                                len(axis))
    return None


def abandoned_correct(trace: Trace, found: FirstCorrect | None) -> bool:
    """A wrong final answer although the trace had stated the right one."""
    return not trace.correct and found is not None


# --- hesitation and loops ------------------------------------------------------------------


def hesitation(trace: Trace, cues: CueSet = DEFAULT_CUES) -> list[Marker]:
    return cues.markers(trace.trace)


def per_thousand(count: int, tokens: int) -> float:
    return 1000.0 * count / tokens if tokens else math.nan


@dataclass(frozen=True)
class Loop:
    """A repetition loop at the end of a text: a block of `period` words repeated to the end."""

    period: int  # words per repeated block
    words: int  # words in the loop, from its first repetition-covered word to the end
    start: int  # character offset where the loop begins

    @property
    def repeats(self) -> float:
        return self.words / self.period


_WORD = re.compile(r"\w+|[^\w\s]")


def loop_at_end(text: str, *, max_period: int = 100, min_repeats: float = 3.0,
                min_words: int = 20, window: int = 2000) -> Loop | None:
    """The repetition loop the text ends in, if any: the smallest period p (in words and
    punctuation marks, case-folded) such that the last at least `min_repeats` * p and
    `min_words` words each equal the word p before them; None when there is none."""
    matches = list(_WORD.finditer(text))[-window:]
    words = [m.group().casefold() for m in matches]
    n = len(words)
    for period in range(1, min(max_period, n // 2) + 1):
        run = 0  # trailing words equal to the word `period` before them
        while run < n - period and words[n - 1 - run] == words[n - 1 - run - period]:
            run += 1
        span = run + period
        if span >= min_repeats * period and span >= min_words:
            return Loop(period, span, matches[n - span].start())
    return None


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan
