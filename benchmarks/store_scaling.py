"""Does storing a generation (or checking whether one is stored) slow down as the store grows?

Builds stores of 1k and 100k generations (1 KB outputs, like short reasoning traces), then times
on each, through the runner's own functions:
    insert   `store.insert_generation`: one generation + its score, one committed transaction
    recheck  `store.stored_keys`: the runner's check before each chunk, per key
    start    `store.stored_scores`: the skip-check at the start of a run (with scores), per key
    per generation = insert + recheck + start: the store's whole cost for one generation
(half the checked keys are stored, spread over the store). Prints a table and `ratio:` lines
(time at 1k / time at 100k; near 1 means no slowdown).

    .venv/bin/python benchmarks/store_scaling.py [--sizes 1000 100000] [--timed 500]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from crbench import store
from crbench.records import GenerationRecord, ScoreRecord, StoredGeneration

OUTPUT = "Let me think step by step. " * 38  # about 1 KB


def row(i: int) -> GenerationRecord:
    key = hashlib.sha256(str(i).encode()).hexdigest()
    return GenerationRecord(
        key=key, variant=f"v{i % 7}", base_model="m", engine="hf", task=f"t{i % 4}",
        task_id="aime24", task_options="{}", item_index=i, item_id=str(i), repeat=i % 3,
        seed=i % 3, sampling='{"temperature": 0.0}', prompt="Problem text <think>\n",
        output=OUTPUT, reasoning=None, prompt_tokens=80, completion_tokens=256,
        thinking_tokens=200, answer_tokens=56, finish_reason="length", truncated=True,
        wall_s=1.0, created_at=store.now(),
    )


def score(key: str) -> ScoreRecord:
    return ScoreRecord(key, extracted="12", correct=False, no_answer=False, truncated=True,
                       rule="boxed-truncated-tail")


def fill(conn: store.Store, n: int) -> None:
    """Bulk-load n rows (fast path, many per transaction): only the setup, not timed."""
    for start in range(0, n, 10_000):
        rows = [row(i) for i in range(start, min(n, start + 10_000))]
        store.insert_generations(conn, (StoredGeneration(r, score(r.key)) for r in rows))


def measure(n: int, timed: int, root: Path) -> dict[str, float]:
    run_dir = root / f"store-{n}"
    conn = store.connect(run_dir)
    fill(conn, n)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    new = [row(n + i) for i in range(timed)]
    started = time.perf_counter()
    for r in new:
        store.insert_generation(conn, r, score(r.key))
    insert_s = (time.perf_counter() - started) / timed
    # Checks over keys spread across the store, half of them absent.
    keys = [row(i).key for i in range(0, n, max(1, n // timed))][:timed]
    keys += [row(n + timed + i).key for i in range(len(keys))]
    recheck_s = per_key(lambda: store.stored_keys(conn, keys), len(keys))
    start_s = per_key(lambda: store.stored_scores(conn, keys), len(keys))
    assert len(store.stored_keys(conn, keys)) == len(keys) // 2
    size_mb = (run_dir / store.STORE_FILE).stat().st_size / 1e6
    conn.close()
    return {"rows": n, "insert_ms": insert_s * 1e3, "recheck_us": recheck_s * 1e6,
            "start_us": start_s * 1e6, "total_ms": (insert_s + recheck_s + start_s) * 1e3,
            "file_mb": size_mb}


def per_key(check, n_keys: int, repeats: int = 5) -> float:
    """Median seconds per key of `check` (the first call also warms SQLite's page cache)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        check()
        times.append((time.perf_counter() - started) / n_keys)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1_000, 100_000])
    parser.add_argument("--timed", type=int, default=500, help="inserts timed per size")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the stores")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = [measure(n, args.timed, Path(tmp)) for n in args.sizes]
    load = os.getloadavg()[0]
    print(f"store scaling ({args.timed} timed inserts per size; load average {load:.1f})")
    columns = (("rows", "rows", "d"), ("insert ms", "insert_ms", ".3f"),
               ("recheck us/key", "recheck_us", ".2f"), ("start us/key", "start_us", ".2f"),
               ("per generation ms", "total_ms", ".3f"), ("file MB", "file_mb", ".1f"))
    print(" ".join(f"{title:>18}" for title, _, _ in columns))
    for r in results:
        print(" ".join(f"{r[name]:>18{fmt}}" for _, name, fmt in columns))
    small, large = results
    print(f"ratio: {small['total_ms'] / large['total_ms']:.2f} per generation "
          f"(insert {small['insert_ms'] / large['insert_ms']:.2f}, "
          f"recheck {small['recheck_us'] / large['recheck_us']:.2f}, "
          f"start {small['start_us'] / large['start_us']:.2f}; "
          f"time at {small['rows']} rows / time at {large['rows']} rows)")


if __name__ == "__main__":
    main()
