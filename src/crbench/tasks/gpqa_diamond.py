"""GPQA-Diamond: 198 graduate-level, "Google-proof" science questions with four options.

Data: hub `Idavidrein/gpqa`, config `gpqa_diamond` (gated: accept its terms on the hub and log
in), or a local file: the official CSV (`gpqa_diamond.csv`: columns `Question`,
`Correct Answer`, `Incorrect Answer 1` to `3`, `Record ID` and 70-odd others), or the common
JSON / JSONL / parquet conversions: the same columns (any case, spaces or underscores:
`correct_answer`, `incorrect_answer_1`), or `question` with a list of four `choices` (or
`options`, or columns `A` to `D` as OpenCompass has them) and `answer`, a letter or a 0-based
index, in which case their order is kept (the converter shuffled them already).
Fields may carry trailing spaces and newlines; they are stripped.

Options: the correct answer and the three incorrect ones are put in an order drawn for each
item from `shuffle_seed` (a task option, default 0) and the item's `Record ID` (else its
question), with Python's `random.Random` seeded by a string (hashed with SHA-512, the same on
every machine). The order is recorded in `fields["permutation"]` (the source answer shown at
A, B, C, D; 0 is the correct one) and in each score's `details`, with the question's
`High-level domain` and `Subdomain` (as `domain` and `subdomain`, None when absent): the
fields accuracy can be broken down by (`BREAKDOWN`).
Scoring: the final option letter ("Answer: C", "(C)", `\\boxed{C}`, "the answer is C", or the
text of an option stated instead of its letter).
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

from crbench.errors import InputError
from crbench.extract import clean, extract
from crbench.tasks.base import Item, Score
from crbench.tasks.common import (
    build_items,
    fill_prompt,
    read_csv_rows,
    read_records,
    read_rows,
    row_place,
    score_from,
)

NAME = "gpqa_diamond"
HUB = ("Idavidrein/gpqa", "train", "gpqa_diamond")
LETTERS = "ABCD"
ANSWER_COLUMNS = ("correct answer", "incorrect answer 1", "incorrect answer 2",
                  "incorrect answer 3")

PROMPT = (
    "{question}\n\n{options}\n\n"
    "Reason step by step, then give the letter of the correct option on a last line of the "
    'form "Answer: X", where X is one of A, B, C, D.'
)
DIRECT = "{question}\n\n{options}\n\nReply with just the letter of the correct option."
OPTION = "({letter}) {text}"
# Item fields copied into every score's details: the shuffle (to re-derive the letters) and the
# fields accuracy can be broken down by (`BREAKDOWN`), readable from stored scores alone.
BREAKDOWN = ("domain", "subdomain")
RECORDED = ("permutation", "shuffle_seed", *BREAKDOWN)


def load(path: str | Path | None = None, *, limit: int | None = None, seed: int = 0,
         shuffle_seed: int = 0, **options: object) -> list[Item]:
    if options:
        msg = f"gpqa_diamond options are shuffle_seed, limit, seed; got {sorted(options)}"
        raise InputError(None, msg)
    if not isinstance(shuffle_seed, int) or isinstance(shuffle_seed, bool):
        raise InputError(None, f"must be an integer, got {shuffle_seed!r}", "shuffle_seed")
    if path is not None and Path(path).suffix.lower() == ".csv":
        rows: list[dict] = read_csv_rows(path)
    else:
        rows = read_rows(path, HUB) if path is None else read_records(path)

    def make_item(path: str | Path | None, row: dict, index: int) -> Item:
        return _item(path, row, index, shuffle_seed)

    return build_items(path, rows, make_item, limit, seed)


def _item(path: str | Path | None, row: dict, index: int, shuffle_seed: int) -> Item:
    columns = {_column(name): value for name, value in row.items() if isinstance(name, str)}
    question = _text(path, columns, "question", index)
    raw_id = columns.get("record id", columns.get("id"))
    item_id = str(raw_id).strip() if raw_id not in (None, "") else str(index)
    if "choices" in columns or "options" in columns:
        answers, order = _listed_choices(path, columns, index)
    elif all(letter.casefold() in columns for letter in LETTERS):  # opencompass: A, B, C, D
        columns["choices"] = [_text(path, columns, k.casefold(), index) for k in LETTERS]
        answers, order = _listed_choices(path, columns, index)
    else:
        answers = [_text(path, columns, name, index) for name in ANSWER_COLUMNS]
        order = permutation(shuffle_seed, item_id if raw_id not in (None, "") else question)
    options = {LETTERS[k]: answers[source] for k, source in enumerate(order)}
    fields = {"question": question, "options": options, "permutation": order,
              "shuffle_seed": shuffle_seed, "domain": _optional(columns, "high level domain"),
              "subdomain": _optional(columns, "subdomain")}
    return Item(index, item_id, fields, LETTERS[order.index(0)])


def _optional(columns: dict, name: str) -> str | None:
    """A descriptive column (domain, subdomain) when the file has it as text."""
    value = columns.get(name)
    return value.strip() or None if isinstance(value, str) else None


def _column(name: str) -> str:
    """A column name written one way: "Correct Answer", "correct_answer" -> "correct answer",
    "High-level domain" -> "high level domain"."""
    return " ".join(name.replace("_", " ").replace("-", " ").split()).casefold()


def _text(path: str | Path | None, columns: dict, name: str, index: int) -> str:
    if name not in columns or columns[name] is None:
        raise InputError(path or "hub", f"missing field {name!r}", row_place(index))
    value = columns[name]
    if not isinstance(value, str):
        got = type(value).__name__
        raise InputError(path or "hub", f"field {name!r} should be str, got {got}",
                         row_place(index))
    if not value.strip():
        raise InputError(path or "hub", f"field {name!r} is empty", row_place(index))
    return value.strip()


def _listed_choices(path: str | Path | None, columns: dict, index: int
                    ) -> tuple[list[str], list[int]]:
    """A conversion that lists the four options itself: (answers with the correct one first,
    the order they are shown in), so the file's order is kept."""
    source = path or "hub"
    choices = columns.get("choices", columns.get("options"))
    if (not isinstance(choices, list) or len(choices) != len(LETTERS)
            or not all(isinstance(c, str) and c.strip() for c in choices)):
        raise InputError(source, "field 'choices' should be a list of 4 non-empty strings",
                         row_place(index))
    answer = columns.get("answer")
    if isinstance(answer, str) and answer.strip().strip("()") in tuple(LETTERS):
        correct = LETTERS.index(answer.strip().strip("()"))
    elif isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < 4:
        correct = answer
    else:
        msg = f"field 'answer' should be a letter A-D or an index 0-3, got {str(answer)[:40]!r}"
        raise InputError(source, msg, row_place(index))
    shown = [c.strip() for c in choices]
    answers = [shown[correct]] + [c for k, c in enumerate(shown) if k != correct]
    order = [0 if k == correct else 1 + k - (k > correct) for k in range(len(LETTERS))]
    return answers, order


