"""MATH-500: 500 competition problems (the PRM800K test subset of MATH), LaTeX answers.

Data: hub `HuggingFaceH4/MATH-500`, split `test`, or a local JSON / JSONL / parquet file in its
format: `problem`, `solution`, `answer` (LaTeX: `\\frac{3}{4}`, `\\left( 2, \\frac{\\pi}{3}
\\right)`, `\\text{(B)}`, ...), `subject` (7 subjects), `level` (1-5) and `unique_id` (e.g.
`test/precalculus/807.json`, used as the item id). `subject` and `level` are kept in
`Item.fields` and in every score's `details`, so accuracy can be broken down by them from the
stored scores alone.
Prompt: DeepSeek-R1's recommendation for math ("Please reason step by step, and put your final
answer within \\boxed{}.").
Scoring: the final boxed answer, else an explicit answer statement (see `crbench.extract`),
compared with the gold `answer` by math-verify (fractions, radicals, intervals, tuples,
matrices, degrees, units, `\\text{(C)}`), and by a normalized string comparison for what
math-verify cannot parse. maj@k's votes compare the value an answer states (`vote_key`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from crbench.errors import InputError
from crbench.extract import extract
from crbench.tasks import math_common
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
from crbench.tasks.math_common import normalized, parse_latex, parse_text, too_costly, verify

NAME = "math500"
HUB = ("HuggingFaceH4/MATH-500", "test")
MAX_ANSWER_CHARS = 500  # a longer "answer" is prose, not an expression (and bounds sympy's work)
# Item fields copied into every score's details, so accuracy can be broken down by them from
# the stored scores alone (a report reads `BREAKDOWN` and groups by `details[name]`).
BREAKDOWN = ("subject", "level")

PROMPT = (
    "{problem}\n"
    "Please reason step by step, and put your final answer within \\boxed{{}}."
)
DIRECT = "{problem}\n\nReply with just the final answer, written as \\boxed{{...}}."


def load(path: str | Path | None = None, *, limit: int | None = None, seed: int = 0,
         **options: object) -> list[Item]:
    no_options(NAME, options)
    return build_items(path, read_rows(path, HUB), _item, limit, seed)


def _item(path: str | Path | None, row: dict, index: int) -> Item:
    problem = field(path, row, index, "problem", str)
    answer = field(path, row, index, "answer", (str, int)) if "answer" in row else None
    if answer is None:
        raise InputError(path or "hub", "missing field 'answer'", row_place(index))
    subject = row.get("subject", "")
    if not isinstance(subject, str):
        raise InputError(path or "hub", "field 'subject' should be str", row_place(index))
    level = _level(path, row.get("level"), index)
    fields = {"problem": problem, "subject": subject, "level": level}
    return Item(index, row_id(row, index, "unique_id", "id"), fields, str(answer).strip())


def _level(path: str | Path | None, value: object, index: int) -> int | None:
    """MATH's difficulty 1-5: an int (the hub), or "Level 3" (the original MATH files)."""
    if value is None:
        return None
    text = str(value).strip().removeprefix("Level").strip()
    if (isinstance(value, bool) or not text.isascii() or not text.isdigit() or len(text) > 1
            or not 1 <= int(text) <= 5):
        msg = f"field 'level' should be a level from 1 to 5, got {str(value)[:40]!r}"
        raise InputError(path or "hub", msg, row_place(index))
    return int(text)


def prompt(item: Item, style: str = "completion") -> str | list[dict[str, str]]:
    return fill_prompt(PROMPT, DIRECT, style, problem=item.fields["problem"])


def answer_text(item: Item) -> str:
    """The reference answer as a model should write it (few-shot examples)."""
    return f"\\boxed{{{item.reference}}}"


def reference_text(item: Item) -> str:
    """The gold answer as scoring compares it: the LaTeX expression math-verify parses."""
    return str(item.reference)


def score(item: Item, output: str, *, hit_limit: bool = False) -> Score:
    found = extract(output, parse_expression, hit_limit=hit_limit)
    correct = found.value is not None and is_equivalent(str(item.reference), found.value)
    details = {name: item.fields.get(name) for name in BREAKDOWN}
    return score_from(found, correct, details=details)


_EDGE_MARKUP = re.compile(r"^(?:\*\*|__|`)+|(?:\*\*|__|`)+$")


def parse_expression(candidate: str) -> str | None:
    """The expression an answer statement or box holds, markdown and edge punctuation removed;
    None when empty or too long to be an expression."""
    text = _EDGE_MARKUP.sub("", candidate.strip()).strip()
    text = text.rstrip(".;,").strip()
    if text.startswith("$") and text.endswith("$") and text.count("$") in (2, 4):
        text = text.strip("$").strip()
    if not text or len(text) > MAX_ANSWER_CHARS:
        return None
    return text


def vote_key(answer: str) -> str:
    """maj@k's vote of an extracted answer: the value it states ("\\frac{1}{2}" and "0.5" are
    one vote; see `crbench.tasks.math_common.vote_key`)."""
    return math_common.vote_key(answer)


def is_equivalent(gold: str, predicted: str) -> bool:
    """Whether `predicted` states the gold answer: equal normalized text, or equal for
    math-verify. Never raises."""
    if normalized(gold) == normalized(predicted):
        return True
    if too_costly(gold) or too_costly(predicted):
        return False
    gold_parsed = parse_latex(gold)
    if not gold_parsed:
        return False
    return any(verify(gold_parsed, parsed) for parsed in _prediction_readings(predicted))


def _prediction_readings(predicted: str) -> list[tuple[Any, ...]]:
    """math-verify's readings of a prediction: as one LaTeX expression, and as text that may
    hold math ("$x = 3$ or so") when it carries math delimiters."""
    readings = [parse_latex(predicted)]
    if "$" in predicted or "\\(" in predicted or "\\[" in predicted:
        readings.append(parse_text(predicted))
    return [reading for reading in readings if reading]
