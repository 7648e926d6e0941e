"""`crbench merge RUN_DIR... --out DIR`: one store from several (the shards of a run, or runs of
one spec made on different machines).

    generations  union by key (INSERT OR IGNORE: a key stored by two inputs is kept from the
                 first), each with its score from the same input
    variants     union; for a label described twice the later input's description wins (a
                 measured ppl is kept), as when a run re-describes it
    failures     union of the attempts (identical rows once)
    probes       union by key (forced-answer probes, `crbench.probe_store`)
    plan         union of the plans: the merged run is everything the shards were asked for

Inputs must be runs of the same spec: their meta `spec` must be equal once the shard setting is
left out, else the merge is refused in one line. If DIR already holds a store, it is one of the
inputs (merging a shard into an earlier merge adds it). Merging is idempotent: the same inputs
give the same rows. Inputs are only read; the result is built in a folder beside DIR and renamed
into place, so an interrupted merge leaves DIR as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from crbench.errors import InputError
from crbench.records import FailureRecord, ProbeRecord, StoredGeneration, VariantRecord
from crbench.store_schema import failure_from_row

if TYPE_CHECKING:
    from crbench.store import Store

SHARD_SETTINGS = ("shard",)  # spec fields that differ between shards of one run


@dataclass(frozen=True)
class StoreContents:
    """Everything a merge takes from one input store."""

    path: Path
    spec: object | None  # the meta `spec` JSON, shard settings removed
    spec_path: str | None
    rows: list[StoredGeneration]
    variants: list[VariantRecord]
    failures: list[FailureRecord]
    plan: list[tuple[str, str, str, int, int]]
    probes: list[ProbeRecord]


@dataclass(frozen=True)
class MergeResult:
    out: Path
    inputs: int
    generations: int  # in the merged store
    planned: int


def read_contents(run_dir: Path) -> StoreContents:
    from crbench.probe_store import read_probes
    from crbench.store import guarded, open_readonly, read_run

    run = read_run(run_dir, include_superseded=True)
    conn = open_readonly(run.path)
    try:
        with guarded(conn):
            # the described variants, as the reader gives them (a v1 store's with lineage)
            variants = [run.variants[r[0]] for r in conn.execute("SELECT variant FROM variants")]
            failures = [failure_from_row(r) for r in conn.execute("SELECT * FROM failures")]
            plan = [(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in conn.execute(
                "SELECT key, variant, task, item_index, repeat FROM plan")] \
                if _has_table(conn, "plan") else []
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall()) \
                if _has_table(conn, "meta") else {}
    finally:
        conn.close()
    return StoreContents(path=run.path, spec=_spec_without_shard(run.path, meta.get("spec")),
                         spec_path=meta.get("spec_path"), rows=run.rows, variants=variants,
                         failures=failures, plan=plan, probes=read_probes(run.path))


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def _spec_without_shard(path: Path, text: str | None) -> object | None:
    if text is None:
        return None
    try:
        spec = json.loads(text)
    except ValueError:
        raise InputError(path, "the store's meta `spec` is not JSON") from None
    if isinstance(spec, dict):
        spec = {k: v for k, v in spec.items() if k not in SHARD_SETTINGS}
    return spec


def check_same_spec(inputs: Sequence[StoreContents]) -> None:
    first = inputs[0]
    for other in inputs[1:]:
        if other.spec != first.spec:
            raise InputError(other.path, f"a run of another spec than {first.path} "
                                         "(their stored specs differ beyond the shard); "
                                         "merge only shards or runs of one spec")


def merge_runs(run_dirs: Sequence[str | Path], out: str | Path) -> MergeResult:
    """Merge the stores of `run_dirs` (and out's own, if any) into `out` (see the module
    docstring)."""
    from crbench.store import STORE_FILE

    out = Path(out)
    sources = [Path(d) for d in run_dirs]
    if not sources:
        raise InputError(None, "merge needs at least one run directory")
    if (out / STORE_FILE).is_file() and not any(_same(out, s) for s in sources):
        sources.insert(0, out)
    inputs = [read_contents(s) for s in sources]
    check_same_spec(inputs)
    tmp = out.with_name(f".{out.name}.merge-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        result = write_merged(inputs, tmp)
        place(tmp, out)
    except OSError as exc:
        raise InputError(out, f"cannot write the merged store: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return MergeResult(out, len(inputs), result[0], result[1])


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def write_merged(inputs: Sequence[StoreContents], folder: Path) -> tuple[int, int]:
    """Build the merged store in `folder`; returns (generations, planned keys)."""
    from crbench.store import (
        connect,
        count_generations,
        insert_generations,
        put_variant,
        record_failure,
        set_meta,
        set_plan,
    )

    conn = connect(folder)
    try:
        for contents in inputs:
            insert_generations(conn, sorted(contents.rows, key=lambda s: s.generation.key))
            for variant in contents.variants:
                put_variant(conn, variant)
        failures = {f for contents in inputs for f in contents.failures}
        for failure in sorted(failures, key=lambda f: (f.at, f.key, f.error)):
            record_failure(conn, failure)
        insert_probes(conn, [p for contents in inputs for p in contents.probes])
        plan = sorted({row for contents in inputs for row in contents.plan})
        set_plan(conn, plan)
        if inputs[0].spec is not None:
            set_meta(conn, "spec", inputs[0].spec)
        if inputs[0].spec_path is not None:
            set_meta(conn, "spec_path", inputs[0].spec_path)
        total = count_generations(conn)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return total, len(plan)


def insert_probes(conn: Store, probes: list[ProbeRecord]) -> None:
    """All probes in one transaction; a key stored already is kept as it is."""
    from crbench.store import insert_sql, now, transaction
    from crbench.store_schema import PROBE_COLUMNS, probe_values

    with transaction(conn):
        for probe in sorted(probes, key=lambda p: p.key):
            conn.execute(insert_sql("probes", PROBE_COLUMNS), probe_values(probe, now()))


def place(tmp: Path, out: Path) -> None:
    """Move the merged store into `out`: a rename of the folder when `out` is new; else of the
    store file, after removing the old store's WAL files (read already; they belong to the
    file being replaced and would be replayed into the new one)."""
    from crbench.store import STORE_FILE

    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
        return
    if not out.is_dir():
        raise InputError(out, "--out is a file, not a run directory")
    for suffix in ("-wal", "-shm"):
        (out / f"{STORE_FILE}{suffix}").unlink(missing_ok=True)
    os.replace(tmp / STORE_FILE, out / STORE_FILE)
