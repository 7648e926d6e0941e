"""`crbench score --run DIR`: recompute every stored score from the stored outputs, with the
current scorers and the one scoring function (`crbench.scoring.score_generation`). Nothing is
generated; only the scores table changes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from crbench.errors import InputError
from crbench.records import ScoreRecord, StoredGeneration
from crbench.scoring import score_generation
from crbench.tasks.base import Item

ITEM_OPTIONS_LEFT_OUT = ("style",)  # how the prompt was written: stored, but not a `load` option


@dataclass
class TaskTally:
    n: int = 0
    before: int = 0  # correct before rescoring
    after: int = 0


@dataclass
class RescoreResult:
    rescored: int = 0
    changed: int = 0  # correctness flipped
    skipped: int = 0  # item data could not be loaded, or no longer matches the stored item
    errors: list[str] = field(default_factory=list)
    tasks: dict[str, TaskTally] = field(default_factory=dict)  # task label -> tally

    def as_json(self) -> dict[str, object]:
        return {"rescored": self.rescored, "changed": self.changed, "skipped": self.skipped,
                "errors": self.errors,
                "tasks": {label: vars(t) for label, t in self.tasks.items()}}


def load_items(task_id: str, options_json: str) -> dict[int, Item]:
    """The items of a task as a row's stored task options load them."""
    from crbench.tasks import get_task

    options = json.loads(options_json)
    for name in ITEM_OPTIONS_LEFT_OUT:
        options.pop(name, None)
    return {item.index: item for item in get_task(task_id).load(**options)}


def rescore_run(run_dir: str | Path) -> RescoreResult:
    """Rescore every stored generation (superseded ones too: they stay comparable)."""
    from crbench.store import STORE_FILE, connect, read_run, replace_scores
    from crbench.tasks import get_task

    if not (Path(run_dir) / STORE_FILE).is_file():  # rescoring must not create an empty store
        raise InputError(run_dir, f"no results store ({STORE_FILE}) in this run directory")
    conn = connect(run_dir)  # opened for writing first: an older store is migrated
    try:
        run = read_run(run_dir, include_superseded=True)
        groups: dict[tuple[str, str], list[StoredGeneration]] = defaultdict(list)
        for stored in run.rows:
            groups[(stored.generation.task_id, stored.generation.task_options)].append(stored)
        result = RescoreResult()
        new_scores: list[ScoreRecord] = []
        for (task_id, options_json), rows in groups.items():
            try:
                items = load_items(task_id, options_json)
            except (InputError, OSError, TypeError, ValueError) as exc:
                result.skipped += len(rows)
                result.errors.append(f"{task_id}: {exc}")
                continue
            module = get_task(task_id)
            for stored in rows:
                score = rescore_one(module, items, stored)
                if score is None:
                    result.skipped += 1
                    continue
                new_scores.append(score)
                tally(result, stored, score)
        replace_scores(conn, new_scores)
        result.rescored = len(new_scores)
        return result
    finally:
        conn.close()


def rescore_one(module: ModuleType, items: dict[int, Item], stored: StoredGeneration
                ) -> ScoreRecord | None:
    g = stored.generation
    item = items.get(g.item_index)
    if item is None or str(item.id) != g.item_id:
        return None
    style = json.loads(g.task_options).get("style") if g.task_options else None
    return score_generation(module, item, g.output, prompt=g.prompt_text, style=style,
                            reasoning=g.reasoning, finish_reason=g.finish_reason, key=g.key)


def tally(result: RescoreResult, stored: StoredGeneration, score: ScoreRecord) -> None:
    before = stored.score is not None and stored.score.correct
    counts = result.tasks.setdefault(stored.generation.task, TaskTally())
    counts.n += 1
    counts.before += int(before)
    counts.after += int(score.correct)
    result.changed += int(before != score.correct)
