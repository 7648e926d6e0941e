"""The results store: one SQLite file per run directory (`RUN_DIR/results.sqlite`, WAL mode).

One row per generation, keyed by a stable hash of everything that determines it (variant,
engine settings, task and its options, item, prompt, sampling, repeat). A generation is committed
the moment it finishes; re-running skips stored keys; a changed parameter makes a new key.
Scores live beside generations and can be recomputed from them at any time.

The tables are the records of `crbench.records` (`crbench.store_schema` derives the columns from
their fields): generations = GenerationRecord, scores = ScoreRecord, variants = VariantRecord,
failures = FailureRecord; plus `plan` (the keys the latest run asked for) and `meta` (spec,
`schema_version`). Writers pass records; the one reader, `read_run`, gives them back.

Crash safety: every generation is its own transaction (generation row and score row together),
so a process killed at any moment leaves every finished generation stored and none half-stored.
WAL with synchronous=NORMAL survives a killed process (the OS still holds the log); after a power
cut the last few commits may be missing but the file is never corrupt. Rows are only ever added
with INSERT OR IGNORE, so two processes writing one store never duplicate a key; stored
generations are never updated or deleted (scores are recomputed by `rescore`, plans replaced).

Versions: a store written by an older crbench is migrated when opened for writing, and read as
it is when opened read-only (`crbench.store_schema`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from crbench.errors import InputError
from crbench.records import (
    FailureRecord,
    GenerationRecord,
    ScoreRecord,
    StoredGeneration,
    VariantRecord,
)
from crbench.store_schema import (
    FAILURE_COLUMNS,
    GENERATION_COLUMNS,
    SCHEMA_VERSION,
    SCORE_COLUMNS,
    VARIANT_COLUMNS,
    create_or_migrate,
    failure_values,
    generation_values,
    score_values,
    stored_version,
    variant_values,
)

__all__ = [
    "SCHEMA_VERSION", "STORE_FILE", "Store", "connect", "insert_generation",
    "insert_generations", "replace_scores",
    "record_failure", "put_variant", "set_plan", "set_meta", "get_meta", "stored_keys",
    "stored_scores", "read_run", "RunData", "iter_rows", "iter_table", "count_generations",
]

STORE_FILE = "results.sqlite"
BUSY_TIMEOUT_MS = 60_000
CACHE_KIB = -65_536  # 64 MiB page cache (negative = KiB): the key index of 1M rows fits
PlanRow = tuple[str, str, str, int, int]  # (key, variant, task, item_index, repeat)


class Store(sqlite3.Connection):
    """A connection that knows its file (so every error can name it) and its schema version."""

    path: Path
    schema_version: int


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def explain(path: Path, exc: sqlite3.Error) -> InputError:
    """Turn SQLite's error into one line a person can act on."""
    code = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text \
            or "malformed" in text:
        return InputError(path, "not a SQLite results store (corrupted or another kind of file); "
                                "move it away or choose another --out")
    if code == "SQLITE_FULL" or "disk is full" in text:
        return InputError(path, "disk is full; free space and re-run (stored rows are kept)")
    if code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) or "readonly" in text \
            or "unable to open" in text:
        return InputError(path, "cannot write the results store here (read-only?); "
                                "choose another --out")
    if is_busy(exc):
        return InputError(path, f"store is locked by another process for over "
                                f"{BUSY_TIMEOUT_MS // 1000} s")
    return InputError(path, f"results store error: {text}")


def is_busy(exc: sqlite3.Error) -> bool:
    """Another connection holds the lock (SQLITE_BUSY, "database is locked")."""
    return getattr(exc, "sqlite_errorname", "") == "SQLITE_BUSY" or "locked" in str(exc)


@contextlib.contextmanager
def guarded(conn: Store) -> Iterator[None]:
    """Run SQLite calls, reporting their failure as InputError naming the store file."""
    try:
        yield
    except sqlite3.Error as exc:
        raise explain(conn.path, exc) from None


def store_path(run_dir_or_store: str | Path) -> Path:
    """RUN_DIR/results.sqlite, or the store file itself when given one."""
    path = Path(run_dir_or_store)
    return path if path.suffix == ".sqlite" or path.is_file() else path / STORE_FILE


