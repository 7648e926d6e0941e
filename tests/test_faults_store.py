"""The results store under `crbench run` when the disk fills up, the run directory is read-only,
or other processes write and read the same store at the same time. Each case ends in either a
clear one-line error (exit 2) or correct sharing; never in lost, doubled or damaged results.
Stored rows are compared before and after with a separate read-only sqlite3 connection.

(tests/test_store.py covers the same faults one level down, on `crbench.store` itself: SQLite's
own page limit as a full disk, a read-only folder, corrupted files, two writer processes;
tests/test_kill.py covers two processes running one spec.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from unprivileged import as_unprivileged

from crbench import store
from crbench.records import GenerationRecord, ScoreRecord

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
CRBENCH = [sys.executable, "-m", "crbench.cli"]


def spec_file(path: Path, task: str, data: str, repeats: int = 1) -> Path:
    label = "aime" if task == "aime24" else task
    path.write_text(
        f'[models.smol]\nsource = "demo"\nbatch_size = 1\n\n'
        f'[[tasks]]\ntask = "{task}"\nlabel = "{label}"\npath = "{DATA / data}"\n\n'
        f"[sampling]\nmax_new_tokens = 4\nrepeats = {repeats}\n", encoding="utf-8")
    return path


def crbench(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CRBENCH, *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kwargs)


def results(run_dir: Path) -> dict[str, dict]:
    """key -> generation and score, read independently of crbench (read-only sqlite3)."""
    conn = sqlite3.connect(f"{(run_dir / store.STORE_FILE).as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT g.*, s.correct, s.rule FROM generations g "
                            "LEFT JOIN scores s USING (key)").fetchall()
        keys = [r["key"] for r in rows]
        assert len(keys) == len(set(keys))
        return {r["key"]: dict(r) for r in rows}
    finally:
        conn.close()


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    lines = [x for x in done.stderr.strip().splitlines() if not x.startswith("Loading weights")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("crbench: error: "), done.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]


# --- disk full --------------------------------------------------------------------------------


@pytest.fixture
def small_disk():
    """A 3 MiB tmpfs: a real file system that really fills up (needs root to mount)."""
    mount = Path(tempfile.mkdtemp(prefix="crbench-full-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); "
                    "tests/test_store.py fills the store with SQLite's page limit instead")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def fill(disk: Path) -> Path:
    """Write a file until the file system has no byte left (bounded: it is 3 MiB)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 1):
            for _ in range(4 * 1024 * 1024 // size):
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_disk_full_during_a_run_is_one_line_and_keeps_every_stored_result(tmp_path, small_disk,
                                                                         demo_model):
    out = small_disk / "run"
    first = crbench("run", spec_file(tmp_path / "s.toml", "aime24", "aime_mini.jsonl"),
                    "--out", out)
    assert first.returncode == 0, first.stderr[-3000:]
    before = results(out)
    assert len(before) == 4

    filler = fill(small_disk)
    more = spec_file(tmp_path / "s.toml", "aime24", "aime_mini.jsonl", repeats=3)
    full = crbench("run", more, "--out", out)
    assert_one_line_error(full, str(out), "disk is full")
    after = results(out)
    assert {k: after[k] for k in before} == before  # nothing stored was lost or changed

    filler.unlink()  # space again: the same command finishes the job
    again = crbench("run", more, "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    final = results(out)
    assert len(final) == 12 and all(final[k] == row for k, row in before.items())
    assert all(row["rule"] is not None for row in final.values())


# --- read-only run directory ------------------------------------------------------------------


def test_read_only_run_dir_each_command_says_so_or_reads(demo_model):
    # Not under pytest's tmp_path: its parents are private to root, and `nobody` must see in.
    root = Path(tempfile.mkdtemp(prefix="crbench-ro-"))
    try:
        run_dir = root / "run"
        conn = store.connect(run_dir)
        for i in range(3):
            store.insert_generation(conn, GenerationRecord(
                key=f"k{i}", variant="smol", base_model="smol", engine="hf", task="aime",
                task_id="aime24", item_index=i, item_id=f"mini-{i}",
                task_options=json.dumps({"path": str(DATA / "aime_mini.jsonl")}), repeat=0,
                seed=0, sampling="{}", prompt="p <think>\n", output="x </think> \\boxed{1}",
                reasoning=None, prompt_tokens=3, completion_tokens=4, thinking_tokens=2,
                answer_tokens=2, finish_reason="stop", truncated=False, wall_s=0.1),
                ScoreRecord(f"k{i}", extracted="1", correct=i == 0, no_answer=False,
                            truncated=False, rule="boxed"))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        for extra in run_dir.iterdir():  # the -wal/-shm files: everything is in the main file
            if extra.name != store.STORE_FILE:
                extra.unlink()
        spec = spec_file(root / "spec.toml", "aime24", "aime_mini.jsonl")
        for path in (root, spec):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (run_dir / store.STORE_FILE).chmod(0o644)
        run_dir.chmod(0o555)
        digest = hashlib.sha256((run_dir / store.STORE_FILE).read_bytes()).hexdigest()
        home = root / "home"  # nobody's: caches (matplotlib's) go here
        home.mkdir()
        home.chmod(0o777)
        env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home)}

        def as_user(*args: str | Path) -> subprocess.CompletedProcess:
            return crbench_as_nobody(args, env)

        writers = {
            "run": as_user("run", spec, "--out", run_dir),
            "score --run": as_user("score", "--run", run_dir),
            "report": as_user("report", run_dir, "--format", "md"),
            "export": as_user("export", run_dir),
        }
        readers = {
            "export --out": as_user("export", run_dir, "--out", home / "rows.jsonl"),
            "report --out": as_user("report", run_dir, "--format", "md", "--out",
                                    home / "report"),
        }
    finally:
        run_dir.chmod(0o755)
        after = hashlib.sha256((run_dir / store.STORE_FILE).read_bytes()).hexdigest()
        rows_file = root / "home" / "rows.jsonl"
        exported = rows_file.read_text().splitlines() if rows_file.exists() else []
        shutil.rmtree(root)
    for done in writers.values():
        assert_one_line_error(done, str(run_dir))
    for name, done in readers.items():
        assert done.returncode == 0, (name, done.stderr[-3000:])
    assert len(exported) == 3
    assert after == digest


