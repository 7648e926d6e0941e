"""AIME 2025: the 30 problems of AIME 2025 I and II, each answered by an integer from 0 to 999.

Data: hub `opencompass/AIME2025`, configs `AIME2025-I` and `AIME2025-II` (fields `question`,
`answer`; ids become "2025-I-1" ... "2025-II-15"), or a local JSON / JSONL / parquet file with
`problem` (or `question`, or aime24's `Problem`), `answer` (an integer or a string such as "070")
and optionally `id`.
Prompt and scoring are aime24's: the same instruction, the same integer reading of the final
answer (see `crbench.tasks.aime24`).
"""

from __future__ import annotations

from pathlib import Path

from crbench.errors import InputError
from crbench.tasks import aime24
from crbench.tasks.base import Item, Score
from crbench.tasks.common import build_items, hub_rows, no_options, read_records, row_place

NAME = "aime25"
HUB = "opencompass/AIME2025"
HUB_PARTS = (("AIME2025-I", "2025-I"), ("AIME2025-II", "2025-II"))  # config, id prefix
HUB_SPLIT = "test"

PROMPT = aime24.PROMPT  # one instruction for every AIME year
DIRECT = aime24.DIRECT


def load(path: str | Path | None = None, *, limit: int | None = None, seed: int = 0,
         **options: object) -> list[Item]:
    no_options(NAME, options)
    rows = _hub_rows() if path is None else read_records(path)
    return build_items(path, rows, _item, limit, seed)


def _hub_rows() -> list[dict]:
    """Both papers' rows, each given an id that says which paper and problem it is."""
    rows = []
    for config, prefix in HUB_PARTS:
        part = hub_rows(HUB, HUB_SPLIT, config)
        rows += [{**row, "id": row.get("id") or f"{prefix}-{n}"} for n, row in enumerate(part, 1)]
    return rows


def _item(path: str | Path | None, row: dict, index: int) -> Item:
    """aime24's item, from a row whose problem may be called `question` (opencompass)."""
    if not isinstance(row, dict):
        raise InputError(path or "hub", "expected a JSON object", row_place(index))
    if not any(name in row for name in ("problem", "Problem", "question")):
        raise InputError(path or "hub", "missing field 'problem' (or 'question')",
                         row_place(index))
    if "problem" not in row and "Problem" not in row:
        row = {**row, "problem": row["question"]}
    return aime24._item(path, row, index)


def prompt(item: Item, style: str = "completion") -> str | list[dict[str, str]]:
    return aime24.prompt(item, style)


def answer_text(item: Item) -> str:
    """The reference answer as a model should write it (few-shot examples)."""
    return aime24.answer_text(item)


def reference_text(item: Item) -> str:
    """The gold answer as scoring compares it: the integer."""
    return aime24.reference_text(item)


def score(item: Item, output: str, *, hit_limit: bool = False) -> Score:
    return aime24.score(item, output, hit_limit=hit_limit)


def vote_key(answer: str) -> str:
    return aime24.vote_key(answer)
