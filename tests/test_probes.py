"""Forced-answer probes: metrics on hand-built traces and probes (checked by hand), the store's
probes table, and real probe runs of the demo model (stored, resumed after SIGKILL, repeated)."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crbench.errors import InputError
from crbench.probe_metrics import (
    Outcome,
    analyse_probes,
    dynasor_rows,
    probe_curves,
    probed_traces,
    s1_metrics,
)
from crbench.probes import ProbeSettings, ladder, parse_budgets, thinking_of
from crbench.records import GenerationRecord, ProbeRecord, ScoreRecord, VariantRecord

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"


def probe(gen: str, budget: int, total: int, extracted: str | None, correct: bool, *,
          variant: str = "dense", item: int = 0, new_tokens: int = 5) -> ProbeRecord:
    return ProbeRecord(
        key=f"{gen}@{budget}", generation_key=gen, variant=variant, task="aime",
        item_index=item, repeat=0, budget=budget, thinking_used=min(budget, total),
        thinking_total=total, cue="\n\nFinal answer: ", max_new_tokens=24, engine="hf",
        output=extracted or "", new_tokens=new_tokens, finish_reason="stop",
        extracted=extracted, correct=correct, no_answer=extracted is None,
        rule="answer-line-after-think" if extracted else "none", wall_s=0.1)


# Two traces of one variant on two AIME items:
#   A (item 0): 100 thinking tokens, finished, right. Probes: 16 -> "3" (wrong), 32 -> "25",
#               64 -> "25" (right).
#   B (item 1): 40 thinking tokens, truncated, wrong. Probes: 16 -> "30" (right), 32 -> "31"
#               (wrong), and at its full length 40 -> "30" (right).
OUTCOMES = [Outcome("A", "dense", "aime", 0, 0, True, False, 99),
            Outcome("B", "dense", "aime", 1, 0, False, True, 41)]
PROBES = [probe("A", 16, 100, "3", False), probe("A", 32, 100, "25", True),
          probe("A", 64, 100, "25", True),
          probe("B", 16, 40, "30", True, item=1), probe("B", 32, 40, "31", False, item=1),
          probe("B", 40, 40, "30", True, item=1)]


def test_probe_curve_by_hand() -> None:
    traces = probed_traces(OUTCOMES, PROBES)
    assert [t.length for t in traces] == [100, 40]  # the probes' count, not the stored one
    points = probe_curves(traces, n_boot=200)
    # budget: (accuracy, mean thinking tokens used)
    #   16: A wrong, B right                       -> 0.5, 16
    #   32: A right, B wrong                       -> 0.5, 32
    #   64: A right, B (truncated, 40 <= 64) full probe right -> 1.0, (64 + 40) / 2
    #   100 (longest, all read whole): A its own answer, B its full probe -> 1.0, 70
    assert [(p.budget, p.accuracy, p.mean_tokens) for p in points] == [
        (16, 0.5, 16.0), (32, 0.5, 32.0), (64, 1.0, 52.0), (100, 1.0, 70.0)]
    assert [p.last for p in points] == [False, False, False, True]
    assert all(p.n_samples == 2 and p.within == 2 for p in points)
    assert points[0].lo == 0.0 and points[0].hi == 1.0


def test_s1_metrics_by_hand() -> None:
    row = s1_metrics(probe_curves(probed_traces(OUTCOMES, PROBES), n_boot=50))
    assert row.control == 1.0 and row.performance == 1.0 and row.points == 4
    # points (tokens, accuracy): (16, .5), (32, .5), (52, 1), (70, 1); mean of the 6 slopes
    slopes = [0.0, 0.5 / 36, 0.5 / 54, 0.5 / 20, 0.5 / 38, 0.0]
    assert row.scaling == pytest.approx(1000 * sum(slopes) / 6)


def test_s1_control_counts_evaluations_over_budget() -> None:
    over = [probe("A", 16, 100, "3", False)]
    over[0] = ProbeRecord(**{**over[0].__dict__, "thinking_used": 20})  # a tokenizer disagreed
    points = probe_curves(probed_traces(OUTCOMES[:1], over), n_boot=20)
    assert s1_metrics(points).control == pytest.approx(1 / 2)  # 16: over; 100: within
    single = [p for p in points if p.budget == 100]
    assert math.isnan(s1_metrics(single).scaling)  # one point: no slope


def test_dynasor_stop_by_hand() -> None:
    traces = probed_traces(OUTCOMES, PROBES)
    two, three = dynasor_rows(traces, ms=(2, 3), n_boot=100)
    # m=2: A stops at 64 ("25", "25"), right; B never stops ("30", "31"): own answer (wrong),
    # its whole 40 tokens. Probes paid: A 3 x 5, B 2 x 5 (its full-length probe is not one of
    # Dynasor's).
    assert (two.stopped, two.accuracy_full, two.accuracy_stop) == (1, 0.5, 0.5)
    assert (two.tokens_full, two.tokens_stop, two.probe_tokens) == (140, 104, 25)
    assert two.saved == pytest.approx(1 - 104 / 140)
    assert two.saved_with_probes == pytest.approx(1 - 129 / 140)
    assert two.change == 0.0
    # m=3: A's three answers disagree, nobody stops: nothing saved
    assert (three.stopped, three.tokens_stop, three.saved) == (0, 140, 0.0)


def test_dynasor_never_stops_on_agreeing_non_answers() -> None:
    blank = [probe("A", 16, 100, None, False), probe("A", 32, 100, None, False)]
    row = dynasor_rows(probed_traces(OUTCOMES[:1], blank), ms=(2,), n_boot=20)[0]
    assert row.stopped == 0 and row.accuracy_stop == 1.0  # kept its own (right) answer


def test_a_stop_that_changes_the_answer() -> None:
    early = [probe("A", 16, 100, "7", False), probe("A", 32, 100, "7", False)]
    row = dynasor_rows(probed_traces(OUTCOMES[:1], early), ms=(2,), n_boot=20)[0]
    assert (row.accuracy_full, row.accuracy_stop, row.change, row.tokens_stop) == (
        1.0, 0.0, -1.0, 32)


def test_cells_without_probes_are_left_out() -> None:
    other = Outcome("C", "q3", "aime", 0, 0, True, False, 50)
    traces = probed_traces([*OUTCOMES, other], PROBES)
    assert {t.outcome.variant for t in traces} == {"dense"}


# --- settings and planning pieces ---------------------------------------------------------


def test_budget_ladders() -> None:
    assert ladder(100, ProbeSettings()) == [16, 32, 64]
    assert ladder(16, ProbeSettings()) == []
    assert ladder(40, ProbeSettings(every=10)) == [10, 20, 30]
    assert ladder(40, ProbeSettings(budgets=(8, 64))) == [8, 64]
    assert parse_budgets(" 64,32 ,32") == (32, 64)
    for bad in ("", "a,b", "0,4", "-3", "1.5"):
        with pytest.raises(InputError, match="--budgets"):
            parse_budgets(bad)
    with pytest.raises(InputError, match="not both"):
        ProbeSettings(budgets=(8,), every=4)
    with pytest.raises(InputError, match="--tokens"):
        ProbeSettings(max_new_tokens=0)


def generation(output: str, prompt: str = "Q?\n<think>\n", reasoning: str | None = None,
               key: str = "k0", item: int = 0, truncated: bool = False,
               options: str = "{}") -> GenerationRecord:
    return GenerationRecord(
        key=key, variant="dense", base_model="dense", engine="hf", task="aime",
        task_id="aime24", task_options=options, item_index=item, item_id=f"q{item}", repeat=0,
        seed=0, sampling="{}", prompt=prompt, output=output, reasoning=reasoning,
        prompt_tokens=5, completion_tokens=20, thinking_tokens=15, answer_tokens=5,
        finish_reason="stop", truncated=truncated, wall_s=0.1)


def test_where_the_thinking_is() -> None:
    prefilled = thinking_of(generation("a b c\n</think>\n\\boxed{2}"))
    assert prefilled is not None
    assert (prefilled.head, prefilled.text, prefilled.closed) == ("", "a b c\n", True)
    chat = json.dumps([{"role": "user", "content": "Q?"}])
    opened = thinking_of(generation("<think>x y", prompt=chat))
    assert opened is not None and (opened.head, opened.text, opened.closed) == (
        "<think>", "x y", False)
    assert thinking_of(generation("just 2", prompt=chat)) is None  # does not think
    served = thinking_of(generation("2", prompt=chat, reasoning="r s"))
    assert served is not None and (served.head, served.text) == ("<think>\n", "r s")


# --- the store's probes table -------------------------------------------------------------


def test_probes_are_stored_once_and_a_v2_store_gains_the_table(tmp_path: Path) -> None:
    from crbench import store
    from crbench.probe_store import insert_probe, read_probes, stored_probe_keys

    conn = store.connect(tmp_path)
    store.insert_generation(conn, generation("x</think>2"), None)
    conn.execute("DROP TABLE probes")  # as a version-2 store was
    store.set_meta(conn, "schema_version", 2)
    conn.close()
    assert read_probes(tmp_path) == []  # read-only: no table, no probes
    conn = store.connect(tmp_path)  # migrated: the table is added, nothing else changes
    assert store.get_meta(conn, "schema_version") == str(store.SCHEMA_VERSION)
    assert insert_probe(conn, PROBES[0]) and not insert_probe(conn, PROBES[0])
    assert insert_probe(conn, PROBES[3])
    assert stored_probe_keys(conn, ["A@16", "nope"]) == {"A@16"}
    conn.close()
    got = read_probes(tmp_path)
    assert [p.key for p in got] == ["A@16", "B@16"]
    assert got[0] == ProbeRecord(**{**PROBES[0].__dict__, "created_at": got[0].created_at})
    assert got[0].created_at


# --- the report section -------------------------------------------------------------------


def build_store(tmp_path: Path) -> Path:
    """OUTCOMES and PROBES as a stored run (items in a local AIME file)."""
    from crbench import store
    from crbench.probe_store import insert_probe

    data = tmp_path / "aime.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "problem": "P", "answer": a}) + "\n"
                            for i, a in enumerate((25, 30))))
    options = json.dumps({"path": str(data), "style": "completion"})
    run = tmp_path / "run"
    conn = store.connect(run)
    store.put_variant(conn, VariantRecord("dense", "dense"))
    for o in OUTCOMES:
        g = generation("t </think> x", key=o.key, item=o.item_index, truncated=o.truncated,
                       options=options)
        s = ScoreRecord(o.key, None, o.correct, False, o.truncated, "none")
        store.insert_generation(conn, g, s)
    for p in PROBES:
        insert_probe(conn, p)
    conn.close()
    return run


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_report_section_matches_hand_computation(tmp_path: Path) -> None:
    from crbench.report import write_report

    run = build_store(tmp_path)
    report, written = write_report(run, tmp_path / "out", ["md", "csv"], n_boot=200)
    section = next(s for s in report.sections if s.title == "Probes")
    assert any(getattr(i, "name", "") == "probes_budget" for i in section.items)  # the figure
    folder = written["csv"]
    curve = read_csv(folder / "probes_budget_1_aime.csv")[0]
    assert [float(curve[f"acc_{b}"]) for b in (16, 32, 64, 100)] == [50, 50, 100, 100]
    assert float(curve["tokens_64"]) == 52
    s1 = read_csv(folder / "probes_s1.csv")[0]
    assert (float(s1["control_pct"]), float(s1["performance_pct"])) == (100, 100)
    slopes = [0.0, 0.5 / 36, 0.5 / 54, 0.5 / 20, 0.5 / 38, 0.0]
    assert float(s1["scaling_pp_per_1k"]) == pytest.approx(100 * 1000 * sum(slopes) / 6)
    dyn = {r["m"]: r for r in read_csv(folder / "probes_dynasor.csv")}
    assert float(dyn["2"]["saved_pct"]) == pytest.approx(100 * (1 - 104 / 140))
    assert (dyn["2"]["stopped"], dyn["3"]["stopped"]) == ("1", "0")


def test_no_probes_no_section(tmp_path: Path) -> None:
    from crbench.report import write_report

    run = build_store(tmp_path)
    with sqlite3.connect(run / "results.sqlite") as raw:
        raw.execute("DELETE FROM probes")
    report, _ = write_report(run, tmp_path / "out", ["csv"], n_boot=100)
    assert "Probes" not in [s.title for s in report.sections]
    analysis = analyse_probes([], [], n_boot=10)
    assert analysis.curves == [] and analysis.dynasor == []


# --- real probe runs on the demo model ----------------------------------------------------

# Batch size 1: a probe's greedy answer cannot depend on which probes share its batch.
SPEC = f"""
[models.smol]
source = "demo"
batch_size = 1

