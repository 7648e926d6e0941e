"""GSM8K: grade-school math word problems, each answered by a number.

Data: hub `openai/gsm8k`, config `main`, split `test` (1,319 rows), or a local JSON / JSONL /
parquet file in its format: `question`, and `answer`, worked text with calculator annotations
(`<<16-3-4=9>>`) whose last line is `#### N`.
Scoring: the final answer (see `crbench.extract`) read as a number and compared by value, so
"1,000", "$18", "18.00", "\\$18" and "18 dollars" all read as what they say. In an answer
statement with "=", the number after the last "=" is the answer ("9 * 2 = 18").
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
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

NAME = "gsm8k"
HUB = ("openai/gsm8k", "test", "main")
MAX_DIGITS = 30  # a longer number is not a GSM8K answer (and keeps Decimal cheap)

PROMPT = "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
DIRECT = "{question}\n\nReply with just the final number."


def load(path: str | Path | None = None, *, limit: int | None = None, seed: int = 0,
         **options: object) -> list[Item]:
    no_options(NAME, options)
    return build_items(path, read_rows(path, HUB), _item, limit, seed)


_FINAL_LINE = re.compile(r"^\s*####\s*(.+?)\s*$", re.M)


def _item(path: str | Path | None, row: dict, index: int) -> Item:
    question = field(path, row, index, "question", str)
    answer = field(path, row, index, "answer", str)
    finals = _FINAL_LINE.findall(answer)
    value = canonical_number(finals[-1]) if finals else None
    if value is None or not re.fullmatch(r"[-+]?[\d,]*\.?\d+", finals[-1].replace("$", "")):
        msg = "field 'answer' should end with a line '#### N' (N a number)"
        raise InputError(path or "hub", msg, row_place(index))
    return Item(index, row_id(row, index, "id"), {"question": question}, value)


def prompt(item: Item, style: str = "completion") -> str | list[dict[str, str]]:
    return fill_prompt(PROMPT, DIRECT, style, question=item.fields["question"])


def answer_text(item: Item) -> str:
    """The reference answer as a model should write it (few-shot examples)."""
    return str(item.reference)


def reference_text(item: Item) -> str:
    """The gold answer as scoring compares it: the number, written canonically."""
    return str(item.reference)


def score(item: Item, output: str, *, hit_limit: bool = False) -> Score:
    found = extract(output, parse_number, last_number, hit_limit=hit_limit)
    return score_from(found, found.value is not None and found.value == item.reference)


# A number: digits grouped by commas ("1,000") or not, an optional sign and decimal part.
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])")


def canonical_number(text: str) -> str | None:
    """"1,000" -> "1000", "18.00" -> "18", "$-3.50" -> "-3.5"; None when not one number."""
    text = text.strip().replace("$", "").replace(",", "").replace("\u2212", "-")
    digits = text.lstrip("+-")
    if not digits or len(digits) > MAX_DIGITS or not re.fullmatch(r"\d*\.?\d+|\d+\.", digits):
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return format(value.normalize(), "f") if value != 0 else "0"


def _plain(candidate: str) -> str:
    """Answer text with money signs, LaTeX spacing and thousands separators made plain."""
    text = candidate.replace("\u2212", "-")
    for mark in ("\\!", "{,}", "\\,"):  # LaTeX's ways of writing 1,000: 1{,}000, 1\,000
        text = text.replace(mark, "")
    for mark in ("\\$", "\\%", "%", "$"):
        text = text.replace(mark, " ")
    return clean(text)


def parse_number(candidate: str) -> str | None:
    """The number an answer statement states: the first after its last "=", else its first."""
    text = _plain(candidate)
    if len(text) > 2000:
        return None
    tail = text.rpartition("=")[2] if "=" in text else text
    match = _NUMBER.search(tail)
    return canonical_number(match.group()) if match else None


def last_number(text: str) -> tuple[str, str] | None:
    """Weak rule for an answer part with no marker: its last number."""
    numbers = _NUMBER.findall(_plain(text[-20000:]))
    value = canonical_number(numbers[-1]) if numbers else None
    return (value, "last-number") if value is not None else None
