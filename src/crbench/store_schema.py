"""The store's tables, derived from the records' fields, and the migrations between versions.

Each record of `crbench.records` is one table: a column per field, under the field's name, typed
from its annotation (str -> TEXT, int and bool -> INTEGER, float -> REAL, a dict -> TEXT holding
JSON; `X | None` may be NULL, anything else is NOT NULL). So a field added to a record is a column
here; it needs a new `SCHEMA_VERSION` and a step in `migrate`.

    version  written by                          what changed
    1        crbench up to commit 72b1cdb         (no version in meta) generations.task_name;
                                                  variants without parent/bits_per_weight/teacher
    2        crbench up to commit b3c5202          task_name -> task_id; variant lineage columns;
                                                  meta schema_version
    3        crbench up to commit d305abb          table `probes` (ProbeRecord) added
    4        this code                            generations.extra (JSON: what the engine
                                                  reported, e.g. budget forcing); old rows '{}'

A store opened for writing is migrated in place, in one transaction. A read-only open never
changes the file: the reader (`crbench.store_read`) reads a version-1 store as it is.
"""

from __future__ import annotations

import json
import sqlite3
import types
import typing
from dataclasses import asdict
from pathlib import Path

from crbench.errors import InputError
from crbench.records import (
    FailureRecord,
    GenerationRecord,
    JsonDict,
    ProbeRecord,
    ScoreRecord,
    VariantRecord,
    field_names,
)

SCHEMA_VERSION = 4
VERSION_KEY = "schema_version"

GENERATION_COLUMNS = field_names(GenerationRecord)
SCORE_COLUMNS = field_names(ScoreRecord)
VARIANT_COLUMNS = field_names(VariantRecord)
FAILURE_COLUMNS = field_names(FailureRecord)
PROBE_COLUMNS = field_names(ProbeRecord)
PLAN_COLUMNS = ("key", "variant", "task", "item_index", "repeat")


def sql_type(annotation: object) -> str:
    """SQLite column type (with NOT NULL unless the annotation allows None)."""
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    nullable = type(None) in args
    base = next((a for a in args if a is not type(None)), annotation)
    base = typing.get_origin(base) or base
    names = {str: "TEXT", bool: "INTEGER", int: "INTEGER", float: "REAL", dict: "TEXT"}
    if base not in names:
        raise TypeError(f"no SQL type for {annotation!r}")
    return names[base] if nullable else f"{names[base]} NOT NULL"


def table_sql(name: str, record_type: type, primary: str | None, extra: str = "") -> str:
    hints = typing.get_type_hints(record_type)
    columns = [f"{field} {sql_type(hints[field])}"
               + (" PRIMARY KEY" if field == primary else "")
               for field in field_names(record_type)]
    body = ",\n  ".join(columns)
    return f"CREATE TABLE IF NOT EXISTS {name} (\n  {body}{extra}\n);"


PROBES_SCHEMA = [  # forced-answer probes of stored generations (crbench.probes)
    table_sql("probes", ProbeRecord, "key"),
    "CREATE INDEX IF NOT EXISTS probes_by_generation ON probes (generation_key);",
]

SCHEMA = "\n".join([
    table_sql("generations", GenerationRecord, "key"),
    "CREATE INDEX IF NOT EXISTS generations_by_cell ON generations (variant, task, repeat);",
    table_sql("scores", ScoreRecord, "key", ",\n  FOREIGN KEY (key) REFERENCES generations (key)"),
    table_sql("variants", VariantRecord, "variant"),
    table_sql("failures", FailureRecord, None),
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
    # The keys the latest `crbench run` of this directory asked for (replaced by each run). A
    # store can hold rows of earlier versions of a spec (say, another max_new_tokens); joining
    # on `plan` selects the current spec's cells; plan keys missing from `generations` are not
    # done yet.
    "CREATE TABLE IF NOT EXISTS plan (key TEXT PRIMARY KEY, variant TEXT NOT NULL, "
    "task TEXT NOT NULL, item_index INTEGER NOT NULL, repeat INTEGER NOT NULL);",
    *PROBES_SCHEMA,
])


# --- versions -------------------------------------------------------------------------------