def connect(run_dir: str | Path, *, readonly: bool = False) -> Store:
    """Open the store of a run directory. For writing it is created if needed, and an older
    store is migrated to `SCHEMA_VERSION`; `readonly` opens never change the file."""
    run_dir = Path(run_dir)
    path = run_dir / STORE_FILE
    if readonly:
        try:
            exists = path.is_file()
        except OSError as exc:
            raise InputError(path, f"cannot read the results store: {exc.strerror}") from None
        if not exists:
            raise InputError(run_dir, f"no results store ({STORE_FILE}) in this run directory")
        return open_readonly(path)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(run_dir, f"cannot create the run directory: {exc.strerror}") from None
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(run_dir, "the run directory is a file")
    return open_writable(path)


def open_writable(path: Path) -> Store:
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, factory=Store,
                               isolation_level=None)  # we open transactions ourselves
    except sqlite3.Error as exc:
        raise explain(path, exc) from None
    conn.path = path
    conn.row_factory = sqlite3.Row
    try:
        with guarded(conn):
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Another program's SQLite file under our name: refuse before changing anything.
            # (A file with no tables yet is ours, left by a process killed while creating it.)
            tables = table_names(conn)
            if tables and "generations" not in tables:
                raise InputError(path, "not a crbench results store (a SQLite file with other "
                                       "tables); move it away or choose another --out")
            use_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA cache_size = {CACHE_KIB}")
            with transaction(conn):
                create_or_migrate(conn, path)
            conn.schema_version = SCHEMA_VERSION
    except BaseException:
        conn.close()
        raise
    return conn


