"""MuSiQue: multi-hop questions (2-4 hops) over Wikipedia paragraphs; free-text answers.

Data: the answerable dev set (the official `musique_ans_v1.0_dev.jsonl`, downloaded alone from
the hub copy `dgslibisey/MuSiQue`, without its 241 MB train file), or a local JSONL / JSON-list
file in the official format: `id`, `question`, `answer`, `answer_aliases`, `answerable`,
`paragraphs` ({idx, title, paragraph_text, is_supporting}). Only answerable rows are kept.
The paper asked 100 random questions closed-book: `load(limit=100, seed=...)`, mode "closed"
(question only) or "open" (its paragraphs first).
Scoring: SQuAD-style normalized exact match and token F1, the best over the answer and its
aliases; `correct` means exact match. `details["cover_em"]` is cover EM: whether a gold answer
or alias appears as a whole normalized span inside the final answer statement, so an answer
written as a sentence ("The network is NBC.") shows up instead of silently scoring 0.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from pathlib import Path

from crbench.errors import InputError
from crbench.extract import clean, extract
from crbench.tasks.base import Item, Score
from crbench.tasks.common import (
    build_items,
    field,
    fill_prompt,
    hub_file,
    read_records,
    row_id,
    row_place,
    score_from,
)

NAME = "musique"
HUB_FILE = ("dgslibisey/MuSiQue", "musique_ans_v1.0_dev.jsonl")
MODES = ("closed", "open")

PROMPT = (
    "{paragraphs}Question: {question}\n\n"
    "Think it through, then give the final answer in as few words as possible, "
    'on a last line of the form "Answer: ...".'
)
DIRECT = (
    "{paragraphs}Question: {question}\nReply with just the answer, in as few words as possible."
)
PARAGRAPH = "Title: {title}\n{paragraph_text}\n\n"  # open mode: each paragraph before the question


def load(
    path: str | Path | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    mode: str = "closed",
    **options: object,
) -> list[Item]:
    if options:
        raise InputError(None, f"musique options are mode, limit, seed; got {sorted(options)}")
    if mode not in MODES:
        raise InputError(None, f"musique mode must be one of {', '.join(MODES)}, got {mode!r}")

    def answerable_item(path: str | Path | None, row: dict, index: int) -> Item | None:
        return _item(path, row, index, mode) if row.get("answerable", True) else None

    rows = read_records(hub_file(*HUB_FILE) if path is None else path)
    return build_items(path, rows, answerable_item, limit, seed)


def _item(path: str | Path | None, row: dict, index: int, mode: str) -> Item:
    question = field(path, row, index, "question", str)
    answer = field(path, row, index, "answer", str)
    aliases = row.get("answer_aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        msg = "field 'answer_aliases' should be a list of strings"
        raise InputError(path or "hub", msg, row_place(index))
    paragraphs = [_paragraph(path, p, index) for p in row.get("paragraphs") or []]
    if mode == "open" and not paragraphs:
        raise InputError(path or "hub", "open mode needs 'paragraphs'", row_place(index))
    fields = {"question": question, "paragraphs": paragraphs, "mode": mode}
    reference = [answer] + [a for a in aliases if a != answer]
    return Item(index, row_id(row, index, "id"), fields, reference)


def _paragraph(path: str | Path | None, paragraph: object, index: int) -> dict:
    if not isinstance(paragraph, dict):
        raise InputError(path or "hub", "each paragraph should be an object", row_place(index))
    return {
        "title": field(path, paragraph, index, "title", str),
        "paragraph_text": field(path, paragraph, index, "paragraph_text", str),
        "is_supporting": bool(paragraph.get("is_supporting", False)),
    }


def prompt(item: Item, style: str = "completion") -> str | list[dict[str, str]]:
    fields = item.fields
    paragraphs = fields.get("paragraphs", []) if fields.get("mode") == "open" else []
    context = "".join(PARAGRAPH.format(**p) for p in paragraphs)
    return fill_prompt(PROMPT, DIRECT, style, paragraphs=context, question=fields["question"])


def answer_text(item: Item) -> str:
    """The reference answer as a model should write it (few-shot examples)."""
    return item.reference if isinstance(item.reference, str) else item.reference[0]


def reference_text(item: Item) -> str:
    """The gold answers as scoring compares them: the answer, then its aliases, "|"-separated."""
    golds = [item.reference] if isinstance(item.reference, str) else list(item.reference)
    return " | ".join(golds)


def score(item: Item, output: str, *, hit_limit: bool = False) -> Score:
    found = extract(output, parse_text, last_phrase, hit_limit=hit_limit)
    golds = [item.reference] if isinstance(item.reference, str) else list(item.reference)
    em = exact_match(found.value, golds) if found.value is not None else 0.0
    f1 = token_f1(found.value, golds) if found.value is not None else 0.0
    cover = cover_match(found.value, golds) if found.value is not None else 0.0
    return score_from(found, em == 1.0, em=em, f1=f1, details={"cover_em": cover})


def parse_text(candidate: str) -> str | None:
    text = clean(candidate)
    return text or None


def last_phrase(text: str) -> tuple[str, str] | None:
    """Weak rule for an answer part with no marker: its last **bold** span, else its last line."""
    bold = re.findall(r"\*\*(.+?)\*\*", text)
    for marker, spans in (("bold", bold), ("last-line", text.splitlines())):
        last = next((cleaned for span in reversed(spans) if (cleaned := clean(span))), None)
        if last is not None:
            return last, marker
    return None


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """SQuAD normalization: lowercase, drop punctuation and articles, single spaces."""
    text = text.lower().translate(_NO_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: list[str]) -> float:
    return float(any(normalize(prediction) == normalize(gold) for gold in golds))


def cover_match(prediction: str, golds: list[str]) -> float:
    """Cover EM: 1.0 when a gold answer (or alias), normalized, is a whole run of words of the
    normalized answer statement ("The network is NBC." covers "NBC"), else 0.0."""
    stated = f" {normalize(prediction)} "
    return float(any(gold_words and f" {gold_words} " in stated
                     for gold_words in (normalize(gold) for gold in golds)))


def token_f1(prediction: str, golds: list[str]) -> float:
    predicted = normalize(prediction).split()
    return max((_f1(predicted, normalize(gold).split()) for gold in golds), default=0.0)


def _f1(predicted: list[str], gold: list[str]) -> float:
    if not predicted or not gold:
        return float(predicted == gold)
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)