def columns_of(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def stored_version(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of an existing store; refuses one newer than this code."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (VERSION_KEY,)).fetchone() \
        if has_meta else None
    if row is None:
        return 1
    try:
        version = int(row[0])
    except ValueError:
        raise InputError(path, f"bad schema_version {row[0]!r} in the store's meta") from None
    if version > SCHEMA_VERSION:
        raise InputError(path, f"written by a newer crbench (store schema {version}; this one "
                               f"knows up to {SCHEMA_VERSION}); upgrade crbench to read it")
    return version


def create_or_migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Inside a transaction: create a new store, or bring an older one to SCHEMA_VERSION."""
    existing = "generations" in {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    version = stored_version(conn, path) if existing else SCHEMA_VERSION
    if version < 2:
        migrate_1_to_2(conn)
    if version < 3:
        migrate_2_to_3(conn)
    if version < 4:
        migrate_3_to_4(conn)
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)  # executescript would COMMIT the open transaction
    conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                 (VERSION_KEY, str(SCHEMA_VERSION)))


def migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """task_name -> task_id; the variant lineage columns (a compressed variant of a v1 store
    is paired with the model it was made from)."""
    if "task_name" in columns_of(conn, "generations"):
        conn.execute("ALTER TABLE generations RENAME COLUMN task_name TO task_id")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "variants" in tables:
        hints = typing.get_type_hints(VariantRecord)
        have = columns_of(conn, "variants")
        for column in VARIANT_COLUMNS:
            if column not in have:  # every new variant column may be NULL
                conn.execute(f"ALTER TABLE variants ADD COLUMN {column} "
                             f"{sql_type(hints[column]).replace(' NOT NULL', '')}")
        conn.execute("UPDATE variants SET parent = base_model "
                     "WHERE parent IS NULL AND method != 'dense' AND variant != base_model")


def migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Only adds the `probes` table (and its index); no existing row changes."""
    for statement in PROBES_SCHEMA:
        conn.execute(statement)


def migrate_3_to_4(conn: sqlite3.Connection) -> None:
    """generations.extra, '{}' for the rows stored before it existed."""
    if "extra" not in columns_of(conn, "generations"):
        conn.execute("ALTER TABLE generations ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'")


# --- records <-> rows -----------------------------------------------------------------------


def generation_values(generation: GenerationRecord, now: str) -> dict[str, object]:
    values = asdict(generation)
    values["truncated"] = int(generation.truncated)
    values["created_at"] = generation.created_at or now
    values["extra"] = json.dumps(generation.extra, default=str)
    return values


def score_values(score: ScoreRecord) -> dict[str, object]:
    values = asdict(score)
    for flag in ("correct", "no_answer", "truncated"):
        values[flag] = int(values[flag])
    values["details"] = json.dumps(score.details, default=str)
    return values


def variant_values(variant: VariantRecord) -> dict[str, object]:
    return asdict(variant)


def failure_values(failure: FailureRecord, now: str) -> dict[str, object]:
    return {**asdict(failure), "at": failure.at or now}


def generation_from_row(row: typing.Mapping[str, object]) -> GenerationRecord:
    """A stored generations row (either version) as its record."""
    have = set(row.keys())  # a sqlite3.Row's `in` looks at values, not names
    values = {name: row[name] for name in GENERATION_COLUMNS if name in have}
    if "task_id" not in values:
        values["task_id"] = row["task_name"]  # version 1
    values["truncated"] = bool(values["truncated"])
    values["extra"] = json_object(values.get("extra"))  # absent before version 4
    return GenerationRecord(**values)  # type: ignore[arg-type]  # SQLite's values, typed by it


def json_object(text: object) -> JsonDict:
    """A stored JSON object column as a dict ({} when empty, absent or not an object)."""
    if not isinstance(text, str):
        return {}
    try:
        loaded = json.loads(text)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def score_from_row(row: typing.Mapping[str, object], prefix: str = "") -> ScoreRecord | None:
    """A scores row (its columns named `prefix + name`), None when the row has no score."""
    if row[f"{prefix}correct"] is None:
        return None
    details = row[f"{prefix}details"]
    parsed: JsonDict = {}
    if isinstance(details, str):
        try:
            loaded = json.loads(details)
        except ValueError:
            loaded = None
        parsed = loaded if isinstance(loaded, dict) else {}
    return ScoreRecord(
        key=str(row[f"{prefix}key"]),
        extracted=None if row[f"{prefix}extracted"] is None else str(row[f"{prefix}extracted"]),
        correct=bool(row[f"{prefix}correct"]),
        no_answer=bool(row[f"{prefix}no_answer"]),
        truncated=bool(row[f"{prefix}truncated"]),
        rule=str(row[f"{prefix}rule"]),
        em=_optional_float(row[f"{prefix}em"]),
        f1=_optional_float(row[f"{prefix}f1"]),
        details=parsed,
    )


def variant_from_row(row: typing.Mapping[str, object]) -> VariantRecord:
    have = set(row.keys())
    values = {name: row[name] for name in VARIANT_COLUMNS if name in have}
    return VariantRecord(**values)  # type: ignore[arg-type]  # SQLite's values, typed by it


def failure_from_row(row: typing.Mapping[str, object]) -> FailureRecord:
    values = {name: row[name] for name in FAILURE_COLUMNS}
    return FailureRecord(**values)  # type: ignore[arg-type]  # SQLite's values, typed by it


def probe_values(probe: ProbeRecord, now: str) -> dict[str, object]:
    values = asdict(probe)
    for flag in ("correct", "no_answer"):
        values[flag] = int(values[flag])
    values["created_at"] = probe.created_at or now
    return values


def probe_from_row(row: typing.Mapping[str, object]) -> ProbeRecord:
    values = {name: row[name] for name in PROBE_COLUMNS}
    values["correct"] = bool(values["correct"])
    values["no_answer"] = bool(values["no_answer"])
    return ProbeRecord(**values)  # type: ignore[arg-type]  # SQLite's values, typed by it


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
