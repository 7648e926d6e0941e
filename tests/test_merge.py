"""`crbench merge`: union of stores by generation key, idempotent, refuses other specs, never
changes its inputs; shards of a run merged equal the unsharded run."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from crbench import store
from crbench.errors import InputError
from crbench.merge import merge_runs
from crbench.probe_store import insert_probe, read_probes
from crbench.records import (
    FailureRecord,
    GenerationRecord,
    ProbeRecord,
    ScoreRecord,
    VariantRecord,
)

FIXTURES = Path(__file__).parent / "fixtures"
CRBENCH = Path(sys.executable).parent / "crbench"
SPEC = {"models": {"m": {"source": "demo"}}, "sampling": {"max_new_tokens": 8}}


def generation(key: str, index: int, variant: str = "m") -> GenerationRecord:
    return GenerationRecord(
        key=key, variant=variant, base_model="m", engine="hf", task="aime", task_id="aime24",
        task_options="{}", item_index=index, item_id=str(index), repeat=0, seed=0,
        sampling="{}", prompt="p <think>\n", output=f"</think> \\boxed{{{index}}}",
        reasoning=None, prompt_tokens=3, completion_tokens=4, thinking_tokens=1,
        answer_tokens=3, finish_reason="stop", truncated=False, wall_s=0.1,
        created_at=f"2026-01-01T00:00:0{index}.000+00:00")


def score(key: str, correct: bool) -> ScoreRecord:
    return ScoreRecord(key, extracted="1", correct=correct, no_answer=False, truncated=False,
                       rule="boxed-after-think")


def make_store(run: Path, keys: list[tuple[str, int]], spec: dict | None = None,
               shard: str | None = None) -> Path:
    conn = store.connect(run)
    for key, index in keys:
        store.insert_generation(conn, generation(key, index), score(key, index % 2 == 0))
    store.set_plan(conn, [(key, "m", "aime", index, 0) for key, index in keys])
    store.put_variant(conn, VariantRecord("m", "m", "dense"))
    store.set_meta(conn, "spec", spec or SPEC)
    if shard:
        store.set_meta(conn, "shard", shard)
    conn.close()
    return run


def dump(run: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted (what two stores must agree on)."""
    conn = sqlite3.connect(f"{(run / store.STORE_FILE).as_uri()}?mode=ro", uri=True)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in ("generations", "scores", "variants", "failures", "plan", "meta",
                          "probes")}
    finally:
        conn.close()


def digest(run: Path) -> str:
    """The store file's bytes (a reader may leave SQLite's -shm beside it, never a change)."""
    return hashlib.sha256((run / store.STORE_FILE).read_bytes()).hexdigest()


def test_merge_is_the_union_and_idempotent(tmp_path):
    a = make_store(tmp_path / "a", [("k0", 0), ("k1", 1)], shard="1/2")
    b = make_store(tmp_path / "b", [("k1", 1), ("k2", 2)], shard="2/2")
    conn = store.connect(b)
    store.record_failure(conn, FailureRecord("k3", "m", "aime", 3, 0, "Timeout", 3,
                                             at="2026-01-01T00:00:09.000+00:00"))
    store.put_variant(conn, VariantRecord("m", "m", "dense", ppl=12.5))
    insert_probe(conn, ProbeRecord(
        key="p1", generation_key="k2", variant="m", task="aime", item_index=2, repeat=0,
        budget=4, thinking_used=1, thinking_total=1, cue="Answer:", max_new_tokens=8,
        engine="hf", output="2", new_tokens=1, finish_reason="stop", extracted="2",
        correct=False, no_answer=False, rule="answer-line", wall_s=0.1))
    conn.close()
    before = (digest(a), digest(b))
    result = merge_runs([a, b], tmp_path / "merged")
    assert (result.generations, result.planned, result.inputs) == (3, 3, 2)
    assert (digest(a), digest(b)) == before  # inputs untouched
    run = store.read_run(tmp_path / "merged")
    assert [s.generation.key for s in run.rows] == ["k0", "k1", "k2"]
    assert all(s.score is not None for s in run.rows)
    assert run.variants["m"].ppl == 12.5
    assert [f.key for f in run.failures] == []  # k3 is not planned
    assert len(dump(tmp_path / "merged")["failures"]) == 1
    assert [p.key for p in read_probes(tmp_path / "merged")] == ["p1"]
    merged_meta = dict(dump(tmp_path / "merged")["meta"])
    assert "shard" not in merged_meta and json.loads(merged_meta["spec"]) == SPEC
    first = dump(tmp_path / "merged")
    merge_runs([a, b], tmp_path / "merged")  # again, into the same place: out is an input
    assert dump(tmp_path / "merged") == first
    merge_runs([b, a], tmp_path / "again")  # another order, another place
    assert dump(tmp_path / "again")["generations"] == first["generations"]
    assert dump(tmp_path / "again")["plan"] == first["plan"]
    merge_runs([a], tmp_path / "merged")  # a shard merged into its merge adds nothing
    assert dump(tmp_path / "merged") == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "again", "b", "merged"]