def permutation(shuffle_seed: int, key: str) -> list[int]:
    """Which source answer (0 = correct, 1-3 = incorrect) is shown at A, B, C, D; the same for
    the same seed and key on every machine."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    order = list(range(len(LETTERS)))
    random.Random(f"gpqa_diamond/shuffle_seed={shuffle_seed}/{digest}").shuffle(order)
    return order


def prompt(item: Item, style: str = "completion") -> str | list[dict[str, str]]:
    options = "\n".join(OPTION.format(letter=letter, text=text)
                        for letter, text in item.fields["options"].items())
    return fill_prompt(PROMPT, DIRECT, style, question=item.fields["question"], options=options)


def answer_text(item: Item) -> str:
    """The reference answer as a model should write it (few-shot examples)."""
    return f"({item.reference})"


def reference_text(item: Item) -> str:
    """The gold answer as scoring compares it: the option letter after shuffling."""
    return str(item.reference)


def score(item: Item, output: str, *, hit_limit: bool = False) -> Score:
    options = item.fields.get("options") or {}
    found = extract(output, lambda text: parse_choice(text, options),
                    lambda text: last_choice(text), hit_limit=hit_limit)
    details = {name: item.fields.get(name) for name in RECORDED}
    return score_from(found, found.value == item.reference, details=details)


# "C", "(C)", "C)", "C.", "Option C", "C: 4.2 eV", "C - 4.2 eV" at the start of a statement.
_LEADING = re.compile(
    r"^(?:(?:option|choice)\s+)?(?:\(([A-D])\)|([A-D])(?:\)|[.,:;]|\s*$|\s+[-–—]))", re.I
)
# A letter named in prose: "(C)", "option C", "choice (C)", "answer is C", "correct one is C".
_MENTION = re.compile(
    r"\(([A-D])\)|\b(?i:option|choice|answer|letter)\s+(?:is\s+)?\(?([A-D])\b"
    r"|\b(?i:correct\s+(?:one|answer|option|choice)\s+is)\s+\(?([A-D])\b"
)

_ALONE = re.compile(r"\s*\(?([A-D])\)?[.]?\s*")

def _letter(match: re.Match) -> str:
    return next(group for group in match.groups() if group).upper()


def parse_choice(candidate: str, options: dict[str, str]) -> str | None:
    """The option an answer statement states: the whole text of an option ("D. melanogaster"
    is an option, not the letter D), a leading letter, else the first letter named in it."""
    text = clean(candidate)
    stated = _plain(text)
    named = [letter for letter, option in options.items() if _plain(option) == stated]
    if len(named) == 1:
        return named[0]
    leading = _LEADING.match(text)
    if leading and (leading.group(1) or leading.group(2) or "").isupper():
        return _letter(leading)
    mention = _MENTION.search(text)
    return _letter(mention) if mention else None


def last_choice(text: str) -> tuple[str, str] | None:
    """Weak rule for an answer part with no marker: the answer part is a letter alone ("B",
    "**(B)**"), else the last letter named in prose."""
    alone = _ALONE.fullmatch(clean(text[-200:]))
    if alone and len(text.strip()) <= 200:
        return alone.group(1), "letter"
    mentions = list(_MENTION.finditer(clean(text[-20000:])))
    return (_letter(mentions[-1]), "option") if mentions else None


def _plain(text: str) -> str:
    return " ".join(clean(text).replace("$", "").split()).casefold()
