"""`crbench export RUN_DIR`: one row per generation of the run, with its score, as JSONL, CSV or
parquet. Rows are what the report counts (`crbench.store.read_run`: the current plan's rows,
newest per cell); `--all` adds every superseded row, with `superseded` true.

Columns: every GenerationRecord field, then the score's (`extracted`, `correct`, `no_answer`,
`score_truncated`, `rule`, `em`, `f1`, `details` as JSON text; empty when unscored), then
`superseded` with `--all`.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

from crbench.errors import InputError
from crbench.records import StoredGeneration
from crbench.store_schema import GENERATION_COLUMNS

EXPORT_FORMATS = ("jsonl", "csv", "parquet")
SCORE_EXPORT_COLUMNS = ("extracted", "correct", "no_answer", "score_truncated", "rule", "em",
                        "f1", "details")
EXPORT_COLUMNS = (*GENERATION_COLUMNS, *SCORE_EXPORT_COLUMNS)
INTEGER_COLUMNS = ("item_index", "repeat", "seed", "prompt_tokens", "completion_tokens",
                   "thinking_tokens", "answer_tokens", "truncated", "correct", "no_answer",
                   "score_truncated")
REAL_COLUMNS = ("wall_s", "em", "f1")
BOOL_COLUMNS = ("superseded",)
Row = dict[str, str | int | float | bool | None]


def export_row(stored: StoredGeneration, with_superseded: bool) -> Row:
    row: Row = dict(asdict(stored.generation))
    row["truncated"] = int(stored.generation.truncated)
    row["extra"] = json.dumps(stored.generation.extra, default=str)
    score = stored.score
    row.update({
        "extracted": score.extracted if score else None,
        "correct": int(score.correct) if score else None,
        "no_answer": int(score.no_answer) if score else None,
        "score_truncated": int(score.truncated) if score else None,
        "rule": score.rule if score else None,
        "em": score.em if score else None,
        "f1": score.f1 if score else None,
        "details": json.dumps(score.details, default=str) if score else None,
    })
    if with_superseded:
        row["superseded"] = stored.superseded
    return row


def export_run(run_dir: str | Path, fmt: str = "jsonl", out: str | Path | None = None, *,
               include_superseded: bool = False) -> Path:
    """Write the run's rows to `out` (default RUN_DIR/generations.<fmt>); written beside and
    renamed into place."""
    from crbench.store import read_run

    if fmt not in EXPORT_FORMATS:
        raise InputError(None, f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}",
                         "--format")
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / f"generations.{fmt}"
    run = read_run(run_dir, include_superseded=include_superseded)
    columns = (*EXPORT_COLUMNS, *(BOOL_COLUMNS if include_superseded else ()))
    rows = [export_row(stored, include_superseded) for stored in run.rows]
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write(tmp, fmt, columns, rows, shown_as=out)
        tmp.replace(out)
    except OSError as exc:
        raise InputError(out, f"cannot write the export: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


def write(path: Path, fmt: str, columns: tuple[str, ...], rows: list[Row], *, shown_as: Path
          ) -> None:
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({c: row[c] for c in columns}, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    else:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(shown_as, "parquet export needs pyarrow (pip install pyarrow); "
                                   "or use --format jsonl/csv") from None
        table = pa.Table.from_pylist([{c: row[c] for c in columns} for row in rows],
                                     schema=export_schema(pa, columns))
        pq.write_table(table, path)


def export_schema(pa: ModuleType, columns: tuple[str, ...]) -> object:
    """Fixed column types, so an all-NULL column (say, em) still has one."""
    def arrow_type(column: str) -> object:
        if column in INTEGER_COLUMNS:
            return pa.int64()
        if column in REAL_COLUMNS:
            return pa.float64()
        return pa.bool_() if column in BOOL_COLUMNS else pa.string()

    return pa.schema([(c, arrow_type(c)) for c in columns])