[[tasks]]
task = "aime24"
label = "aime"
path = "{DATA / "aime_mini.jsonl"}"
limit = 2

[sampling]
max_new_tokens = 36
"""


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of the demo model: 2 AIME items, traces truncated at 36 tokens."""
    import io

    from crbench import runner

    base = tmp_path_factory.mktemp("probe_run")
    spec = base / "spec.toml"
    spec.write_text(SPEC, encoding="utf-8")
    summary = runner.run(spec, base / "run", stream=io.StringIO())
    assert summary.generated == 2 and not summary.failed
    return base / "run"


def probe_rows(run: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"{(run / 'results.sqlite').as_uri()}?mode=ro", uri=True) as raw:
        return raw.execute("SELECT key, generation_key, budget, thinking_used, thinking_total, "
                           "output, extracted, correct FROM probes ORDER BY key").fetchall()


def stored_probes(run: Path) -> int:
    try:
        with sqlite3.connect(f"{(run / 'results.sqlite').as_uri()}?mode=ro", uri=True,
                             timeout=30) as raw:
            return int(raw.execute("SELECT count(*) FROM probes").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def crbench_probe(run: Path, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "crbench.cli", "probe", str(run), *args],
                            text=True, **kwargs)  # type: ignore[call-overload]


SETTINGS = ProbeSettings(every=6, max_new_tokens=16)
CLI_SETTINGS = ("--every", "6", "--tokens", "16")


