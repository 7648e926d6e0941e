"""The results store: WAL, insert-or-ignore, concurrent writers, clear errors, export."""

from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from unprivileged import as_unprivileged

from crbench import store
from crbench.errors import InputError
from crbench.export import export_run
from crbench.records import FailureRecord, GenerationRecord, ScoreRecord, VariantRecord


def generation(key: str, **changes) -> GenerationRecord:
    row = {
        "key": key, "variant": "dense", "base_model": "dense", "engine": "hf", "task": "aime",
        "task_id": "aime24", "task_options": "{}", "item_index": int(key.split("-")[-1]),
        "item_id": key, "repeat": 0, "seed": 0, "sampling": "{}", "prompt": "p <think>\n",
        "output": "x </think> \\boxed{3}", "reasoning": None, "prompt_tokens": 5,
        "completion_tokens": 7, "thinking_tokens": 4, "answer_tokens": 3,
        "finish_reason": "stop", "truncated": False, "wall_s": 0.5,
    }
    return GenerationRecord(**{**row, **changes})


def score(key: str, **changes) -> ScoreRecord:
    values = {"extracted": "3", "correct": True, "no_answer": False, "truncated": False,
              "rule": "boxed-after-think", "details": {"why": "test"}}
    return ScoreRecord(key=key, **{**values, **changes})


def test_connect_creates_a_wal_store_with_the_schema(tmp_path):
    conn = store.connect(tmp_path / "run")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"generations", "scores", "variants", "failures", "meta", "plan"} <= tables
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == store.BUSY_TIMEOUT_MS


def test_a_key_is_stored_once_and_never_rewritten(tmp_path):
    conn = store.connect(tmp_path)
    assert store.insert_generation(conn, generation("k-1"), score("k-1")) is True
    assert store.insert_generation(conn, generation("k-1", output="other"), None) is False
    rows = list(store.iter_rows(conn))
    assert len(rows) == 1
    assert rows[0]["output"] == "x </think> \\boxed{3}" and rows[0]["correct"] == 1
    assert json.loads(rows[0]["details"]) == {"why": "test"}
    assert store.stored_keys(conn, ["k-1", "k-2"]) == {"k-1"}
    assert store.stored_scores(conn, ["k-1"]) == {"k-1": True}


def test_rescoring_replaces_scores_only(tmp_path):
    conn = store.connect(tmp_path)
    store.insert_generation(conn, generation("k-1"), score("k-1"))
    store.replace_scores(conn, [score("k-1", correct=False, rule="none")])
    (row,) = store.iter_rows(conn)
    assert (row["correct"], row["rule"], row["output"]) == (0, "none", "x </think> \\boxed{3}")


def test_variants_failures_plan_and_meta(tmp_path):
    conn = store.connect(tmp_path)
    store.put_variant(conn, VariantRecord("w", "m", "wanda", sparsity=0.5, ppl=40.0))
    store.put_variant(conn, VariantRecord("w", "m", "wanda", sparsity=0.5, size_bytes=10))
    # no ppl: the stored one stays
    (variant,) = store.iter_table(conn, "variants")
    assert (variant["ppl"], variant["size_bytes"], variant["sparsity"]) == (40.0, 10, 0.5)
    store.record_failure(conn, FailureRecord("k", "w", "t", item_index=3, repeat=1,
                                             error="Timeout", attempts=3))
    (failure,) = store.iter_table(conn, "failures")
    assert (failure["item_index"], failure["attempts"]) == (3, 3)
    store.set_plan(conn, [("k-1", "w", "t", 1, 0)])
    store.insert_generation(conn, generation("k-1"), score("k-1"))
    store.insert_generation(conn, generation("k-2"), score("k-2"))
    assert [r["key"] for r in store.iter_rows(conn, planned_only=True)] == ["k-1"]
    store.set_meta(conn, "spec", {"a": 1})
    assert json.loads(store.get_meta(conn, "spec")) == {"a": 1}


def insert_range(run_dir: str, start: int, stop: int) -> None:
    conn = store.connect(run_dir)
    for i in range(start, stop):
        store.insert_generation(conn, generation(f"k-{i}"), score(f"k-{i}"))
    conn.close()


def test_two_processes_writing_one_store_never_duplicate_or_lose(tmp_path):
    # Overlapping key ranges, written at the same time by two processes.
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=insert_range, args=(str(tmp_path), a, b))
             for a, b in ((0, 300), (150, 450))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    conn = store.connect(tmp_path)
    keys = [r["key"] for r in store.iter_rows(conn)]
    assert len(keys) == 450 == len(set(keys))
    assert conn.execute("SELECT count(*) FROM scores").fetchone()[0] == 450