def use_wal(conn: Store) -> None:
    """PRAGMA journal_mode = WAL, waiting for other connections like every other write does.
    SQLite does not call the busy handler when the switch meets another connection's write
    lock on a store still in rollback mode (two runs creating one store at the same moment):
    it fails at once, so we retry until the busy timeout. Nothing has been written yet."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def open_readonly(path: Path) -> Store:
    """Open for reading only. A store in a read-only folder has no -shm file to share, so
    SQLite is told the file cannot change (`immutable`) when the normal read-only open fails."""
    last: sqlite3.Error | None = None
    for flags in ("mode=ro", "immutable=1"):
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True,
                                   timeout=BUSY_TIMEOUT_MS / 1000, factory=Store)
            conn.path = path
            conn.row_factory = sqlite3.Row
            conn.execute("SELECT count(*) FROM generations").fetchone()
        except sqlite3.Error as exc:
            last = exc
            if is_busy(exc):  # busy for the whole timeout: `immutable` would read
                break  # past the writer's lock, so a half-written state could be seen
            continue
        try:
            conn.schema_version = stored_version(conn, path)
        except BaseException:
            conn.close()
            raise
        return conn
    assert last is not None
    if "no such table" in str(last):
        raise InputError(path, "not a crbench results store (no generations table)")
    raise explain(path, last)


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@contextlib.contextmanager
def transaction(conn: Store) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front, so two writers queue
    (busy_timeout) instead of failing halfway; anything raised rolls back."""
    with guarded(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:  # SQLite rolls back by itself on some errors (disk full)
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def insert_sql(table: str, columns: tuple[str, ...], verb: str = "INSERT OR IGNORE") -> str:
    return (f"{verb} INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(':' + c for c in columns)})")


# --- writing --------------------------------------------------------------------------------


def insert_generation(conn: Store, generation: GenerationRecord, score: ScoreRecord | None
                      ) -> bool:
    """Store one generation and its score in one transaction. False if the key was stored
    already (by an earlier run or another process): the stored row is kept as it was."""
    values = generation_values(generation, now())
    with transaction(conn):
        inserted = conn.execute(insert_sql("generations", GENERATION_COLUMNS),
                                values).rowcount == 1
        if inserted and score is not None:
            if score.key != generation.key:
                raise ValueError(f"score of {score.key!r} given with generation "
                                 f"{generation.key!r}")
            conn.execute(insert_sql("scores", SCORE_COLUMNS), score_values(score))
    return inserted


def insert_generations(conn: Store, rows: Iterable[StoredGeneration]) -> int:
    """Bulk `insert_generation` in one transaction (merging stores): each generation with its
    score, keys stored already left as they are. Returns how many were added."""
    added = 0
    with transaction(conn):
        for stored in rows:
            generation, score = stored.generation, stored.score
            if conn.execute(insert_sql("generations", GENERATION_COLUMNS),
                            generation_values(generation, now())).rowcount == 1:
                added += 1
                if score is not None:
                    conn.execute(insert_sql("scores", SCORE_COLUMNS), score_values(score))
    return added


def replace_scores(conn: Store, scores: Iterable[ScoreRecord]) -> None:
    """Rescoring: scores are derived data, so they (and only they) are replaced."""
    with transaction(conn):
        conn.executemany(insert_sql("scores", SCORE_COLUMNS, "INSERT OR REPLACE"),
                         (score_values(score) for score in scores))


def record_failure(conn: Store, failure: FailureRecord) -> None:
    """A generation that failed after all its retries (one row per attempt of a run)."""
    with transaction(conn):
        conn.execute(insert_sql("failures", FAILURE_COLUMNS, "INSERT"),
                     failure_values(failure, now()))


def put_variant(conn: Store, variant: VariantRecord) -> None:
    """Describe a variant label. Metadata, not results: the latest spec's description wins
    (its generations keep their own full identity in their keys). A stored ppl is kept when
    the new description has none."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in VARIANT_COLUMNS[1:] if c != "ppl")
    with transaction(conn):
        conn.execute(
            insert_sql("variants", VARIANT_COLUMNS, "INSERT")
            + f" ON CONFLICT (variant) DO UPDATE SET {updates}, "
            "ppl = coalesce(excluded.ppl, variants.ppl)",
            variant_values(variant),
        )


def set_plan(conn: Store, rows: Iterable[PlanRow]) -> None:
    """Replace the plan: the (key, variant, task, item_index, repeat) the latest run asks for."""
    with transaction(conn):
        conn.execute("DELETE FROM plan")
        conn.executemany("INSERT OR IGNORE INTO plan (key, variant, task, item_index, repeat) "
                         "VALUES (?, ?, ?, ?, ?)", rows)


def set_meta(conn: Store, name: str, value: object) -> None:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    with transaction(conn):
        conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, text))


def get_meta(conn: Store, name: str) -> str | None:
    with guarded(conn):
        row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return str(row[0]) if row else None


# --- lookups (the runner's skip-checks) -----------------------------------------------------


def select_in(conn: Store, sql: str, keys: Iterable[str]) -> Iterator[sqlite3.Row]:
    """Rows of `sql` (its WHERE has `IN ({marks})`) for every key, in chunks under SQLite's
    bound-parameter limit. One indexed lookup per key: the cost per key grows only with the
    depth of the key index (see benchmarks/store_scaling.py)."""
    keys = list(keys)
    with guarded(conn):
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            yield from conn.execute(sql.format(marks=", ".join("?" * len(chunk))), chunk)


def stored_keys(conn: Store, keys: Iterable[str]) -> set[str]:
    """Which of `keys` are stored (the runner's re-check before each chunk)."""
    return {r[0] for r in select_in(conn, "SELECT key FROM generations WHERE key IN ({marks})",
                                    keys)}


def stored_scores(conn: Store, keys: Iterable[str]) -> dict[str, bool | None]:
    """Stored keys among `keys`, each with its `correct` (None if unscored): the runner's
    skip-check and the starting point of its running accuracy."""
    sql = ("SELECT g.key, s.correct FROM generations g LEFT JOIN scores s USING (key) "
           "WHERE g.key IN ({marks})")
    return {r[0]: None if r[1] is None else bool(r[1]) for r in select_in(conn, sql, keys)}


def count_generations(conn: Store) -> int:
    with guarded(conn):
        return int(conn.execute("SELECT count(*) FROM generations").fetchone()[0])


# The one reader lives in its own module; imported here so `crbench.store` is the whole API.
from crbench.store_read import RunData, iter_rows, iter_table, read_run  # noqa: E402
