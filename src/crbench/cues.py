"""Cue words in reasoning text: hesitation markers, and a rule-based sentence labeller.

One module for every analysis that reads behaviour out of a trace: the thinking analyses
(`crbench.thinking`: hesitation markers per 1,000 thinking tokens) and the behaviour labeller
of the importance analysis (sentences labelled by what the model is doing there).

Behaviour categories follow the taxonomy of Venhoff et al. ("Understanding reasoning in thinking
language models via steering vectors"), as used by arXiv 2504.02010 v2: initializing, deduction,
adding-knowledge, example-testing, uncertainty-estimation, backtracking; the last four are the
target behaviours. A sentence gets the first category, in `PRIORITY` order, one of whose cue
phrases it contains (case-insensitive, whole words), and "other" when none does. This is a
transparent stand-in for the paper's GPT-4o labels: cheap, deterministic, and wrong in known
ways (a "wait" that introduces a check is labelled backtracking).

Hesitation markers are counted wherever they occur as whole words ("but" in "butter" is not one).
Both lists are configurable: `CueSet.from_mapping` builds one from plain data (a spec or TOML
table) and raises `InputError` on anything malformed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from crbench.errors import InputError

TARGET_BEHAVIOURS = ("backtracking", "uncertainty-estimation", "example-testing",
                     "adding-knowledge")
OTHER = "other"

# "hmm*": also "hmmm"; a marker is reported under its phrase without the "*".
HESITATION_MARKERS = ("wait", "alternatively", "hmm*", "but", "let me double-check")

# Cue phrases per category; a phrase matches as whole words, any run of spaces or hyphens
# between its words ("double check" = "double-check"). A trailing "*" matches any word ending.
BEHAVIOUR_CUES: dict[str, tuple[str, ...]] = {
    "backtracking": (
        "wait", "actually", "no wait", "that's not right", "that is not right", "that's wrong",
        "that is wrong", "i made a mistake", "mistake", "let me reconsider", "reconsider",
        "let me re*", "let me try again", "scratch that", "on second thought", "hold on",
        "i was wrong", "going back", "start over", "instead",
    ),
    "uncertainty-estimation": (
        "hmm*", "maybe", "perhaps", "not sure", "i'm not sure", "unsure", "i think", "might",
        "possibly", "probably", "it seems", "seems", "i wonder", "unclear", "confus*",
        "i'm confused", "doubt",
    ),
    "example-testing": (
        "for example", "for instance", "let's test", "let me test", "test", "testing",
        "let's try", "let me try", "plug in", "plugging", "substitut*", "let's check",
        "let me check", "check", "verify", "double-check", "suppose", "let's say", "e.g",
        "sanity check",
    ),
    "adding-knowledge": (
        "recall", "i remember", "i know that", "we know that", "it is known", "well-known",
        "by definition", "defined as", "formula", "theorem", "the rule", "a fact", "according to",
        "property", "identity",
    ),
    "initializing": (
        "the problem", "the question", "we need to", "i need to", "let's start", "let me start",
        "first, let me", "okay, so", "ok, so", "alright, so", "we are given", "i'm given",
        "we're asked", "i'm asked",
    ),
    "deduction": (
        "therefore", "so", "thus", "hence", "which means", "this means", "implies", "it follows",
        "then", "because", "since", "consequently",
    ),
}
PRIORITY = ("backtracking", "uncertainty-estimation", "example-testing", "adding-knowledge",
            "initializing", "deduction")


def phrase_pattern(phrase: str) -> str:
    """Regex for a cue phrase: whole words, flexible spacing/hyphens, optional `*` suffix."""
    words = [w for w in re.split(r"[\s-]+", phrase.strip().lower()) if w]
    if not words:
        raise ValueError("empty cue phrase")
    parts = []
    for word in words:
        star = word.endswith("*")
        body = re.escape(word.rstrip("*")).replace("'", "['’]")  # straight or curly apostrophe
        parts.append(body + (r"\w*" if star else ""))
    return r"(?<![\w])" + r"[\s-]+".join(parts) + r"(?![\w])"


def _compile(phrases: Sequence[str]) -> re.Pattern[str]:
    # Longest first, so "let me double-check" wins over a shorter phrase inside it.
    ordered = sorted(set(phrases), key=len, reverse=True)
    return re.compile("|".join(f"(?:{phrase_pattern(p)})" for p in ordered), re.I)


@dataclass(frozen=True)
class Marker:
    """One hesitation marker found in a text: which one, and where (character offsets)."""

    marker: str
    start: int
    end: int


@dataclass(frozen=True)
class Segment:
    """A sentence (or line) of a trace, with its character offsets in the trace."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class CueSet:
    """The hesitation markers and the behaviour cue phrases, compiled once."""

    hesitation: tuple[str, ...] = HESITATION_MARKERS
    behaviours: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: BEHAVIOUR_CUES)
    priority: tuple[str, ...] = PRIORITY

    @cached_property
    def _marker_patterns(self) -> list[tuple[str, re.Pattern[str]]]:
        return [(m.rstrip("*"), re.compile(phrase_pattern(m), re.I)) for m in self.hesitation]

    @cached_property
    def _behaviour_patterns(self) -> list[tuple[str, re.Pattern[str]]]:
        return [(name, _compile(self.behaviours[name])) for name in self.priority
                if self.behaviours.get(name)]

    @property
    def marker_names(self) -> tuple[str, ...]:
        return tuple(m.rstrip("*") for m in self.hesitation)

    def markers(self, text: str) -> list[Marker]:
        """Every hesitation marker in `text`, in order; overlapping matches keep the longer."""
        found = [Marker(marker, m.start(), m.end())
                 for marker, pattern in self._marker_patterns for m in pattern.finditer(text)]
        found.sort(key=lambda k: (k.start, -(k.end - k.start)))
        kept: list[Marker] = []
        for marker in found:
            if not kept or marker.start >= kept[-1].end:
                kept.append(marker)
        return kept

    def marker_counts(self, text: str) -> Counter[str]:
        return Counter(m.marker for m in self.markers(text))

    def label(self, sentence: str) -> str:
        """The behaviour of one sentence: the first category in priority order with a cue."""
        for name, pattern in self._behaviour_patterns:
            if pattern.search(sentence):
                return name
        return OTHER

    def label_trace(self, text: str) -> list[tuple[Segment, str]]:
        return [(segment, self.label(segment.text)) for segment in split_sentences(text)]

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], source: str | None = None) -> CueSet:
        """A cue set from plain data: {"hesitation": [...], "behaviours": {name: [...]},
        "priority": [...]}; every key optional (the defaults fill in). Bad data: InputError."""
        unknown = sorted(set(data) - {"hesitation", "behaviours", "priority"})
        if unknown:
            raise InputError(source, f"unknown cue settings {unknown}", "cues")
        hesitation = _phrases(data.get("hesitation", HESITATION_MARKERS), source, "hesitation")
        raw = data.get("behaviours", BEHAVIOUR_CUES)
        if not isinstance(raw, Mapping):
            raise InputError(source, "cue behaviours should be a table of phrase lists", "cues")
        behaviours = {str(k): _phrases(v, source, f"behaviours.{k}") for k, v in raw.items()}
        priority = _phrases(data.get("priority", tuple(behaviours)), source, "priority")
        missing = [name for name in priority if name not in behaviours]
        if missing:
            raise InputError(source, f"priority names unknown behaviours {missing}", "cues")
        return cls(hesitation, behaviours, priority)


def _phrases(value: object, source: str | None, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InputError(source, "should be a list of phrases", f"cues.{where}")
    phrases = tuple(value)
    for phrase in phrases:
        if not isinstance(phrase, str) or not re.search(r"\w", phrase):
            raise InputError(source, f"not a cue phrase: {phrase!r}", f"cues.{where}")
    return phrases


DEFAULT_CUES = CueSet()

# A sentence ends at . ! ? (followed by space or the end) or at a line break; "3.5" and
# "e.g.x" stay whole.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n+")


def split_sentences(text: str) -> list[Segment]:
    """Sentences and lines of `text` with their offsets (end: just past the terminator).

    Whitespace between sentences belongs to no segment; empty segments are dropped.
    """
    segments: list[Segment] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.start() if match.group().startswith("\n") else match.end()
        _add_segment(segments, text, start, end)
        start = match.end()
    _add_segment(segments, text, start, len(text))
    return segments


def _add_segment(segments: list[Segment], text: str, start: int, end: int) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if stripped:
        lead = len(piece) - len(piece.lstrip())
        begin = start + lead
        segments.append(Segment(begin, begin + len(stripped), stripped))