def test_merge_keeps_each_score_with_its_generation(tmp_path):
    a = make_store(tmp_path / "a", [("k0", 0)])
    conn = store.connect(a)
    store.replace_scores(conn, [replace(score("k0", True), rule="rescored")])
    conn.close()
    b = make_store(tmp_path / "b", [("k0", 0), ("k1", 1)])
    merge_runs([a, b], tmp_path / "out")
    rows = {s.generation.key: s.score for s in store.read_run(tmp_path / "out").rows}
    assert rows["k0"] is not None and rows["k0"].rule == "rescored"  # the first input's


def test_merge_refuses_another_spec_in_one_line(tmp_path):
    a = make_store(tmp_path / "a", [("k0", 0)])
    other = {**SPEC, "sampling": {"max_new_tokens": 16}}
    b = make_store(tmp_path / "b", [("k1", 1)], spec=other)
    with pytest.raises(InputError, match="another spec"):
        merge_runs([a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    done = subprocess.run([str(CRBENCH), "merge", str(a), str(b), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert str(b) in done.stderr and "another spec" in done.stderr
    # the shard setting, in the spec or beside it, is not a difference
    c = make_store(tmp_path / "c", [("k2", 2)], spec={**SPEC, "shard": "2/2"}, shard="2/2")
    assert merge_runs([a, c], tmp_path / "ac").generations == 2
    done = subprocess.run([str(CRBENCH), "merge", str(tmp_path / "nothing"), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no results store" in done.stderr


def test_merge_reads_a_v1_store(tmp_path):
    run = tmp_path / "v1"
    run.mkdir()
    shutil.copy(FIXTURES / "store_v1" / store.STORE_FILE, run / store.STORE_FILE)
    result = merge_runs([run, run], tmp_path / "out")
    assert (result.generations, result.planned) == (16, 8)
    merged = store.read_run(tmp_path / "out")
    assert merged.schema_version == store.SCHEMA_VERSION
    assert merged.rows == store.read_run(run).rows
    assert merged.variants["smol-mag50"].parent == "smol"


# --- shards of a real run --------------------------------------------------------------------


class Answerer(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose answer depends only on the prompt."""

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body.get("prompt") or json.dumps(body.get("messages"))
        number = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 7
        data = json.dumps({"choices": [{"text": f"hmm</think>\\boxed{{{number}}}",
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 6}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def answerer() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answerer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_two_shards_merged_equal_the_unsharded_run(answerer, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(f"""
[models.srv]
source = "{answerer}"
engine = "openai"
model = "demo"

[[tasks]]
task = "aime24"
label = "aime"
path = "{FIXTURES / 'aime24_problems.jsonl'}"

[[tasks]]
task = "folio"
path = "{FIXTURES / 'folio_v2.jsonl'}"

[sampling]
max_new_tokens = 8
repeats = 2
""")
    for args in (("--out", "whole"), ("--shard", "1/2", "--out", "s1"),
                 ("--shard", "2/2", "--out", "s2")):
        done = subprocess.run([str(CRBENCH), "run", str(spec), *args], capture_output=True,
                              text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    shards = [store.read_run(tmp_path / s) for s in ("s1", "s2")]
    assert all(run.rows for run in shards)  # each shard did a share
    done = subprocess.run([str(CRBENCH), "merge", "s1", "s2", "--out", "merged"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    def rows(run: str) -> list[tuple]:
        data = store.read_run(tmp_path / run)
        return sorted((s.generation.key, s.generation.variant, s.generation.task,
                       s.generation.item_index, s.generation.repeat, s.generation.output,
                       s.score) for s in data.rows)

    assert rows("merged") == rows("whole")
    whole = store.read_run(tmp_path / "whole")
    assert len(rows("whole")) == sum(whole.planned.values()) > 10
    assert store.read_run(tmp_path / "merged").planned == whole.planned
    assert sum(len(run.rows) for run in shards) == len(whole.rows)
