"""AIME 2024: 30 competition problems, each answered by an integer from 0 to 999.

Data: hub `Maxwell-Jia/AIME_2024` (fields `ID, Problem, Solution, Answer`), or a local JSON /
JSONL / parquet file with those fields or lowercase `id, problem, answer` (the answer may be a
zero-padded string such as "025").
Scoring: the final answer (see `crbench.extract`) read as an integer and compared with the
reference. `\\boxed{}` contents that are LaTeX rather than a plain number are read with
math-verify; a non-integer answer is kept as extracted text and scored wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

from crbench.errors import InputError
from crbench.extract import clean, extract
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

NAME = "aime24"
HUB = ("Maxwell-Jia/AIME_2024", "train")
FIELDS = ("problem", "answer")  # also accepted capitalised, as the hub copy has them

PROMPT = (
    "{problem}\n\n"
    "Work through the problem step by step. The answer is an integer from 0 to 999; "
    "write it at the end as \\boxed{{N}}."
)
DIRECT = "{problem}\n\nReply with just the final number."


def load(path: str | Path | None = None, *, limit: int | None = None, seed: int = 0,
         **options: object) -> list[Item]:
    no_options(NAME, options)
    return build_items(path, read_rows(path, HUB), _item, limit, seed)


def _item(path: str | Path | None, row: dict, index: int) -> Item:
    key = {name: name.capitalize() if name.capitalize() in row else name for name in FIELDS}
    for name in FIELDS:
        if key[name] not in row:
            msg = f"missing field {name.capitalize()!r} (or {name!r})"
            raise InputError(path or "hub", msg, row_place(index))
    problem = field(path, row, index, key["problem"], str)
    answer = field(path, row, index, key["answer"], (int, str))
    text = str(answer).strip()
    # ASCII digits only (int() refuses "²", and a huge digit string), at most 3 of them past
    # any zero padding.
    digits = text.lstrip("0") or "0"
    reference = int(digits) if text.isascii() and text.isdigit() and len(digits) <= 3 else None
    if reference is None or not 0 <= reference <= 999:
        msg = f"field {key['answer']!r} should be an integer from 0 to 999, got {answer!r}"
        raise InputError(path or "hub", msg, row_place(index))
    return Item(index, row_id(row, index, "ID", "id"), {"problem": problem}, reference)


def prompt(item: Item, style: str = "completion") -> str | list[dict[str, str]]:
    return fill_prompt(PROMPT, DIRECT, style, problem=item.fields["problem"])


def answer_text(item: Item) -> str:
    """The reference answer as a model should write it (few-shot examples)."""
    return str(item.reference)


def reference_text(item: Item) -> str:
    """The gold answer as scoring compares it: the integer."""
    return str(item.reference)


def score(item: Item, output: str, *, hit_limit: bool = False) -> Score:
    found = extract(output, parse_answer, last_number, hit_limit=hit_limit)
    return score_from(found, is_correct(found.value, item.reference))


def vote_key(answer: str) -> str:
    """maj@k's vote of an extracted answer: the value it states. Integers are already read one
    way ("025" -> "25"); this makes "\\frac{3}{2}" and "1.5" one (wrong) vote too, so they
    do not split against an answer given fewer times."""
    return math_common.vote_key(answer)


def is_correct(extracted: str | None, reference: int) -> bool:
    return extracted is not None and re.fullmatch(r"-?\d+", extracted) is not None and (
        int(extracted) == int(reference)
    )


_INT = re.compile(r"[-+]?\d+")
# An integer that starts the text and is not the start of a larger expression ("2^{10}", "3/4").
_LEADING_INT = re.compile(r"([-+]?\d+)(?![\d,]|\.\d|\s*[\^/_{(]|\s*\\(?:frac|cdot|times))")


def parse_answer(candidate: str) -> str | None:
    """The answer stated in `candidate` as a canonical string: "25" for "025", "$25$", "**25**".

    A number that is not an integer ("\\frac{1}{2}", "\\sqrt{2}") is returned as math-verify's
    LaTeX text, so it counts as an answer (a wrong one); text with no number gives None.
    """
    text = clean(candidate).replace("\\!", "").replace("{,}", "")
    if _INT.fullmatch(text):
        return str(int(text))
    leading = _LEADING_INT.match(text)
    if leading:
        return str(int(leading.group(1)))
    if len(text) <= 200 and re.search(r"\d", text):
        return _math_verify_number(text)
    return None


def _math_verify_number(latex: str) -> str | None:
    """An integer (or other number) read by math-verify from a short LaTeX expression."""
    parsed = math_common.parse_latex(latex)
    expr = parsed[0] if parsed else None
    if expr is None or not getattr(expr, "is_number", False):
        return None
    try:
        value = complex(expr.evalf(30))
    except Exception:  # sympy can fail in many ways on odd input; that is simply "no number"
        return None
    if value.imag == 0 and abs(value.real) < 1e12 and abs(value.real - round(value.real)) < 1e-9:
        return str(round(value.real))
    return parsed[1] if len(parsed) > 1 else latex


_LAST_NUMBER = re.compile(r"(?<![\w.])-?\d+(?![\w]|\.\d)")


def last_number(text: str) -> tuple[str, str] | None:
    """Weak rule for an answer part with no marker: its last standalone integer."""
    numbers = _LAST_NUMBER.findall(clean(text))
    return (str(int(numbers[-1])), "last-number") if numbers else None
