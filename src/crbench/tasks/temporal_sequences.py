"""BIG-Bench Hard, Temporal Sequences: when could a person have gone somewhere? Four options.

Data: hub `lukaemon/bbh` (config `temporal_sequences`, 250 rows), or a local file in BBH's
official format `{"canary": ..., "examples": [{"input": ..., "target": "(C)"}]}` (a plain JSON
list or JSONL of those rows works too). The options are the `(A) ...` to `(D) ...` lines inside
`input`; they are parsed into `fields["options"]` ({"A": "5pm to 6pm", ...}).
Scoring: the final option letter ("(C)", "C)", "answer is C", "**(C)**", `\\boxed{\\text{(C)}}`),
or the option whose time range the model wrote instead of its letter.
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
    read_json,
    read_rows,
    row_place,
    score_from,
)

NAME = "temporal_sequences"
HUB = ("lukaemon/bbh", "test", "temporal_sequences")
LETTERS = "ABCD"

PROMPT = (
    "Answer the question by working along the timeline the story gives. Reason step by step, "
    'then name the right option on a final line of the form "Answer: (X)".\n\n{input}'
)
DIRECT = "{input}\n\nReply with just the right option, like (A)."


def load(path: str | Path | None = None, *, limit: int | None = None, seed: int = 0,
         **options: object) -> list[Item]:
    no_options(NAME, options)
    if path is None or Path(path).suffix == ".jsonl":
        rows = read_rows(path, HUB)
    else:  # the official layout; a bare JSON list of rows is accepted too
        data = read_json(path)
        found = data.get("examples") if isinstance(data, dict) else data
        if not isinstance(found, list) or not found:
            raise InputError(path, "expected a non-empty list of rows under 'examples'")
        rows = found
    return build_items(path, rows, _item, limit, seed)


_OPTION_LINE = re.compile(r"^\s*\(([A-Z])\)\s*(.+?)\s*$", re.M)


def _item(path: str | Path | None, row: object, index: int) -> Item:
    source = path or "hub"
    if not isinstance(row, dict):
        raise InputError(source, f"expected an object, got {type(row).__name__}", row_place(index))
    text = field(path, row, index, "input", str)
    target = field(path, row, index, "target", str).strip()
    options = dict(_OPTION_LINE.findall(text))
    if sorted(options) != list(LETTERS):
        found = ", ".join(sorted(options)) or "none"
        msg = f"input should list options (A) to (D), one per line; found {found}"
        raise InputError(source, msg, row_place(index))
    letter = target.strip("()")
    if letter not in options:
        raise InputError(source, f"target {target!r} is not one of the options", row_place(index))
    return Item(index, str(index), {"input": text, "options": options}, letter)


def prompt(item: Item, style: str = "completion") -> str | list[dict[str, str]]:
    return fill_prompt(PROMPT, DIRECT, style, input=item.fields["input"])


def answer_text(item: Item) -> str:
    """The reference answer as a model should write it (few-shot examples)."""
    return f"({item.reference})"


def reference_text(item: Item) -> str:
    """The gold answer as scoring compares it: the option letter."""
    return str(item.reference)


def score(item: Item, output: str, *, hit_limit: bool = False) -> Score:
    options = item.fields.get("options") or {}
    found = extract(
        output,
        lambda text: parse_option(text, options),
        lambda text: last_option(text, options),
        hit_limit=hit_limit,
    )
    return score_from(found, found.value == item.reference)


def _norm(text: str) -> str:
    """Spell time ranges one way: "5 p.m. - 6 PM", "5pm and 6pm" and "5pm to 6pm" read alike."""
    text = re.sub(r"(\d)\s*([aApP])\.?\s*([mM])\.?(?!\w)", r"\1\2\3", text)
    text = re.sub(r"\s*(?:-|–|—|\b(?:until|till|and)\b)\s*", " to ", text, flags=re.I)
    return re.sub(r"\s+", " ", text)


def _mentions(text: str, options: dict[str, str]) -> list[tuple[int, str]]:
    """(end position, letter) for each option named in `text`, by letter or by its time range."""
    letters = "".join(sorted(options)) or LETTERS
    text = _norm(clean(text))
    found = [(m.end(), m.group(1)) for m in re.finditer(rf"\(([{letters}])\)", text)]
    for letter, option in options.items():
        pattern = rf"(?<!\w){re.escape(_norm(option))}(?!\w)"
        found += [(m.end(), letter) for m in re.finditer(pattern, text, re.I)]
    return sorted(found)


def parse_option(candidate: str, options: dict[str, str]) -> str | None:
    """The option stated in an answer statement: a leading "C" / "C)" / "(C)", else the first
    option named in it by "(C)" or by its time range."""
    letters = "".join(sorted(options)) or LETTERS
    leading = re.match(rf"\(?([{letters}])\)?(?!\w)", clean(candidate))
    if leading:
        return leading.group(1)
    mentions = _mentions(candidate, options)
    return mentions[0][1] if mentions else None


def last_option(text: str, options: dict[str, str]) -> tuple[str, str] | None:
    """Weak rule for an answer part with no marker: the last option named, "(C)" or time range."""
    mentions = _mentions(text, options)
    return (mentions[-1][1], "option") if mentions else None