@pytest.fixture(scope="module")
def probed(stored_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The stored run, probed once without interruption: (run dir, probes made)."""
    import io

    from crbench.probes import run_probes

    run = tmp_path_factory.mktemp("probed") / "run"
    shutil.copytree(stored_run, run)
    summary = run_probes(run, SETTINGS, stream=io.StringIO())
    assert summary.made == summary.planned and not summary.failed
    return run, summary.made


def test_a_real_probe_run_stores_probes_once(probed: tuple[Path, int]) -> None:
    import io

    from crbench.probe_store import read_probes
    from crbench.probes import run_probes
    from crbench.tasks import get_task

    run, made = probed
    probes = read_probes(run)
    assert len(probes) == made
    # every trace is truncated (the demo model never closes its thinking in 36 tokens): probes
    # every 6 tokens below its length, and one at its full length
    by_generation: dict[str, list[ProbeRecord]] = {}
    for p in probes:
        by_generation.setdefault(p.generation_key, []).append(p)
    assert len(by_generation) == 2
    for mine in by_generation.values():
        total = mine[0].thinking_total
        assert total >= 30
        expected = [*range(6, total, 6), total]
        assert sorted(p.budget for p in mine) == expected
        for p in mine:
            assert p.thinking_used == min(p.budget, total) and p.thinking_total == total
            assert 1 <= p.new_tokens <= 16 and p.cue == "\n\nFinal answer: "
    again = run_probes(run, SETTINGS, stream=io.StringIO())
    assert (again.made, again.stored_before, again.planned) == (0, made, made)
    # graded by the one scoring path: the verdict is the task's own on the probe read whole
    module = get_task("aime24")
    items = {i.index: i for i in module.load(str(DATA / "aime_mini.jsonl"), limit=2)}
    for p in probes:
        verdict = module.score(items[p.item_index], f"<think>x</think>{p.cue}{p.output}")
        assert verdict.extracted == p.extracted and verdict.correct == p.correct


def test_sigkill_midway_then_resume_gives_the_same_probes(
        stored_run: Path, probed: tuple[Path, int], tmp_path: Path) -> None:
    reference, total = probed
    killed = tmp_path / "killed"
    shutil.copytree(stored_run, killed)
    proc = crbench_probe(killed, *CLI_SETTINGS, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while stored_probes(killed) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    at_kill = stored_probes(killed)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert 1 <= at_kill < total, f"kill landed at {at_kill} of {total} probes"
    with sqlite3.connect(killed / "results.sqlite") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    resumed = crbench_probe(killed, *CLI_SETTINGS, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err
    line = next(x for x in out.splitlines() if x.startswith("probes: "))
    found = re.search(r"(\d+) already stored, (\d+) made now", line)
    assert found is not None, line
    before, made = map(int, found.groups())
    assert before >= at_kill and before + made == total, line
    assert probe_rows(killed) == probe_rows(reference)


def test_a_chat_prompt_is_rendered_as_the_engine_encodes_it(demo_model: Path) -> None:
    from transformers import AutoTokenizer

    from crbench.engines.prompts import encode_prompt
    from crbench.probes import chat_text

    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    messages = [{"role": "user", "content": "What is 5 times 5?"}]
    assert encode_prompt(tokenizer, chat_text(tokenizer, messages)) == encode_prompt(
        tokenizer, messages)


def test_bad_probe_input_is_one_line(tmp_path: Path) -> None:
    from crbench.probes import run_probes

    run = build_store(tmp_path)  # written without `crbench run`: no spec recorded
    with pytest.raises(InputError, match="does not record its spec; pass --spec"):
        run_probes(run, ProbeSettings())
    for args in (["--budgets", "64,abc"], ["--every", "8", "--budgets", "8"]):
        proc = subprocess.run([sys.executable, "-m", "crbench.cli", "probe", str(run), *args],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "probe", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no results store" in proc.stderr, proc.stderr