def test_creating_a_store_waits_for_another_process_creating_it(tmp_path):
    """Two runs creating one store at the same moment (CI caught it): SQLite fails the switch
    to WAL at once, without its busy handler, when it meets the other's write lock on a file
    still in rollback mode. Opening the store waits for the lock instead."""
    other = sqlite3.connect(tmp_path / store.STORE_FILE, isolation_level=None,
                            check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the other run, half way through creating the store
    release = threading.Timer(1.0, other.execute, ["ROLLBACK"])
    release.start()
    started = time.monotonic()
    try:
        conn = store.connect(tmp_path)
    finally:
        release.join()
        other.close()
    assert time.monotonic() - started >= 0.9  # it waited for the lock, it did not go around it
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert "generations" in store.table_names(conn)
    conn.close()


def test_corrupted_store_is_a_one_line_input_error(tmp_path):
    (tmp_path / store.STORE_FILE).write_bytes(b"this is not a database\n" * 300)
    with pytest.raises(InputError, match="not a SQLite results store") as err:
        store.connect(tmp_path)
    assert str(err.value).startswith(str(tmp_path / store.STORE_FILE))
    with pytest.raises(InputError, match="not a SQLite results store"):
        store.connect(tmp_path, readonly=True)
    assert (tmp_path / store.STORE_FILE).read_bytes().startswith(b"this is not")  # untouched


def test_damaged_store_cli_exit_2(tmp_path):
    """A store whose pages were overwritten: the CLI says so in one line, exit 2."""
    conn = store.connect(tmp_path)
    for i in range(200):
        store.insert_generation(conn, generation(f"k-{i}", output="y" * 500), score(f"k-{i}"))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    path = tmp_path / store.STORE_FILE
    data = bytearray(path.read_bytes())
    data[4096:4096 * 4] = b"\xff" * (4096 * 3)  # smash a few pages past the header
    path.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "export", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"crbench: error: {path}: ")


def test_disk_full_is_a_clear_error_and_keeps_what_is_stored(tmp_path):
    conn = store.connect(tmp_path)
    store.insert_generation(conn, generation("k-0"), score("k-0"))
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLite's own "disk is full"
    with pytest.raises(InputError, match="disk is full"):
        for i in range(1, 200):
            store.insert_generation(conn, generation(f"k-{i}", output="z" * 4000), score(f"k-{i}"))
    conn.close()
    rows = list(store.iter_rows(store.connect(tmp_path, readonly=True)))
    assert rows[0]["key"] == "k-0" and all(r["correct"] == 1 for r in rows)


def test_read_only_run_dir():
    # Not under pytest's tmp_path: its parents are private to root, and `nobody` must see in.
    tmp_path = Path(tempfile.mkdtemp(prefix="crbench-ro-"))
    run_dir = tmp_path / "run"
    insert_range(str(run_dir), 0, 3)
    for p in (tmp_path, run_dir):
        p.chmod(0o755)
    (run_dir / store.STORE_FILE).chmod(0o644)
    for extra in run_dir.iterdir():
        if extra.name != store.STORE_FILE:
            extra.unlink()  # the -wal/-shm files; the data is checkpointed into the main file
    run_dir.chmod(0o555)
    code = ("import sys; from crbench import store\n"
            "from crbench.errors import InputError\n"
            "rows = list(store.iter_rows(store.connect(sys.argv[1], readonly=True)))\n"
            "print(len(rows))\n"
            "try:\n    store.connect(sys.argv[1])\nexcept InputError as e:\n    print(e)\n")
    env = {**os.environ, "HOME": str(tmp_path)}
    try:
        proc = subprocess.run(as_unprivileged([sys.executable, "-c", code, str(run_dir)]),
                              capture_output=True, text=True, env=env, timeout=120)
    finally:
        run_dir.chmod(0o755)
        shutil.rmtree(tmp_path)
    assert proc.returncode == 0, proc.stderr
    count, message = proc.stdout.strip().splitlines()
    assert count == "3"  # reading works (immutable open) ...
    assert "read-only" in message and str(run_dir) in message  # ... writing says why not


