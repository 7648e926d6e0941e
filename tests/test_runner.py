"""The runner on the real demo model: store every generation with its token accounting, skip what
is stored, new keys for new parameters, failures recorded, rescoring, dry runs, progress."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from crbench import runner, store
from crbench.engines.base import Generation
from crbench.errors import InputError

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"


def write_spec(tmp_path: Path, *, limit: int | None = 2, max_new_tokens: int = 6,
               repeats: int = 2, models: str | None = None, extra: str = "") -> Path:
    limit_line = f"limit = {limit}\n" if limit else ""
    models = models or '[models.smol]\nsource = "demo"\nbatch_size = 4\n'
    text = (
        f"{models}\n"
        f'[[tasks]]\ntask = "aime24"\nlabel = "aime"\npath = "{DATA / "aime_mini.jsonl"}"\n'
        f"{limit_line}\n"
        f'[[tasks]]\ntask = "folio"\npath = "{DATA / "folio_mini.jsonl"}"\n{limit_line}\n'
        f"[sampling]\nmax_new_tokens = {max_new_tokens}\nrepeats = {repeats}\n{extra}"
    )
    path = tmp_path / "spec.toml"
    path.write_text(text, encoding="utf-8")
    return path


def rows(run_dir: Path) -> list[dict]:
    conn = store.connect(run_dir, readonly=True)
    try:
        return list(store.iter_rows(conn))
    finally:
        conn.close()


@pytest.fixture
def no_engine(monkeypatch):
    """Fail the test if anything tries to build an engine (i.e. to generate)."""
    import crbench.engines

    def refuse(*args, **kwargs):
        raise AssertionError("an engine was built: something was generated")

    monkeypatch.setattr(crbench.engines, "make_engine", refuse)


@pytest.mark.slow
def test_run_stores_every_generation_then_skips_them(tmp_path, demo_model, monkeypatch):
    spec = write_spec(tmp_path)
    out = tmp_path / "run"
    summary = runner.run(spec, out, stream=io.StringIO())
    assert (summary.planned, summary.stored_before, summary.generated) == (8, 0, 8)
    first = rows(out)
    assert len(first) == 8
    assert {(r["task"], r["repeat"]) for r in first} == {(t, r) for t in ("aime", "folio")
                                                        for r in (0, 1)}
    for r in first:
        assert r["prompt"].endswith("<think>\n") and r["prompt_tokens"] > 10
        assert 1 <= r["completion_tokens"] <= 6
        assert r["thinking_tokens"] + r["answer_tokens"] == r["completion_tokens"]
        # The prompt opened the thinking: without a `</think>` the whole output is thinking.
        if "</think>" not in r["output"]:
            assert (r["thinking_tokens"], r["truncated"]) == (r["completion_tokens"], 1)
        assert r["truncated"] == 1 or r["finish_reason"] == "stop"
        assert r["rule"] is not None and r["correct"] in (0, 1)  # every row is scored
        assert json.loads(r["sampling"])["seed"] == r["repeat"] == r["seed"]
        assert json.loads(r["task_options"])["path"].endswith(".jsonl")
    # Greedy: the two repeats of an item are the same text.
    by_item = {}
    for r in first:
        by_item.setdefault((r["task"], r["item_index"]), set()).add(r["output"])
    assert all(len(outputs) == 1 for outputs in by_item.values())
    conn = store.connect(out, readonly=True)
    (variant,) = store.iter_table(conn, "variants")
    assert variant["method"] == "dense" and variant["size_bytes"] > 100_000_000
    assert len(list(store.iter_table(conn, "plan"))) == 8
    conn.close()

    # Second invocation: nothing generated, no engine built, rows untouched.
    import crbench.engines

    real_make_engine = crbench.engines.make_engine

    def refuse(*args, **kwargs):
        raise AssertionError("an engine was built on a complete store")

    monkeypatch.setattr(crbench.engines, "make_engine", refuse)
    again = runner.run(spec, out, stream=io.StringIO())
    assert (again.stored_before, again.generated) == (8, 0)
    assert rows(out) == first

    # More items (no limit): the stored ones are reused, only the new ones are generated.
    monkeypatch.setattr(crbench.engines, "make_engine", real_make_engine)
    bigger = runner.run(write_spec(tmp_path, limit=None), out, stream=io.StringIO())
    assert (bigger.planned, bigger.stored_before, bigger.generated) == (14, 8, 6)

    # A changed sampling parameter makes new keys and never overwrites the old rows.
    longer = runner.run(write_spec(tmp_path, max_new_tokens=7, repeats=1), out,
                        stream=io.StringIO())
    assert (longer.stored_before, longer.generated) == (0, 4)
    now = {r["key"]: r for r in rows(out)}
    assert len(now) == 18 and all(now[r["key"]] == r for r in first)
    conn = store.connect(out, readonly=True)
    planned = list(store.iter_rows(conn, planned_only=True))
    assert len(planned) == 4 and {json.loads(r["sampling"])["max_new_tokens"]
                                  for r in planned} == {7}
    conn.close()


def test_dry_run_generates_and_creates_nothing(tmp_path, no_engine):
    spec = write_spec(tmp_path)
    out = tmp_path / "run"
    stream = io.StringIO()
    summary = runner.run(spec, out, dry_run=True, stream=stream)
    assert summary.planned == 8 and not out.exists()
    text = stream.getvalue()
    assert "total: 8 generations, 0 stored, 8 to run" in text
    assert "aime" in text and "folio" in text


def test_dry_run_cli_counts_what_is_stored(tmp_path, demo_model):
    spec = write_spec(tmp_path, repeats=1, limit=1)
    out = tmp_path / "run"
    runner.run(spec, out, stream=io.StringIO())
    before = rows(out)
    write_spec(tmp_path, repeats=2, limit=1)
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "run", str(spec), "--out",
                           str(out), "--dry-run"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "total: 4 generations, 2 stored, 2 to run" in proc.stdout
    assert rows(out) == before


class FailingEngine:
    """The real engine, except that one prompt fails after its retries: reported by yielding
    the exception, or by raising one that carries the prompt's index (then the generator is
    over and the runner must send the other prompts again)."""

    def __init__(self, engine, poison: str, mode: str):
        self.engine, self.poison, self.mode, self.name = engine, poison, mode, engine.name

    def generate(self, prompts, params):
        for index, gen in self.engine.generate(prompts, params):
            if self.poison in str(prompts[index]):
                error = TimeoutError("server did not answer")
                error.attempts, error.index = 3, index
                if self.mode == "raise":
                    raise error
                yield index, error
            else:
                yield index, gen

    def count_tokens(self, text):
        return self.engine.count_tokens(text)

    def close(self):
        self.engine.close()


@pytest.mark.parametrize("mode", ["yield", "raise"])
def test_failures_are_recorded_not_scored_and_retried(tmp_path, demo_model, monkeypatch, mode):
    import crbench.engines

    real = crbench.engines.make_engine
    monkeypatch.setattr(crbench.engines, "make_engine",
                        lambda *a, **k: FailingEngine(real(*a, **k), "720", mode))  # aime #1
    spec = write_spec(tmp_path, limit=None, repeats=1)
    out = tmp_path / "run"
    summary = runner.run(spec, out, stream=io.StringIO())
    assert (summary.planned, summary.generated, len(summary.failed)) == (7, 6, 1)
    assert any("FAILED: 1 generations" in line for line in summary.lines())
    conn = store.connect(out, readonly=True)
    (failure,) = store.iter_table(conn, "failures")
    conn.close()
    assert (failure["task"], failure["item_index"], failure["attempts"]) == ("aime", 1, 3)
    assert "TimeoutError" in failure["error"]
    assert all(r["item_index"] != 1 or r["task"] != "aime" for r in rows(out))

    monkeypatch.setattr(crbench.engines, "make_engine", real)
    retry = runner.run(spec, out, stream=io.StringIO())
    assert (retry.stored_before, retry.generated, retry.failed) == (6, 1, [])


def test_cli_exits_1_when_generations_failed(tmp_path):
    """A server that refuses every request: each item is a recorded failure, exit 1."""
    spec = write_spec(tmp_path, repeats=1, limit=1, models=(
        '[models.srv]\nsource = "http://127.0.0.1:9/v1"\nengine = "openai"\n'
        'model = "x"\nmax_attempts = 1\ntimeout_s = 5\n'))
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "run", str(spec), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED: 2 generations" in proc.stdout


def test_rescore_recomputes_scores_from_stored_outputs(tmp_path, demo_model, no_engine):
    from crbench.records import GenerationRecord, ScoreRecord
    from crbench.rescore import rescore_run

    out = tmp_path / "run"
    conn = store.connect(out)
    store.insert_generation(conn, GenerationRecord(
        key="k1", variant="smol", base_model="smol", engine="hf", task="aime",
        task_id="aime24", item_index=2, item_id="mini-3", repeat=0, seed=0,
        task_options=json.dumps({"path": str(DATA / "aime_mini.jsonl"), "limit": None,
                                 "seed": 0, "style": "completion"}),
        sampling="{}", prompt="p", output="odd ones ... </think> so \\boxed{51}",
        reasoning=None, prompt_tokens=1, completion_tokens=9, thinking_tokens=4,
        answer_tokens=5, finish_reason="stop", truncated=False, wall_s=0.1,
    ), ScoreRecord(key="k1", extracted=None, correct=False, no_answer=True, truncated=False,
                   rule="none"))  # as an older, worse scorer had it
    conn.close()
    result = rescore_run(out)
    assert (result.rescored, result.changed, result.skipped) == (1, 1, 0)
    assert vars(result.tasks["aime"]) == {"n": 1, "before": 0, "after": 1}
    (row,) = rows(out)
    assert (row["correct"], row["extracted"], row["rule"]) == (1, "51", "boxed-after-think")
    assert row["output"] == "odd ones ... </think> so \\boxed{51}"


def test_bad_task_options_and_engine_options_name_the_spec(tmp_path, demo_model):
    spec = write_spec(tmp_path)
    text = spec.read_text().replace('label = "aime"', 'label = "aime"\ndifficulty = 3')
    spec.write_text(text)
    with pytest.raises(InputError) as err:
        runner.run(spec, tmp_path / "run", dry_run=True)
    assert str(err.value).startswith(f"{spec}:[[tasks]] #1: aime24 takes no options")

    spec = write_spec(tmp_path, models='[models.smol]\nsource = "demo"\nbatchsize = 2\n')
    with pytest.raises(InputError) as err:
        runner.run(spec, tmp_path / "run", stream=io.StringIO())
    assert str(err.value).startswith(f"{spec}:[models.smol]: engine 'hf': ")
    assert "batchsize" in str(err.value)


def test_bad_data_file_names_the_file_and_row(tmp_path):
    bad = tmp_path / "aime.jsonl"
    bad.write_text('{"ID": "a", "Problem": "p", "Answer": 3}\n{"ID": "b", "Problem": "q"}\n')
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[models.m]\nsource = "demo"\n[[tasks]]\ntask = "aime24"\npath = "{bad}"\n')
    with pytest.raises(InputError) as err:
        runner.run(spec, tmp_path / "run", dry_run=True)
    assert str(err.value).startswith(str(bad)) and "row 1" in str(err.value)


def test_corrupted_store_cli_is_one_line_exit_2(tmp_path):
    spec = write_spec(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / store.STORE_FILE).write_text("not sqlite " * 500)
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "run", str(spec), "--out",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr == (f"crbench: error: {out / store.STORE_FILE}: not a SQLite results "
                           "store (corrupted or another kind of file); move it away or choose "
                           "another --out\n")
    assert (out / store.STORE_FILE).read_text().startswith("not sqlite")


@pytest.fixture(scope="module")
def engine(demo_model):
    from crbench.engines import make_engine

    engine = make_engine("hf", str(demo_model), batch_size=1)
    yield engine
    engine.close()


@pytest.mark.parametrize(
    ("prompt", "text", "reasoning", "unclosed"),
    [
        ("Q\n<think>\n", "Let me add 2 and 2.\n</think>\n\nThe answer is 4.", None, False),
        ("Q\n<think>\n", "Let me add 2 and 2, carefully, then", None, True),
        ("Q\n<think>\n", "a </think> b <think> c", None, True),
        ([{"role": "user", "content": "Q"}], "The answer is 4.", None, False),
        ([{"role": "user", "content": "Q"}], "The answer is 4.", "Two plus two is four.", False),
    ],
)
def test_thinking_and_answer_tokens_add_up(engine, prompt, text, reasoning, unclosed):
    completion = engine.count_tokens((reasoning or "") + text) + 1  # + EOS
    gen = Generation(text=text, prompt_tokens=3, completion_tokens=completion,
                     finish_reason="stop", wall_s=0.1, reasoning=reasoning)
    thinking, answer, open_ = runner.split_tokens(engine.count_tokens, prompt, gen)
    assert thinking + answer == completion and open_ is unclosed
    if reasoning:
        assert thinking == engine.count_tokens(reasoning)
    elif "</think>" in text and not unclosed:
        head = text[: text.rindex("</think>") + len("</think>")]
        assert thinking == engine.count_tokens(head) and answer >= 1
    elif unclosed:
        assert answer == 0
    else:
        assert thinking == 0


def test_progress_plain_lines_and_escaped_rich_table():
    from rich.console import Console

    from crbench.progress import CellProgress, RunProgress

    stream = io.StringIO()
    cells = [CellProgress("[bold]v[/bold]", "aime", total=2),
             CellProgress("v2", "folio", total=1, done=1, scored=1, correct=1)]
    with RunProgress(cells, stream=stream) as progress:
        progress.start("[bold]v[/bold]", "aime")
        progress.add("[bold]v[/bold]", "aime", tokens=10, correct=True)
        progress.fail("[bold]v[/bold]", "aime")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[bold]v[/bold] / aime: 1/2 done, ")
    assert "acc 1.000 (1/1)" in lines[0] and "1 failed" in lines[-1]
    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(RunProgress(cells, stream=io.StringIO(), live=False).table())
    assert "[bold]v[/bold]" in console.export_text()


@pytest.mark.slow
def test_compressed_variant_is_built_described_and_run(tmp_path, demo_model):
    text = " ".join(["The miller opened the sluice and the wheel began to turn again."] * 40)
    (tmp_path / "ppl.txt").write_text(text)
    spec = write_spec(tmp_path, repeats=1, limit=1, extra='[ppl]\ndata = "ppl.txt"\nseqlen = 64\n',
                      models=('[models.smol]\nsource = "demo"\nbatch_size = 4\n'
                              '[variants.smol-rtn4]\nmodel = "smol"\nmethod = "rtn"\nbits = 4\n'
                              'group_size = 64\n'))
    summary = runner.run(spec, tmp_path / "run", stream=io.StringIO())
    assert summary.generated == 4 and summary.compressed[0].startswith("smol-rtn4")
    conn = store.connect(tmp_path / "run", readonly=True)
    variants = {v["variant"]: v for v in store.iter_table(conn, "variants")}
    conn.close()
    dense, rtn = variants["smol"], variants["smol-rtn4"]
    assert (rtn["method"], rtn["base_model"], rtn["bits"], rtn["group_size"]) == (
        "rtn", "smol", 4, 64)
    assert json.loads(rtn["manifest"])["method"] == "rtn"
    # Fake-quant weights are stored dense; the effective size counts 4 bits per weight.
    assert rtn["size_bytes"] < 0.5 * dense["size_bytes"]
    assert 1 < dense["ppl"] < rtn["ppl"]
    stored = rows(tmp_path / "run")
    assert {r["variant"] for r in stored} == {"smol", "smol-rtn4"}
    assert len({r["key"] for r in stored}) == 4


def test_without_a_tokenizer_tokens_split_by_characters():
    gen = Generation(text="abcdefgh</think>ab", prompt_tokens=3, completion_tokens=9,
                     finish_reason="stop", wall_s=0.1)
    assert runner.split_tokens(None, "Q <think>\n", gen) == (8, 1, False)


@pytest.mark.slow
def test_dry_run_reports_a_real_cache_hit(tmp_path, demo_model, no_engine):
    """The dry run asks the compression cache itself: a variant built already is reported
    with its folder, one that is not as to be built (and nothing is built by asking)."""
    from crbench.compress import cached_path, compress_cached
    from crbench.models import resolve_model

    built = {"method": "rtn", "bits": 4, "group_size": 64}  # test above builds the same one
    unbuilt = {**built, "seed": 987_654_321}  # another cache key; rtn ignores the seed
    path = compress_cached(resolve_model("demo"), built)
    assert cached_path(resolve_model("demo"), built) == path
    assert cached_path(resolve_model("demo"), unbuilt) is None
    spec = write_spec(tmp_path, repeats=1, limit=1, models=(
        '[models.smol]\nsource = "demo"\n'
        '[variants.rtn4]\nmodel = "smol"\nmethod = "rtn"\nbits = 4\ngroup_size = 64\n'
        '[variants.rtn4-other]\nmodel = "smol"\nmethod = "rtn"\nbits = 4\ngroup_size = 64\n'
        'seed = 987654321\n'))
    stream = io.StringIO()
    runner.run(spec, tmp_path / "run", dry_run=True, stream=stream)
    lines = stream.getvalue().splitlines()
    assert f'rtn rtn4: {{"bits":4,"group_size":64,"method":"rtn"}}: cached at {path}' in lines
    assert any(line.startswith("rtn rtn4-other: ") and line.endswith(": will be built")
               for line in lines)
    assert cached_path(resolve_model("demo"), unbuilt) is None
    assert not (tmp_path / "run").exists()


def smoke_spec(folder: Path) -> Path:
    """examples/smoke.toml, its data paths made absolute (it moves into a temp folder)."""
    text = (DATA.parent / "smoke.toml").read_text(encoding="utf-8")
    text = text.replace('path = "data/', f'path = "{DATA}/')
    path = folder / "smoke.toml"
    path.write_text(text, encoding="utf-8")
    return path


def by_key(run_dir: Path) -> dict[str, dict]:
    """Rows by key without what differs between runs: times (`extra` holds the engine's
    latency, so only its budget-forcing record is compared)."""
    return {r["key"]: {**{k: v for k, v in r.items()
                          if k not in ("created_at", "wall_s", "extra")},
                       "thinking": json.loads(r.get("extra") or "{}").get("thinking")}
            for r in rows(run_dir)}


@pytest.mark.slow
def test_two_shards_merged_equal_one_unsharded_run(tmp_path, demo_model):
    """`crbench run --shard K/2` twice, then `crbench merge`: row for row (keys, outputs,
    token counts, scores) what one unsharded run of the smoke spec stores."""
    spec = smoke_spec(tmp_path)
    cli = [sys.executable, "-m", "crbench.cli"]
    whole = tmp_path / "whole"
    proc = subprocess.run([*cli, "run", str(spec), "--out", str(whole)], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    shards = []
    for k in (1, 2):
        proc = subprocess.run([*cli, "run", str(spec), "--shard", f"{k}/2"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
        shard = tmp_path / "runs" / f"smoke-shard-{k}-of-2"  # the default run dir, suffixed
        conn = store.connect(shard, readonly=True)
        meta = {r["name"]: r["value"] for r in store.iter_table(conn, "meta")}
        plan = list(store.iter_table(conn, "plan"))
        conn.close()
        assert meta["shard"] == f"{k}/2"
        assert {p["key"] for p in plan} == set(by_key(shard))  # its share only, all done
        shards.append(shard)
    expected = by_key(whole)
    assert len(expected) == 14 and all(by_key(s) for s in shards)
    assert not set(by_key(shards[0])) & set(by_key(shards[1]))
    assert {**by_key(shards[0]), **by_key(shards[1])} == expected
    merged = tmp_path / "merged"
    proc = subprocess.run([*cli, "merge", *map(str, shards), "--out", str(merged)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert by_key(merged) == expected
