"""The `probes` table of a results store (schema 3, `crbench.store_schema`): written one probe
per transaction as each finishes, read back as `ProbeRecord`s.

Like generations, probes are only ever added (INSERT OR IGNORE on their key): a probe run that
is killed leaves every finished probe stored and none half-stored, a second run skips what is
stored, and two processes probing one store never double a key.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from crbench.errors import InputError
from crbench.records import ProbeRecord
from crbench.store import (
    Store,
    guarded,
    insert_sql,
    now,
    open_readonly,
    select_in,
    store_path,
    table_names,
    transaction,
)
from crbench.store_schema import PROBE_COLUMNS, probe_from_row, probe_values


def insert_probe(conn: Store, probe: ProbeRecord) -> bool:
    """Store one probe in its own transaction; False when its key was stored already."""
    with transaction(conn):
        return conn.execute(insert_sql("probes", PROBE_COLUMNS),
                            probe_values(probe, now())).rowcount == 1


def stored_probe_keys(conn: Store, keys: Iterable[str]) -> set[str]:
    """Which of `keys` are stored already."""
    return {r[0] for r in select_in(conn, "SELECT key FROM probes WHERE key IN ({marks})", keys)}


def read_probes(run_dir_or_store_path: str | Path) -> list[ProbeRecord]:
    """Every stored probe (none for a store written before probes existed). Read-only."""
    path = store_path(run_dir_or_store_path)
    if not path.is_file():
        raise InputError(Path(run_dir_or_store_path), f"no results store ({path.name}) here")
    conn = open_readonly(path)
    try:
        with guarded(conn):
            if "probes" not in table_names(conn):
                return []
            rows = conn.execute("SELECT * FROM probes ORDER BY variant, task, item_index, "
                                "repeat, generation_key, budget, key")
            return [probe_from_row(r) for r in rows]
    finally:
        conn.close()