def crbench_as_nobody(args: tuple, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(as_unprivileged([*CRBENCH, *map(str, args)]), capture_output=True,
                          text=True, timeout=600, env=env, cwd="/")


# --- several processes at once ----------------------------------------------------------------


@pytest.mark.slow
def test_two_specs_write_one_store_while_exports_read_it(tmp_path, demo_model):
    """Two different runs write one store at the same time while `crbench export` reads it
    over and over: every row of both runs stored once, every read a consistent snapshot."""
    out = tmp_path / "run"
    specs = [spec_file(tmp_path / "a.toml", "aime24", "aime_mini.jsonl", repeats=2),
             spec_file(tmp_path / "b.toml", "folio", "folio_mini.jsonl", repeats=2)]
    writers = [subprocess.Popen([*CRBENCH, "run", str(s), "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for s in specs]
    snapshots = []
    try:
        deadline = time.monotonic() + 600
        while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
            if (out / store.STORE_FILE).exists():
                target = tmp_path / f"export-{len(snapshots)}.jsonl"
                done = crbench("export", out, "--out", target)
                if done.returncode == 0:
                    snapshots.append([json.loads(x) for x in target.read_text().splitlines()])
                else:  # the store may not have its tables yet in the very first moment
                    assert "no generations table" in done.stderr or not snapshots, done.stderr
            time.sleep(0.2)
        outputs = [w.communicate(timeout=600) for w in writers]
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
    for w, (stdout, stderr) in zip(writers, outputs, strict=True):
        assert w.returncode == 0, stderr[-3000:]
        assert "FAILED" not in stdout
    final = results(out)
    assert len(final) == (4 + 3) * 2
    assert sorted({(r["task"], r["item_index"], r["repeat"]) for r in final.values()}) == sorted(
        [("aime", i, r) for i in range(4) for r in range(2)]
        + [("folio", i, r) for i in range(3) for r in range(2)])
    assert all(r["rule"] is not None for r in final.values())  # each with its score
    assert snapshots, "no export ran while the runs were writing"
    for rows in snapshots:  # each read saw whole rows, each at most once, scored
        keys = [r["key"] for r in rows]
        assert len(keys) == len(set(keys)) and set(keys) <= set(final)
        assert all(r["correct"] is not None for r in rows)
    assert [len(s) for s in snapshots] == sorted(len(s) for s in snapshots)  # never shrinks


def test_a_run_refused_for_a_bad_model_folder_leaves_the_stored_plan_alone(tmp_path):
    out = tmp_path / "run"
    conn = store.connect(out)
    store.set_plan(conn, [("k0", "smol", "aime", 0, 0)])
    conn.close()
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text("{}")
    spec = spec_file(tmp_path / "s.toml", "aime24", "aime_mini.jsonl")
    spec.write_text(spec.read_text().replace('source = "demo"', 'source = "./no-weights"'))
    assert_one_line_error(crbench("run", spec, "--out", out), "no weights")
    conn = sqlite3.connect(out / store.STORE_FILE)
    assert conn.execute("SELECT key FROM plan").fetchall() == [("k0",)]
    conn.close()
