"""What every task module shares: the item and score records.

A task is one module (see `crbench/tasks/aime24.py`) exposing:

    NAME: str
    load(path: str | None = None, *, limit: int | None = None, seed: int = 0, **options)
        -> list[Item]
        `path` None means the Hugging Face hub (online); otherwise a local file in the
        dataset's official format. Bad files raise `crbench.errors.InputError` naming file and row.
    prompt(item: Item, style: str = "completion") -> str | list[dict]
        "completion": the paper's plain prompt ending with "<think>\n";
        "chat": a list of {"role", "content"} messages for the model's chat template.
    score(item: Item, output: str, *, hit_limit: bool = False) -> Score
        Never raises on any text. `hit_limit` is True when the engine stopped at max tokens.

and optionally:

    reference_text(item: Item) -> str
        The gold answer as `score` compares it (the integer, the label, the option letter after
        shuffling, the expression); per-item records carry it as `reference`. Read it through
        `crbench.tasks.reference_text(module, item)`, which also covers generated families.
    vote_key(answer: str) -> str
        The key maj@k compares votes by: answers (as `score` extracted them) with one key are
        one vote. For answers written many ways (math500, aime: "\\frac{1}{2}" and "0.5").
        Never raises. Read it through `crbench.tasks.vote_key(module)`; without it votes
        compare the extracted text with white space removed.
    BREAKDOWN: tuple[str, ...]
        Item fields that `score` copies into `Score.details`, so accuracy can be broken down by
        them from stored scores alone (math500: subject, level; gpqa_diamond: domain, subdomain).

and is listed in `crbench.tasks.TASK_MODULES`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Item:
    index: int  # 0-based row index in the source file (stable across subsets)
    id: str  # the dataset's own id, or str(index)
    fields: dict[str, Any]  # what the prompt needs: problem / premises / question / ...
    reference: Any  # gold answer: int (AIME), "True"/"False"/"Uncertain", "(C)", list[str]


@dataclass
class Score:
    extracted: str | None  # the answer as read from the output (None: no answer found)
    correct: bool
    no_answer: bool
    truncated: bool  # thinking never closed, or the engine hit its token limit
    rule: str  # which extraction rule fired, e.g. "boxed-after-think", "none"
    em: float | None = None  # MuSiQue only
    f1: float | None = None  # MuSiQue only
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