def test_export_formats(tmp_path):
    conn = store.connect(tmp_path)
    store.insert_generation(conn, generation("k-1"), score("k-1"))
    store.insert_generation(conn, generation("k-2", output='say "hi",\nnewline'), None)
    conn.close()
    jsonl = export_run(tmp_path, "jsonl")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["key"] for r in rows] == ["k-1", "k-2"]
    assert rows[0]["thinking_tokens"] == 4 and rows[0]["correct"] == 1
    assert rows[1]["correct"] is None and rows[1]["output"] == 'say "hi",\nnewline'
    with export_run(tmp_path, "csv", tmp_path / "out.csv").open(newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert csv_rows[1]["output"] == 'say "hi",\nnewline' and csv_rows[0]["answer_tokens"] == "3"
    import pyarrow.parquet as pq

    table = pq.read_table(export_run(tmp_path, "parquet"))
    assert table.num_rows == 2 and table.column("completion_tokens").to_pylist() == [7, 7]
    with pytest.raises(InputError, match="unknown export format"):
        export_run(tmp_path, "xlsx")
    with pytest.raises(InputError, match="no results store"):
        export_run(tmp_path / "empty", "jsonl")


def test_readonly_connection_cannot_write(tmp_path):
    insert_range(str(tmp_path), 0, 1)
    conn = store.connect(tmp_path, readonly=True)
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM generations")


def test_export_cli(tmp_path):
    insert_range(str(tmp_path / "run"), 0, 3)
    target = tmp_path / "out" / "rows.jsonl"
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "export", str(tmp_path / "run"),
                           "--out", str(target)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(target)
    assert len(target.read_text().splitlines()) == 3
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "export", str(tmp_path / "run"),
                           "--format", "xml"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown export format 'xml'" in proc.stderr


# --- versions: a store written by the code of commit 72b1cdb (schema 1) -----------------------

V1_STORE = Path(__file__).parent / "fixtures" / "store_v1"
EXAMPLE_DATA = Path(__file__).parent.parent / "examples" / "data"


def v1_copy(tmp_path: Path) -> Path:
    """tests/fixtures/store_v1/results.sqlite, made at commit 72b1cdb by `crbench run` of
    spec_a.toml then spec_b.toml (max_new_tokens 12, then 16: 8 superseded rows) in /tmp/v1spec,
    plus one failure outside the plan. Copied, so the fixture itself never changes."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(V1_STORE / store.STORE_FILE, run / store.STORE_FILE)
    return run


def test_a_v1_store_is_read_as_it_is_and_left_unchanged(tmp_path):
    run = v1_copy(tmp_path)
    before = (run / store.STORE_FILE).read_bytes()
    data = store.read_run(run)
    assert data.schema_version == 1
    assert len(data.rows) == 8 and data.superseded == 8
    assert {(s.generation.task, s.generation.task_id) for s in data.rows} == {
        ("aime", "aime24"), ("folio", "folio")}
    assert all(s.score is not None for s in data.rows)
    # the plan of the second run (max_new_tokens 16) is what the run is
    assert {json.loads(s.generation.sampling)["max_new_tokens"] for s in data.rows} == {16}
    assert data.planned == {("smol", "aime"): 2, ("smol", "folio"): 2,
                            ("smol-mag50", "aime"): 2, ("smol-mag50", "folio"): 2}
    assert data.variants["smol"].method == "dense" and data.variants["smol"].parent is None
    mag = data.variants["smol-mag50"]
    assert (mag.method, mag.sparsity, mag.parent) == ("magnitude", 0.5, "smol")
    assert data.failures == []  # the one failure is not in the plan
    everything = store.read_run(run, include_superseded=True)
    assert len(everything.rows) == 16 and sum(s.superseded for s in everything.rows) == 8
    assert (run / store.STORE_FILE).read_bytes() == before


def test_a_writing_connect_migrates_a_v1_store(tmp_path):
    run = v1_copy(tmp_path)
    as_read = store.read_run(run)
    conn = store.connect(run)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(generations)")]
    assert "task_id" in columns and "task_name" not in columns
    variant_columns = [r[1] for r in conn.execute("PRAGMA table_info(variants)")]
    assert {"parent", "bits_per_weight", "teacher"} <= set(variant_columns)
    assert store.get_meta(conn, "schema_version") == str(store.SCHEMA_VERSION)
    conn.close()
    migrated = store.read_run(run)
    assert migrated.schema_version == store.SCHEMA_VERSION
    assert migrated.rows == as_read.rows and migrated.variants == as_read.variants
    assert migrated.planned == as_read.planned and migrated.superseded == 8
    store.connect(run).close()  # a second open finds it current and changes nothing
    assert store.read_run(run).rows == as_read.rows


def test_export_and_rescoring_of_a_v1_store(tmp_path):
    run = v1_copy(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "export", str(run)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {r["task_id"] for r in rows} == {"aime24", "folio"}
    assert {r["key"] for r in rows} == {s.generation.key for s in store.read_run(run).rows}
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "export", str(run), "--all",
                           "--format", "csv"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    with (run / "generations.csv").open(newline="") as f:
        flags = [r["superseded"] for r in csv.DictReader(f)]
    assert sorted(flags) == ["False"] * 8 + ["True"] * 8
    # The stored task options name the data files where the fixture was made; point them here.
    for name in ("aime_mini.jsonl", "folio_mini.jsonl"):
        shutil.copy(EXAMPLE_DATA / name, tmp_path / name)
    with sqlite3.connect(run / store.STORE_FILE) as raw:
        raw.execute("UPDATE generations SET task_options = "
                    "replace(task_options, '/tmp/v1spec/', ?)", (f"{tmp_path}/",))
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "score", "--run", str(run),
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["rescored"], result["skipped"]) == (16, 0), result
    assert set(result["tasks"]) == {"aime", "folio"}
    assert store.read_run(run).schema_version == store.SCHEMA_VERSION  # migrated on the way


def test_a_store_from_a_newer_crbench_is_refused_in_one_line(tmp_path):
    conn = store.connect(tmp_path)
    store.insert_generation(conn, generation("k-1"), score("k-1"))
    store.set_meta(conn, "schema_version", store.SCHEMA_VERSION + 1)
    conn.close()
    for open_it in (lambda: store.connect(tmp_path), lambda: store.read_run(tmp_path)):
        with pytest.raises(InputError, match="written by a newer crbench"):
            open_it()
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "export", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "upgrade crbench" in proc.stderr


def test_schema_columns_are_the_records_fields(tmp_path):
    conn = store.connect(tmp_path)
    for table, record in (("generations", GenerationRecord), ("scores", ScoreRecord),
                          ("variants", VariantRecord), ("failures", FailureRecord)):
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
        assert tuple(columns) == tuple(f.name for f in dataclasses.fields(record))
    nullable = {r[1]: not r[3] for r in conn.execute("PRAGMA table_info(generations)")}
    assert nullable["reasoning"] and not nullable["output"]


def test_the_report_and_export_agree_on_what_the_run_is(tmp_path):
    """Both read through `read_run`: the same samples per cell, the same superseded rows."""
    from crbench.report import load_results

    run = v1_copy(tmp_path)  # holds rows of an earlier version of its spec
    exported = [json.loads(line) for line in export_run(run).read_text().splitlines()]
    results = load_results(run, n_boot=10)
    by_export: dict[tuple[str, str], list[int]] = {}
    for row in exported:
        by_export.setdefault((row["variant"], row["task"]), []).append(row["correct"])
    by_report = {cell: [int(s.correct) for s in stats.samples]
                 for cell, stats in results.cells.items()}
    assert {c: sorted(v) for c, v in by_report.items()} \
        == {c: sorted(v) for c, v in by_export.items()}
    assert sum(results.unscored.values()) == 0
    everything = [json.loads(line) for line in
                  export_run(run, include_superseded=True).read_text().splitlines()]
    assert sum(r["superseded"] for r in everything) == results.superseded == 8
    assert [r for r in everything if not r["superseded"]] == [
        {**r, "superseded": False} for r in exported]


def test_what_the_engine_reported_is_stored_with_the_generation(tmp_path):
    forced = {"thinking": {"forced_close": True, "thinking_tokens": 12, "waits": 0},
              "attempts": 1}
    conn = store.connect(tmp_path)
    store.insert_generation(conn, generation("k-1", extra=forced), score("k-1"))
    store.insert_generation(conn, generation("k-2"), score("k-2"))
    conn.close()
    rows = {r.generation.key: r.generation.extra for r in store.read_run(tmp_path).rows}
    assert rows == {"k-1": forced, "k-2": {}}
    exported = export_run(tmp_path, "jsonl")
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [json.loads(line["extra"]) for line in lines] == [forced, {}]


def test_a_version_3_store_gains_the_extra_column(tmp_path):
    conn = store.connect(tmp_path)
    store.insert_generation(conn, generation("k-1"), score("k-1"))
    conn.execute("ALTER TABLE generations DROP COLUMN extra")  # as version 3 wrote it
    conn.execute("UPDATE meta SET value = '3' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    assert [r.generation.extra for r in store.read_run(tmp_path).rows] == [{}]  # read as it is
    conn = store.connect(tmp_path)  # a writing open migrates
    assert store.get_meta(conn, "schema_version") == str(store.SCHEMA_VERSION) == "4"
    store.insert_generation(conn, generation("k-2", extra={"a": 1}), score("k-2"))
    conn.close()
    assert [r.generation.extra for r in store.read_run(tmp_path).rows] == [{}, {"a": 1}]
