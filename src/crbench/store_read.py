"""The one reader of a results store: what the run is, as records (`read_run`).

Report, export, rescoring and the thinking analyses read through here, so they agree on
what the run is:

    rows        the current plan's generations (every row when the store has no plan), the
                newest per (variant, task, item_index, repeat): a store holding rows of an
                earlier version of the spec (another max_new_tokens, say) counts each cell once.
                `include_superseded=True` returns every row, the others flagged `superseded`.
    variants    every variant described, generated or planned (an undescribed one: method
                "dense" when it is its own base model, else "unknown")
    failures    generations that still fail: no generation since, planned; the latest attempt
    planned     (variant, task) -> samples planned

Reading never changes the store (read-only connection), and reads a version-1 store as it is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from crbench.records import DENSE, FailureRecord, StoredGeneration, VariantRecord
from crbench.store_schema import (
    SCORE_COLUMNS,
    failure_from_row,
    generation_from_row,
    score_from_row,
    variant_from_row,
)

if TYPE_CHECKING:
    from crbench.store import Store

UNKNOWN = "unknown"  # the method of a variant nothing describes


@dataclass
class RunData:
    """A run as its store holds it (see the module docstring)."""

    path: Path  # the store file
    rows: list[StoredGeneration]
    variants: dict[str, VariantRecord]
    failures: list[FailureRecord] = field(default_factory=list)
    planned: Counter[tuple[str, str]] = field(default_factory=Counter)
    superseded: int = 0  # stored rows that are not part of the run (left out, or flagged)
    schema_version: int = 0  # of the file as stored (1: written before versions existed)


def read_run(run_dir_or_store_path: str | Path, *, include_superseded: bool = False) -> RunData:
    """Read a run directory (or its results.sqlite). Read-only: never changes the store."""
    from crbench.errors import InputError
    from crbench.store import guarded, open_readonly, store_path

    path = store_path(run_dir_or_store_path)
    if not path.is_file():
        raise InputError(Path(run_dir_or_store_path),
                         f"no results store ({path.name}) in this run directory")
    conn = open_readonly(path)
    try:
        with guarded(conn):
            return _read(conn, path, include_superseded)
    finally:
        conn.close()


def _read(conn: Store, path: Path, include_superseded: bool) -> RunData:
    has_plan = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'plan'"
                            ).fetchone() is not None
    has_plan = has_plan and conn.execute("SELECT 1 FROM plan LIMIT 1").fetchone() is not None
    rows, superseded = _generations(conn, has_plan, include_superseded)
    variants = _variants(conn, rows)
    planned: Counter[tuple[str, str]] = Counter()
    if has_plan:
        for r in conn.execute("SELECT variant, task, count(*) FROM plan GROUP BY 1, 2"):
            planned[(r[0], r[1])] = int(r[2])
            variants.setdefault(r[0], VariantRecord(r[0], r[0], UNKNOWN))  # nothing made yet
    return RunData(path=path, rows=rows, variants=variants, failures=_failures(conn, has_plan),
                   planned=planned, superseded=superseded, schema_version=conn.schema_version)


def _generations(conn: Store, has_plan: bool, include_superseded: bool
                 ) -> tuple[list[StoredGeneration], int]:
    score_columns = ", ".join(f"s.{c} AS s_{c}" for c in SCORE_COLUMNS)
    planned = "g.key IN (SELECT key FROM plan)" if has_plan else "1"
    sql = (f"SELECT g.*, {score_columns}, {planned} AS planned FROM generations g "
           "LEFT JOIN scores s ON s.key = g.key ORDER BY g.created_at, g.key")
    # Newest per cell wins; rows of no current plan are superseded whatever their age.
    latest: dict[tuple[str, str, int, int], StoredGeneration] = {}
    old: list[StoredGeneration] = []
    for row in conn.execute(sql):
        stored = StoredGeneration(generation_from_row(row), score_from_row(row, "s_"))
        if not row["planned"]:
            old.append(replace(stored, superseded=True))
            continue
        g = stored.generation
        cell = (g.variant, g.task, g.item_index, g.repeat)
        if cell in latest:
            old.append(replace(latest[cell], superseded=True))
        latest[cell] = stored
    rows = list(latest.values()) + (old if include_superseded else [])
    rows.sort(key=lambda s: (s.generation.variant, s.generation.task, s.generation.item_index,
                             s.generation.repeat, s.generation.created_at, s.generation.key))
    return rows, len(old)


def _variants(conn: Store, rows: list[StoredGeneration]) -> dict[str, VariantRecord]:
    variants = {r["variant"]: variant_from_row(r) for r in conn.execute("SELECT * FROM variants")}
    if conn.schema_version < 2:  # before lineage: a compressed variant pairs with its base
        variants = {name: v if v.method == DENSE or name == v.base_model or v.parent
                    else replace(v, parent=v.base_model) for name, v in variants.items()}
    for stored in rows:  # generated before (or without) its variants row
        g = stored.generation
        if g.variant not in variants:
            method = DENSE if g.variant == g.base_model else UNKNOWN
            variants[g.variant] = VariantRecord(g.variant, g.base_model, method)
    return variants


def _failures(conn: Store, has_plan: bool) -> list[FailureRecord]:
    """Still failing: no generation since, planned (if there is a plan); the latest attempt."""
    planned = "AND key IN (SELECT key FROM plan)" if has_plan else ""
    sql = (f"SELECT *, max(at) FROM failures WHERE key NOT IN (SELECT key FROM generations) "
           f"{planned} GROUP BY key ORDER BY variant, task, item_index, repeat, key")
    return [failure_from_row(r) for r in conn.execute(sql)]


def iter_rows(conn: Store, *, variant: str | None = None, task: str | None = None,
              planned_only: bool = False) -> Iterator[dict[str, object]]:
    """Every stored row as a dict of columns, generation then score ones (NULL when unscored;
    the score's `truncated` is `score_truncated`), in a stable order. Low level: tests and
    benchmarks look at the raw rows; the run itself is `read_run`'s."""
    from crbench.store import guarded

    where, args = [], []
    if variant is not None:
        where.append("g.variant = ?")
        args.append(variant)
    if task is not None:
        where.append("g.task = ?")
        args.append(task)
    if planned_only:
        where.append("g.key IN (SELECT key FROM plan)")
    sql = ("SELECT g.*, s.extracted, s.correct, s.no_answer, s.truncated AS score_truncated, "
           "s.rule, s.em, s.f1, s.details FROM generations g LEFT JOIN scores s USING (key)"
           + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY g.variant, g.task, g.item_index, g.repeat, g.key")
    with guarded(conn):
        for row in conn.execute(sql, args):
            yield dict(row)


def iter_table(conn: Store, table: str) -> Iterator[dict[str, object]]:
    """All rows of `variants`, `failures`, `meta` or `plan`, as dicts (low level, like
    `iter_rows`)."""
    from crbench.store import guarded

    if table not in ("variants", "failures", "meta", "plan"):
        raise ValueError(table)
    with guarded(conn):
        for row in conn.execute(f"SELECT * FROM {table}"):
            yield dict(row)
