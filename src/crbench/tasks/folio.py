"""FOLIO: does a conclusion follow from natural-language premises? True / False / Uncertain.

Data: hub `yale-nlp/FOLIO` validation split (203 rows), or a local JSONL file with `premises`
(one newline-separated string, as in v2, or a list of strings, as in v0.0), `conclusion` and
`label`; other fields (`premises-FOL`, `story_id`, `example_id`, ...) are allowed. The label
"Unknown", used by some copies, is read as "Uncertain".
Scoring: the final stated label (see `crbench.extract`), case- and markdown-insensitive;
"unknown", "cannot be determined" and similar phrases mean Uncertain.
"""

from __future__ import annotations

import re
from pathlib import Path

from crbench.errors import InputError
from crbench.extract import clean, extract
from crbench.tasks.base import Item, Score
from crbench.tasks.common import (
    build_items,
    field,
    fill_prompt,
    no_options,
    read_rows,
    row_id,
    row_place,
    score_from,
)

NAME = "folio"
HUB = ("yale-nlp/FOLIO", "validation")
LABELS = ("True", "False", "Uncertain")

PROMPT = (
    "Use logical deduction to decide whether the conclusion follows from the premises, using "
    "nothing but the premises. The conclusion is True if the premises prove it, False if they "
    "prove it wrong, and Uncertain if they do neither.\n\n"
    "Premises:\n{premises}\n\n"
    "Conclusion: {conclusion}\n\n"
    'End with one line: "Answer: True", "Answer: False" or "Answer: Uncertain".'
)
DIRECT = (
    "Premises:\n{premises}\n\nConclusion: {conclusion}\n\n"
    "Based only on the premises, is the conclusion True, False, or Uncertain? "
    "Reply with one word."
)


def load(path: str | Path | None = None, *, limit: int | None = None, seed: int = 0,
         **options: object) -> list[Item]:
    no_options(NAME, options)
    return build_items(path, read_rows(path, HUB), _item, limit, seed)


def _item(path: str | Path | None, row: dict, index: int) -> Item:
    premises = field(path, row, index, "premises", (str, list))
    if isinstance(premises, str):
        premises = premises.splitlines()
    if not all(isinstance(p, str) for p in premises) or not any(p.strip() for p in premises):
        msg = "field 'premises' should be a non-empty string or list of strings"
        raise InputError(path or "hub", msg, row_place(index))
    premises = [p.strip() for p in premises if p.strip()]
    conclusion = field(path, row, index, "conclusion", str).strip()
    label = field(path, row, index, "label", str).strip()
    reference = {"true": "True", "false": "False", "uncertain": "Uncertain", "unknown": "Uncertain"}
    if label.lower() not in reference:
        msg = f"field 'label' should be one of {', '.join(LABELS)}, got {label!r}"
        raise InputError(path or "hub", msg, row_place(index))
    fields = {"premises": premises, "conclusion": conclusion}
    return Item(index, row_id(row, index, "example_id"), fields, reference[label.lower()])


def prompt(item: Item, style: str = "completion") -> str | list[dict[str, str]]:
    premises = "\n".join(item.fields["premises"])
    return fill_prompt(PROMPT, DIRECT, style, premises=premises,
                       conclusion=item.fields["conclusion"])


def answer_text(item: Item) -> str:
    """The reference answer as a model should write it (few-shot examples)."""
    return str(item.reference)


def reference_text(item: Item) -> str:
    """The gold answer as scoring compares it: True, False or Uncertain."""
    return str(item.reference)


def score(item: Item, output: str, *, hit_limit: bool = False) -> Score:
    found = extract(output, parse_label, last_label, hit_limit=hit_limit)
    return score_from(found, found.value == item.reference)


_CANT = (
    r"(?:cannot|can't|can\s?not|could\s+not|couldn't)\s+be\s+"
    r"(?:determined|known|concluded|decided|proven|proved|inferred)"
)
_NO_WAY = r"(?:not\s+possible|impossible)\s+to\s+(?:determine|tell|know|conclude|say|decide)"
_UNCERTAIN = (
    rf"uncertain|unknown|undetermined|indeterminate|undecidable|{_CANT}|{_NO_WAY}"
    r"|not\s+determinable|neither\s+true\s+nor\s+false"
    r"|insufficient\s+information|not\s+enough\s+information"
)
# "cannot be determined to be true" / "impossible to tell whether it is true" are Uncertain: the
# trailing true/false belongs to the phrase.
_ABOUT_A_LABEL = (
    r"(?:\s+(?:to\s+be|as|if|whether)(?:\s+(?:it|this|the\s+conclusion))?(?:\s+is)?"
    r"\s+(?:true|false)(?:\s+or\s+(?:true|false|not))?)?"
)
_LABEL = re.compile(
    rf"\b(?:(?P<true>true)|(?P<false>false)|(?P<uncertain>(?:{_UNCERTAIN}){_ABOUT_A_LABEL}))\b",
    re.I,
)


def _label(match: re.Match) -> str:
    return next(name for name in ("true", "false", "uncertain") if match.group(name)).capitalize()


def parse_label(candidate: str) -> str | None:
    """The first label stated in an answer statement ("Answer: **False**" -> "False")."""
    match = _LABEL.search(clean(candidate))
    return _label(match) if match else None


def last_label(text: str) -> tuple[str, str] | None:
    """Weak rule for an answer part with no marker: its last label word or phrase."""
    matches = list(_LABEL.finditer(clean(text)))
    return (_label(matches[-1]), "label") if matches else None
