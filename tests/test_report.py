"""`crbench report` on results stores built here with the real schema and known rows.

The numbers the report prints are checked against SQL run directly on the store, the page is
opened in headless Chromium, and model output that tries to inject HTML must stay text.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from chromium import headless_chromium

from crbench import report, store
from crbench.errors import InputError
from crbench.records import FailureRecord, GenerationRecord, ScoreRecord, VariantRecord
from crbench.store_schema import GENERATION_COLUMNS, generation_values

REASONING = [("aime24", "aime24", {}, 10), ("folio", "folio", {}, 12),
             ("temporal_sequences", "temporal_sequences", {}, 12)]
KNOWLEDGE = [("musique", "musique", {"mode": "closed"}, 8),
             ("musique_open", "musique", {"mode": "open"}, 8)]
# name, base model, method, sparsity, bits, size in bytes, ppl, share of questions solved,
# token factor (compressed models think longer)
VARIANTS = [
    ("r1-8b", "r1-8b", "dense", None, None, 16_060_000_000, 9.5, 0.9, 1.0),
    ("sgpt-30", "r1-8b", "sparsegpt", 0.3, None, 16_060_000_000, 10.4, 0.8, 1.1),
    ("sgpt-50", "r1-8b", "sparsegpt", 0.5, None, 16_060_000_000, 13.0, 0.55, 1.3),
    ("sgpt-70", "r1-8b", "sparsegpt", 0.7, None, 16_060_000_000, 40.0, 0.15, 1.8),
    ("gptq-4", "r1-8b", "gptq", None, 4.0, 5_700_000_000, 10.0, 0.85, 1.05),
    ("gptq-3", "r1-8b", "gptq", None, 3.0, 4_600_000_000, 14.0, 0.45, 1.4),
    ("qwen-1.5b", "qwen-1.5b", "dense", None, None, 3_550_000_000, None, 0.6, 1.2),
    ("qwen-rtn4", "qwen-1.5b", "rtn", None, 4.0, 1_200_000_000, None, 0.4, 1.3),
]
REPEATS = 3
BASE_TOKENS = {"aime24": 2000, "folio": 600, "temporal_sequences": 400, "musique": 150}
MAX_TOKENS = 3500
FAILED = [("sgpt-70", "aime24", 8, 2), ("sgpt-70", "aime24", 9, 2)]
UNSCORED = [("gptq-3", "folio", 11, 2)]


def new_store(path: Path) -> store.Store:
    """An empty store, created by the store module itself (the schema the runner writes)."""
    return store.connect(path)


def add_variant(conn, name, base, method, sparsity=None, bits=None, size=None, ppl=None):
    store.put_variant(conn, VariantRecord(name, base, method, sparsity=sparsity, bits=bits,
                                          size_bytes=size, ppl=ppl))


def generation(*, variant, base, task, task_id, options, item, repeat, tokens, truncated=False,
               output="", created_at="2025-01-01T00:00:00") -> GenerationRecord:
    key = hashlib.sha256(json.dumps([variant, task, item, repeat, created_at]).encode()).hexdigest()
    thinking = int(tokens * 0.9)
    return GenerationRecord(
        key=key, variant=variant, base_model=base, engine="hf", task=task, task_id=task_id,
        task_options=json.dumps(options), item_index=item, item_id=f"{task}-{item}",
        repeat=repeat, seed=repeat, sampling="{}", prompt="prompt",
        output=output or f"<think>thinking about {task} {item}</think> answer", reasoning=None,
        prompt_tokens=50, completion_tokens=tokens, thinking_tokens=thinking,
        answer_tokens=tokens - thinking, finish_reason="length" if truncated else "stop",
        truncated=truncated, wall_s=tokens / 100, created_at=created_at)


def add_generation(conn, *, correct, truncated=False, no_answer=False, em=None, f1=None,
                   scored=True, **fields):
    g = generation(truncated=truncated, **fields)
    score = ScoreRecord(g.key, None if no_answer else "x", bool(correct), no_answer, truncated,
                        "test", em, f1) if scored else None
    assert store.insert_generation(conn, g, score)
    return g.key


def difficulty(item: int, n: int) -> float:
    """A fixed permutation of 0..n-1, scaled to [0, 1): question i's difficulty."""
    return ((item * 7) % n) / n


def build_study(path: Path) -> Path:
    """The full constructed study: 8 variants (2 base models), 5 tasks, 3 repeats, with
    truncations, no-answers, failed and unscored generations."""
    conn = new_store(path)
    for vi, (name, base, method, sparsity, bits, size, ppl, skill, factor) in enumerate(VARIANTS):
        add_variant(conn, name, base, method, sparsity, bits, size, ppl)
        tasks = REASONING + (KNOWLEDGE if base == "r1-8b" else [])
        for task, task_id, options, n in tasks:
            for item in range(n):
                for repeat in range(REPEATS):
                    if (name, task, item, repeat) in FAILED:
                        continue
                    d = difficulty(item, n)
                    solved = d < skill * (0.5 if options.get("mode") == "closed" else 1.0)
                    # Repeats disagree now and then, so majority and mean differ somewhere.
                    correct = solved != ((item + repeat + vi) % 7 == 0)
                    tokens = int(BASE_TOKENS[task_id] * factor * (1 + d)) + 5 * repeat
                    tokens += 0 if correct else 250
                    truncated = tokens > MAX_TOKENS
                    correct = correct and not truncated
                    knowledge = task_id == "musique"
                    add_generation(
                        conn, variant=name, base=base, task=task, task_id=task_id,
                        options=options, item=item, repeat=repeat, tokens=min(tokens, MAX_TOKENS),
                        correct=correct, truncated=truncated, no_answer=truncated,
                        em=float(correct) if knowledge else None,
                        f1=(1.0 if correct else 0.25 * (item % 3)) if knowledge else None,
                        scored=(name, task, item, repeat) not in UNSCORED)
    for i, (variant, task, item, repeat) in enumerate(FAILED):
        for at in ("2025-01-01", "2025-01-02"):  # failed again on a second run: counted once
            store.record_failure(conn, FailureRecord(f"failed-{i}", variant, task, item, repeat,
                                                     "CUDA out of memory", 3, at))
    # A failure that a later run generated after all: no longer a failure.
    key = conn.execute("SELECT key FROM generations LIMIT 1").fetchone()[0]
    store.record_failure(conn, FailureRecord(key, "r1-8b", "aime24", 0, 0, "timeout", 3,
                                             "2024-12-31"))
    conn.close()
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return build_study(tmp_path_factory.mktemp("study") / "run")


@pytest.fixture(scope="module")
def written(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return report.write_report(study, out, report.FORMATS, n_boot=300)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def query(run: Path, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(run / "results.sqlite")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# --- the numbers -----------------------------------------------------------------------------


def question_means(run: Path, column: str, variant: str, task: str) -> list[float]:
    rows = query(run, f"SELECT avg({column}) FROM generations g JOIN scores s ON s.key = g.key "
                      "WHERE g.variant = ? AND g.task = ? GROUP BY g.item_index", variant, task)
    return [r[0] for r in rows]


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def test_main_table_equals_sql_on_the_store(study, written):
    rows = {r["variant"]: r for r in read_csv(written[1]["csv"] / "main.csv")}
    assert list(rows) == ["qwen-1.5b", "qwen-rtn4", "r1-8b", "gptq-4", "gptq-3", "sgpt-30",
                          "sgpt-50", "sgpt-70"]  # by base model; dense, then each sweep
    checked = 0
    for name, base, method, sparsity, bits, size, ppl, *_ in VARIANTS:
        row = rows[name]
        assert (row["base_model"], row["method"]) == (base, method)
        assert float(row["size_gb"]) == pytest.approx(size / 1e9)
        assert row["sparsity"] == ("" if sparsity is None else str(sparsity))
        assert row["bits"] == ("" if bits is None else str(bits))
        assert row["ppl"] == ("" if ppl is None else str(ppl))
        accs = []
        for task, *_ in REASONING:
            acc = 100 * mean(question_means(study, "s.correct", name, task))
            assert float(row[f"{task}_acc_pct"]) == pytest.approx(acc)
            assert float(row[f"{task}_acc_lo"]) <= acc <= float(row[f"{task}_acc_hi"])
            tokens = mean(question_means(study, "g.completion_tokens", name, task))
            assert float(row[f"{task}_tokens"]) == pytest.approx(tokens)
            n = query(study, "SELECT count(*) FROM generations g JOIN scores USING (key) "
                             "WHERE variant = ? AND task = ?", name, task)[0][0]
            assert int(row[f"{task}_n_samples"]) == n
            accs.append(acc)
            checked += 1
        # The headline average: the three reasoning tasks, unweighted.
        assert float(row["average_pct"]) == pytest.approx(mean(accs))
        for task, *_ in KNOWLEDGE:
            if base != "r1-8b":
                assert row[f"{task}_em_pct"] == ""
                continue
            em = 100 * mean(question_means(study, "s.em", name, task))
            f1 = 100 * mean(question_means(study, "s.f1", name, task))
            assert float(row[f"{task}_em_pct"]) == pytest.approx(em)
            assert float(row[f"{task}_f1_pct"]) == pytest.approx(f1)
    assert checked == len(VARIANTS) * len(REASONING)


def test_paired_flips_and_mcnemar_equal_sql(study, written):
    from scipy import stats

    rows = read_csv(written[1]["csv"] / "paired.csv")
    assert {r["parent"] for r in rows} == {"r1-8b", "qwen-1.5b"}
    assert {r["variant"] for r in rows} == {v[0] for v in VARIANTS if v[2] != "dense"}
    for r in rows:
        column = "s.em" if r["task"].startswith("musique") else "s.correct"
        majority = (f"SELECT g.item_index, sum({column}) * 2 > count(*) FROM generations g "
                    "JOIN scores s ON s.key = g.key WHERE g.variant = ? AND g.task = ? "
                    "GROUP BY 1")
        parent = dict(query(study, majority, r["parent"], r["task"]))
        child = dict(query(study, majority, r["variant"], r["task"]))
        pairs = [(parent[q], child[q]) for q in child if q in parent]
        expect = {"fixed": (0, 1), "broken": (1, 0), "both_right": (1, 1), "both_wrong": (0, 0)}
        for column_name, pair in expect.items():
            assert int(r[column_name]) == pairs.count(pair), (r, column_name)
        fixed, broken = int(r["fixed"]), int(r["broken"])
        p = stats.binomtest(fixed, fixed + broken, 0.5).pvalue if fixed + broken else 1.0
        assert float(r["mcnemar_p"]) == pytest.approx(p)
        # The accuracy difference: mean over shared questions of child minus parent.
        by_item = (f"SELECT g.item_index, avg({column}) FROM generations g JOIN scores s "
                   "ON s.key = g.key WHERE g.variant = ? AND g.task = ? GROUP BY 1")
        parent = dict(query(study, by_item, r["parent"], r["task"]))
        child = dict(query(study, by_item, r["variant"], r["task"]))
        diff = 100 * mean([child[q] - parent[q] for q in child if q in parent])
        assert float(r["diff_pp"]) == pytest.approx(diff)
        assert float(r["diff_lo"]) <= diff <= float(r["diff_hi"])
    # sgpt-70 loses 2 aime24 questions' third repeat to failures, not whole questions.
    assert any(r["variant"] == "sgpt-70" and r["task"] == "aime24" for r in rows)


def test_compute_table_counts_truncations_failures_and_unscored(study, written):
    rows = {(r["variant"], r["task"]): r for r in read_csv(written[1]["csv"] / "compute.csv")}
    for (variant, task), r in rows.items():
        n, truncated, no_answer, thinking = query(
            study, "SELECT count(*), avg(s.truncated), avg(s.no_answer), avg(g.thinking_tokens) "
                   "FROM generations g JOIN scores s ON s.key = g.key "
                   "WHERE g.variant = ? AND g.task = ?", variant, task)[0]
        assert int(r["n"]) == n
        assert float(r["truncated_pct"]) == pytest.approx(100 * truncated)
        assert float(r["no_answer_pct"]) == pytest.approx(100 * no_answer)
        assert float(r["mean_thinking_tokens"]) == pytest.approx(thinking)
    assert rows[("sgpt-70", "aime24")]["failures"] == "2"
    assert float(rows[("sgpt-70", "aime24")]["truncated_pct"]) > 50  # it thinks too long
    assert rows[("gptq-3", "folio")]["unscored"] == "1"
    assert sum(int(r["failures"]) for r in rows.values()) == len(FAILED)


def test_cost_and_sweeps_equal_sql(study, written):
    cost = {(r["variant"], r["task"]): r for r in read_csv(written[1]["csv"] / "cost.csv")}
    tokens, seconds, correct = query(
        study, "SELECT sum(completion_tokens), sum(wall_s), sum(s.correct) FROM generations g "
               "JOIN scores s ON s.key = g.key WHERE g.variant = 'gptq-4'")[0]
    assert float(cost[("gptq-4", "all")]["tokens_per_correct"]) == pytest.approx(tokens / correct)
    assert float(cost[("gptq-4", "all")]["seconds_per_correct"]) == pytest.approx(seconds / correct)
    sweep = read_csv(written[1]["csv"] / "sweep_sparsity.csv")
    assert [(r["variant"], float(r["sparsity"])) for r in sweep] == [
        ("r1-8b", 0), ("sgpt-30", 30), ("sgpt-50", 50), ("sgpt-70", 70)]
    bits = read_csv(written[1]["csv"] / "sweep_bits.csv")
    assert [(r["variant"], float(r["bits"])) for r in bits] == [
        ("qwen-1.5b", 16), ("qwen-rtn4", 4), ("r1-8b", 16), ("gptq-4", 4), ("gptq-3", 3)]
    main = {r["variant"]: r for r in read_csv(written[1]["csv"] / "main.csv")}
    for r in sweep:
        assert r["aime24_pct"] == main[r["variant"]]["aime24_acc_pct"]


def test_knowledge_table_pairs_closed_and_open_book(study, written):
    rows = {r["variant"]: r for r in read_csv(written[1]["csv"] / "knowledge.csv")}
    assert set(rows) == {v[0] for v in VARIANTS if v[1] == "r1-8b"}
    for name, r in rows.items():
        closed = 100 * mean(question_means(study, "s.em", name, "musique"))
        opened = 100 * mean(question_means(study, "s.em", name, "musique_open"))
        assert float(r["closed_em_pct"]) == pytest.approx(closed)
        assert float(r["open_em_pct"]) == pytest.approx(opened)
    parent = float(rows["r1-8b"]["open_em_pct"])
    assert float(rows["sgpt-70"]["open_rel_change_pct"]) == pytest.approx(
        100 * (float(rows["sgpt-70"]["open_em_pct"]) / parent - 1))


def test_length_tables_on_the_study(study, written):
    lengths = {(r["variant"], r["task"]): r for r in read_csv(written[1]["csv"] / "lengths.csv")}
    r = lengths[("r1-8b", "folio")]
    right = [x for (x,) in query(study, "SELECT completion_tokens FROM generations g JOIN scores s"
                                        " ON s.key = g.key WHERE variant = 'r1-8b' AND "
                                        "task = 'folio' AND s.correct = 1")]
    assert int(r["n_correct"]) == len(right)
    assert float(r["mean_correct"]) == pytest.approx(mean(right))
    # Wrong outputs are 250 tokens longer by construction: shorter wins within questions.
    within = {(r["scope"], r["task"]): r for r in read_csv(
        written[1]["csv"] / "within_question.csv")}
    folio = within[("all variants", "folio")]
    assert float(folio["share_pct"]) > 90 and float(folio["sign_test_p"]) < 0.01
    # One row per cell, as on the page: quartile i's token range, n and accuracy.
    (bins,) = [r for r in read_csv(written[1]["csv"] / "length_bins.csv")
               if r["variant"] == "r1-8b" and r["task"] == "folio"]
    assert sum(int(bins[f"q{i}_n"]) for i in range(1, 5)) == 36
    assert [int(bins[f"q{i}_lo_tokens"]) for i in range(1, 5)] == sorted(
        int(bins[f"q{i}_lo_tokens"]) for i in range(1, 5))


# --- the files ---------------------------------------------------------------------------------


def test_every_format_is_written(written):
    rep, files = written
    assert set(files) == {"md", "html", "latex", "csv", "figures"}
    md = files["md"].read_text()
    tex = files["latex"].read_text()
    page = files["html"].read_text()
    names = [t.name for t in report.tables(rep)]
    assert {"main", "sweep_sparsity", "sweep_bits", "compute", "lengths", "length_bins",
            "within_question", "paired", "knowledge", "cost", "failures"} <= set(names)
    for name in names:
        assert (files["csv"] / f"{name}.csv").is_file()
    assert tex.count("\\begin{tabular}") == len(names)
    assert r"temporal\_sequences" in tex and "temporal_sequences" not in tex
    assert page.count("<table>") == len(names)
    for plot in report.plots(rep):
        assert plot.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert plot.svg.read_text().lstrip().startswith("<?xml")
        assert f"]({plot.png.parent.name}/{plot.png.name})" in md
    assert page.count('<img src="data:image/png;base64,') == len(report.plots(rep)) >= 8
    # Self-contained: nothing fetched from anywhere, no script at all.
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "Examples of flipped questions" in page and "<details open>" in page
    # Every compressed variant gets an example before any gets a second one.
    titles = [ex.title for s in rep.sections for ex in s.examples]
    firsts = [t.split(" vs ")[0] for t in titles[:6]]
    assert sorted(firsts) == sorted(v[0] for v in VARIANTS if v[2] != "dense")


def test_report_is_rerunnable_and_never_writes_the_store(tmp_path):
    run = build_study(tmp_path / "run")
    db = run / "results.sqlite"
    before = db.read_bytes()
    os.chmod(run, 0o555)  # even a read-only run folder (no -shm file possible) is fine
    try:
        r1, f1 = report.write_report(run, tmp_path / "out", ["csv"], n_boot=50)
        r2, f2 = report.write_report(run, tmp_path / "out", ["csv"], n_boot=50)
    finally:
        os.chmod(run, 0o755)
    assert db.read_bytes() == before
    assert (f1["csv"] / "main.csv").read_text() == (f2["csv"] / "main.csv").read_text()


def test_report_reads_while_a_run_is_writing(tmp_path):
    run = build_study(tmp_path / "run")
    writer = sqlite3.connect(run / "results.sqlite", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a runner in the middle of committing a generation
    g = generation(variant="r1-8b", base="r1-8b", task="aime24", task_id="aime24", options={},
                   item=0, repeat=3, tokens=10)
    writer.execute(store.insert_sql("generations", GENERATION_COLUMNS),
                   generation_values(g, "2025-01-02"))
    try:
        rep, files = report.write_report(run, tmp_path / "out", ["csv"], n_boot=50)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    main = {r["variant"]: r for r in read_csv(files["csv"] / "main.csv")}
    assert main["r1-8b"]["aime24_n_samples"] == "30"  # the uncommitted row is not seen


def small_store(path: Path, outputs: dict[str, list[bool]], *, task="folio", repeats=1,
                output: str = "", labels: dict[str, tuple] | None = None) -> Path:
    """One task; `outputs` maps a variant to its correctness per item (all repeats alike)."""
    conn = new_store(path)
    labels = labels or {}
    for name, pattern in outputs.items():
        base, method, sparsity = labels.get(name, (name, "dense", None))
        add_variant(conn, name, base, method, sparsity)
        for item, ok in enumerate(pattern):
            for repeat in range(repeats):
                add_generation(conn, variant=name, base=base, task=task, task_id=task,
                               options={}, item=item, repeat=repeat, tokens=100 + 50 * item,
                               correct=ok, output=output)
    conn.close()
    return path


def test_empty_store_and_store_without_tables(tmp_path):
    run = tmp_path / "empty"
    new_store(run).close()
    rep, files = report.write_report(run, None, report.FORMATS, n_boot=50)
    assert files["html"] == run / "report" / "report.html"
    assert "no scored generations yet" in files["html"].read_text()
    assert report.tables(rep) == [] and report.plots(rep) == []
    bare = tmp_path / "bare"
    bare.mkdir()
    sqlite3.connect(bare / "results.sqlite").close()  # an empty SQLite file
    with pytest.raises(InputError, match="not a crbench results store"):
        report.write_report(bare, None, ["md"], n_boot=50)
    with pytest.raises(InputError, match="no results store"):
        report.write_report(tmp_path / "nowhere", None, ["md"])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "results.sqlite").write_text("not a database " * 100)
    with pytest.raises(InputError, match="results.sqlite"):
        report.write_report(tmp_path / "junk", None, ["md"])
    with pytest.raises(InputError, match="unknown format pdf"):
        report.parse_formats("md,pdf")


def test_one_variant_and_unscored_only(tmp_path):
    run = small_store(tmp_path / "one", {"only": [True, False, True]})
    rep, files = report.write_report(run, None, report.FORMATS, n_boot=50)
    main = read_csv(files["csv"] / "main.csv")
    assert len(main) == 1 and float(main[0]["folio_acc_pct"]) == pytest.approx(200 / 3)
    assert "paired" not in [t.name for t in report.tables(rep)]
    # Generated but nothing scored yet.
    run = tmp_path / "unscored"
    conn = new_store(run)
    add_generation(conn, variant="v", base="v", task="folio", task_id="folio", options={},
                   item=0, repeat=0, tokens=5, correct=False, scored=False)
    conn.close()
    rep, _ = report.write_report(run, None, ["md"], n_boot=50)
    assert any("1 generations not scored yet" in line for line in rep.summary)


def test_in_progress_cells_show_their_n(tmp_path):
    run = small_store(tmp_path / "run", {"d": [True] * 6, "s50": [True, False, True]},
                      labels={"s50": ("d", "sparsegpt", 0.5)})
    rep, files = report.write_report(run, None, ["md", "csv"], n_boot=50)
    md = files["md"].read_text()
    assert "n=3/6" in md
    assert any("1 cells partial" in line for line in rep.summary)
    paired = read_csv(files["csv"] / "paired.csv")[0]
    assert (paired["questions"], paired["broken"]) == ("3", "1")


def test_plan_gives_the_denominator_and_drops_superseded_rows(tmp_path):
    # No skip when the plan is missing: then this test must fail (set_plan, the counts).
    run = small_store(tmp_path / "run", {"d": [True, False]})
    conn = store.connect(run)
    keys = [k for (k,) in conn.execute("SELECT key FROM generations ORDER BY item_index")]
    old = add_generation(conn, variant="d", base="d", task="folio", task_id="folio",
                         options={}, item=5, repeat=0, tokens=9, correct=True,
                         created_at="2024-01-01")  # a row of an earlier spec version
    store.set_plan(conn, [(keys[0], "d", "folio", 0, 0), (keys[1], "d", "folio", 1, 0),
                          ("todo", "d", "folio", 2, 0), ("todo2", "d", "folio", 3, 0)])
    conn.close()
    rep, files = report.write_report(run, None, ["md", "csv"], n_boot=50)
    main = read_csv(files["csv"] / "main.csv")[0]
    assert (main["folio_n_samples"], main["folio_planned"]) == ("2", "4")
    assert "n=2/4" in files["md"].read_text()
    assert any("1 stored rows of an earlier spec version" in line for line in rep.summary)
    assert old not in files["md"].read_text()


def test_newest_row_wins_for_the_same_cell(tmp_path):
    run = small_store(tmp_path / "run", {"d": [False]})
    conn = store.connect(run)
    add_generation(conn, variant="d", base="d", task="folio", task_id="folio", options={},
                   item=0, repeat=0, tokens=7, correct=True, created_at="2030-01-01")
    conn.close()
    _, files = report.write_report(run, None, ["csv"], n_boot=50)
    main = read_csv(files["csv"] / "main.csv")[0]
    assert (main["folio_acc_pct"], main["folio_n_samples"]) == ("100.0", "1")


def test_one_column_definition_gives_the_page_and_the_csv():
    from crbench.report.document import col, make_table
    from crbench.report.fmt import num

    rows = [("a", 1234.5, 0.25), ("b", float("nan"), 0.5), ("c", 7.0, None)]
    columns = [
        col("name", "name", lambda r: r[0]),
        col("tokens", "tokens", lambda r: r[1], num),  # page: "1,234"; CSV: the raw number
        col(None, "share", lambda r: r[2]),  # CSV only
        col("note", None, lambda r: r[0].upper()),  # page only
        col("both", ["lo", "hi"], lambda r: r[1], lambda x: f"~{num(x)}",
            lambda x: (x - 1, x + 1)),  # one page cell, two CSV fields
    ]
    t = make_table("t", "T", columns, rows, page_rows=2)
    assert t.columns == ["name", "tokens", "note", "both"]
    assert t.csv_columns == ["name", "tokens", "share", "lo", "hi"]
    assert t.rows == [["a", "1,234", "A", "~1,234"], ["b", "—", "B", "~—"]]  # page: 2 rows
    assert len(t.csv_rows) == 3 and t.csv_rows[0] == ["a", 1234.5, 0.25, 1233.5, 1235.5]
    assert t.csv_rows[1][1] == "" and t.csv_rows[2][2] == ""  # NaN and None: empty cells
    with pytest.raises(ValueError, match="2 CSV values for 1"):
        make_table("bad", "Bad", [col("x", "x", lambda r: r, str, lambda v: (v, v))], [1])
    with pytest.raises(TypeError, match="needs to_csv"):
        make_table("bad", "Bad", [col("x", "x", lambda r: object())], [1])


def my_analysis(ctx):
    """A new section exactly as the package docstring of crbench.report shows it."""
    from crbench.report.document import Section, col, make_table, shown
    from crbench.report.fmt import pct, scaled

    r = ctx.results
    columns = [col("variant", "variant", lambda v: v),
               col("average %", "average_pct", lambda v: r.average(v).mean, pct,
                   lambda m: (scaled(m),))]
    table = make_table("my_analysis", "My analysis", columns, r.with_data, note="a note")
    return Section("My analysis", "", shown(table, ctx.figure(lambda figs: None)))


def test_a_new_section_is_one_function_and_one_registry_line(tmp_path, monkeypatch):
    from crbench.report import sections

    monkeypatch.setattr(sections, "SECTIONS", [*sections.SECTIONS, my_analysis])
    run = small_store(tmp_path / "run", {"d": [True, False], "q": [True, True]},
                      labels={"q": ("d", "gptq", None)})
    rep, files = report.write_report(run, None, report.FORMATS, n_boot=50)
    assert rep.sections[-1].title == "My analysis"
    assert "<h2>My analysis</h2>" in files["html"].read_text()
    assert "## My analysis" in files["md"].read_text()
    assert "\\caption{My analysis}" in files["latex"].read_text()
    rows = read_csv(files["csv"] / "my_analysis.csv")
    assert [(r["variant"], r["average_pct"]) for r in rows] == [("d", "50.0"), ("q", "100.0")]


V1_STORE = Path(__file__).parent / "fixtures" / "store_v1" / "results.sqlite"


def test_report_of_a_store_written_before_schema_versions(tmp_path):
    # tests/fixtures/store_v1: written by `crbench run` at commit 72b1cdb (two spec versions,
    # 8 rows superseded). The report reads it as it is, and counts what export exports.
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(V1_STORE, run / "results.sqlite")
    before = (run / "results.sqlite").read_bytes()
    done = crbench("report", str(run), "--format", "csv,md", "--bootstrap", "100")
    assert done.returncode == 0, done.stderr
    assert (run / "results.sqlite").read_bytes() == before
    main = {r["variant"]: r for r in read_csv(run / "report" / "csv" / "main.csv")}
    assert set(main) == {"smol", "smol-mag50"}
    assert [(main[v]["aime_n_samples"], main[v]["folio_planned"]) for v in main] == [
        ("2", "2"), ("2", "2")]
    paired = read_csv(run / "report" / "csv" / "paired.csv")
    assert {(r["variant"], r["parent"]) for r in paired} == {("smol-mag50", "smol")}
    assert "8 stored rows of an earlier spec version left out" in done.stdout
    exported = crbench("export", str(run), "--out", str(tmp_path / "rows.jsonl"))
    assert exported.returncode == 0, exported.stderr
    rows = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert len(rows) == sum(int(r[f"{t}_n_samples"]) for r in main.values()
                            for t in ("aime", "folio"))


# --- escaping ----------------------------------------------------------------------------------

INJECT = ("<script>document.body.setAttribute('data-pwned','script')</script>"
          "<img src=x onerror=\"document.body.setAttribute('data-pwned','img')\">")
EVIL = f"<script>alert(1)</script>{INJECT}"  # an alert would block a headless browser
EVIL_LABEL = "s50<img src=y onerror=\"document.body.setAttribute('data-pwned','label')\">"


@pytest.fixture(scope="module")
def evil_report(tmp_path_factory) -> dict[str, Path]:
    """A store whose model output and variant label try to inject markup everywhere."""
    tmp = tmp_path_factory.mktemp("evil")
    run = small_store(tmp / "run", {"d": [True, True, False, True],
                                    EVIL_LABEL: [False, True, True, False]},
                      output=f"thinking {EVIL} ``` $x$ 100% & done | _a_ \\end{{table}}",
                      labels={EVIL_LABEL: ("d", "sparse$gpt_%", 0.5)})
    return report.write_report(run, tmp / "out", report.FORMATS, n_boot=50)[1]


def test_model_output_and_labels_are_escaped_in_every_format(evil_report):
    page = evil_report["html"].read_text()
    assert "<script>document" not in page and "<img src=x" not in page
    assert "<img src=y" not in page
    assert "&lt;script&gt;document.body" in page and "&lt;img src=y onerror=" in page
    assert "broken" in page  # the flipped question is shown, as text
    md = evil_report["md"].read_text()
    assert "<img src=y" not in md
    fence = re.search(r"^(`{4,})text$", md, re.M)
    assert fence, "output holding ``` needs a longer fence"
    tex = evil_report["latex"].read_text()
    assert r"sparse\$gpt\_\%" in tex and r"\textless{}img src=y" in tex
    assert "sparse$gpt" not in tex


def test_console_summary_escapes_rich_markup(tmp_path, capsys):
    run = small_store(tmp_path / "run", {"[bold red]x[/]": [True, False]})
    rep, files = report.write_report(run, None, ["md"], n_boot=50)
    report.print_summary(rep, files)
    out = capsys.readouterr().out
    assert "[bold red]x[/]" in out
    assert str(files["md"]) in out.replace("\n", "")


def test_terminal_table_never_cuts_variant_names(tmp_path):
    # Two long labels that differ only at their end must both be readable, whole, on one line,
    # however narrow the terminal.
    stem = "deepseek-r1-distill-qwen-7b-sparsegpt-50-calibrated-on-"
    names = [stem + "c4", stem + "wikitext"]
    run = small_store(tmp_path / "run", {"d": [True, False], names[0]: [True, True],
                                         names[1]: [False, False]},
                      labels={n: ("d", "sparsegpt", 0.5) for n in names},
                      task="temporal_sequences")  # a long header too
    rep, files = report.write_report(run, None, ["md"], n_boot=50)
    from rich.console import Console

    for width in (40, 80, 200):
        buf = io.StringIO()
        report.print_summary(rep, files, Console(file=buf, width=width, color_system=None))
        lines = buf.getvalue().splitlines()
        for name in names:
            assert any(name in line for line in lines), (width, name, buf.getvalue())
        assert "…" not in buf.getvalue()  # no header or cell shortened either


# --- the command -------------------------------------------------------------------------------


def crbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crbench.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_report_writes_and_says_where(tmp_path):
    run = small_store(tmp_path / "run", {"d": [True, False, True], "q": [True, True, False]},
                      labels={"q": ("d", "gptq", None)})
    done = crbench("report", str(run), "--format", "latex,csv", "--bootstrap", "100")
    assert done.returncode == 0, done.stderr
    assert (run / "report" / "tables.tex").is_file()
    assert not (run / "report" / "report.html").exists()
    assert str(run / "report" / "tables.tex") in done.stdout.replace("\n", "")
    bad = crbench("report", str(tmp_path / "missing"))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "no results store" in bad.stderr
    bad = crbench("report", str(run), "--format", "docx")
    assert bad.returncode == 2 and "--format" in bad.stderr


# --- the page in a real browser ------------------------------------------------------------------

# Marks the DOM once the page has loaded: how many images there are and how many decoded.
IMAGE_PROBE = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', images.length + '/' + decoded);
});
</script>"""
CSP = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>')


def probe_copy(page: Path, tmp_path: Path, name: str) -> Path:
    """The page with our probe script added and its no-script policy removed, so whatever the
    page itself would run does run: escaping alone must keep model output inert."""
    text = CSP.sub("", page.read_text())
    assert "Content-Security-Policy" not in text
    copy = tmp_path / name
    copy.write_text(text.replace("</body>", IMAGE_PROBE + "</body>"))
    return copy


def test_html_report_renders_in_chromium(written, tmp_path):
    rep, files = written
    page = probe_copy(files["html"], tmp_path, "report.html")
    dom = headless_chromium(page, tmp_path, "--dump-dom")
    n_plots = len(report.plots(rep))
    assert dom.count("<table>") == len(report.tables(rep))
    assert f'data-images="{n_plots}/{n_plots}"' in dom  # every figure decoded
    assert dom.count("<tr>") > 100
    # And the real page (with its policy) paints: a screenshot that is not blank.
    shot = tmp_path / "shot.png"
    headless_chromium(files["html"], tmp_path, f"--screenshot={shot}", "--window-size=1400,2400")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1400) and pixels.std() > 0.05


def test_malicious_output_stays_text_in_chromium(evil_report, tmp_path):
    page = probe_copy(evil_report["html"], tmp_path, "evil.html")
    dom = headless_chromium(page, tmp_path, "--dump-dom")
    assert "data-images=" in dom  # the probe ran, so scripts do run on this page
    assert 'data-pwned="' not in dom  # the payload text is there, as text; never the attribute
    assert "&lt;script&gt;document.body.setAttribute" in dom
    assert "&lt;img src=y onerror=" in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom


def test_the_injection_probe_can_catch_an_unescaped_page(tmp_path):
    # Guard for the test above: the same payload, unescaped, is caught.
    page = tmp_path / "raw.html"
    page.write_text(f"<!doctype html><html><body><pre>{INJECT}</pre>{EVIL_LABEL}</body></html>")
    dom = headless_chromium(page, tmp_path, "--dump-dom")
    assert 'data-pwned="' in dom


# --- LaTeX: a strict checker, so every CI run checks tables.tex without a TeX installation --

LATEX_COMMANDS = frozenset({
    "begin", "end", "centering", "small", "caption", "label", "resizebox", "linewidth",
    "toprule", "midrule", "bottomrule", "par", "smallskip", "footnotesize", "textbackslash",
    "textasciitilde", "textasciicircum", "textless", "textgreater"})
LATEX_MATH = frozenset({"Delta", "infty", "cdot"})  # the only commands allowed inside $...$
LATEX_SYMBOLS = "&%$#_{}"  # \& \% ...: escaped characters
BARE_SPECIAL = "#^_~<>"  # outside a command: an error, or the wrong glyph in OT1/T1


def latex_problems(text: str) -> list[str]:
    """Everything in the tables file that pdflatex would reject or typeset other than written:
    unknown commands, unescaped special characters, unbalanced braces, math or environments,
    characters outside Latin-1, and tabular rows whose cell count is not the column count."""
    problems: list[str] = []
    envs: list[str] = []
    depth, columns = 0, 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("%"):
            continue  # a comment line, as the renderer writes them
        bad = problems.append
        i, math, cells = 0, False, 1
        while i < len(line):
            ch = line[i]
            if ch == "\\":
                word = re.match(r"\\([A-Za-z]+)", line[i:])
                if word is None:
                    symbol = line[i + 1:i + 2]
                    if symbol != "\\" and (not symbol or symbol not in LATEX_SYMBOLS):
                        bad(f"line {n}: control symbol \\{symbol}")
                    i += 2
                    continue
                name = word.group(1)
                if name not in (LATEX_MATH if math else LATEX_COMMANDS):
                    bad(f"line {n}: command \\{name}{' in math' if math else ''}")
                env = re.match(r"\{([a-z]+)\}(?:\{([lrc]+)\})?", line[i + word.end():])
                if name in ("begin", "end") and env is None:
                    bad(f"line {n}: \\{name} without an environment")
                elif name == "begin":
                    envs.append(env.group(1))
                    columns = len(env.group(2) or "") if env.group(1) == "tabular" else columns
                elif name == "end" and (not envs or envs.pop() != env.group(1)):
                    bad(f"line {n}: \\end{{{env.group(1)}}} closes nothing open")
                i += word.end()
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth < 0:
                    bad(f"line {n}: closing brace without an opening one")
                    depth = 0
            elif ch == "$":
                math = not math
            elif ch == "%" and not (i == len(line) - 1 and line[i - 1:i] == "{"):
                bad(f"line {n}: unescaped % (comments out the rest of the line)")
            elif ch == "&":
                cells += 1
            elif ch in BARE_SPECIAL:
                bad(f"line {n}: unescaped {ch!r}")
            elif not 32 <= ord(ch) <= 255 or 127 <= ord(ch) < 160:
                bad(f"line {n}: character {ch!r} pdflatex cannot typeset")
            elif math and not ch.isspace():
                bad(f"line {n}: text {ch!r} inside math")
            i += 1
        if math:
            bad(f"line {n}: $ not closed on its line")
        in_tabular = bool(envs) and envs[-1] == "tabular"
        if in_tabular and line.rstrip().endswith("\\\\") and cells != columns:
            bad(f"line {n}: {cells} cells in a tabular of {columns} columns")
        elif cells > 1 and not (in_tabular and line.rstrip().endswith("\\\\")):
            bad(f"line {n}: & outside a tabular row")
    if depth:
        problems.append(f"{depth} braces never closed")
    if envs:
        problems.append(f"environments never closed: {envs}")
    return problems


def test_latex_tables_pass_the_strict_checker(evil_report, written):
    for tables_tex in (evil_report["latex"], written[1]["latex"]):
        text = tables_tex.read_text()
        assert text.count("\\begin{tabular}") >= 1
        assert latex_problems(text) == []
    # Every special character, and characters a T1 font lacks, in a label: still clean.
    nasty = "a_b%c$d#e&f{g}h~i^j\\k<l>m[n]o\nΔ−–—∞·→模型\x07"
    escaped = report.render.latex_escape(nasty)
    assert latex_problems(escaped) == []
    assert "U+2192" in escaped and "U+6A21" in escaped  # named, not dropped


@pytest.mark.parametrize("bad", [
    "a_b", "100% done", "$x", "\\input{/etc/passwd}", "{open", "close}", "a ^ b", "x~y",
    "\\begin{table}", "\\end{table}", "模型", "a & b",
    "\\begin{tabular}{lr}\na & b & c \\\\\n\\end{tabular}", "$\\Delta x$",
    "\\textbackslash{}\\end{table}\\}",
])
def test_the_latex_checker_catches_broken_tables(bad):
    # Guard for the test above: unescaped model text or a broken table is caught.
    assert latex_problems(bad), bad


def test_the_checker_rejects_the_evil_report_rendered_without_escaping(tmp_path, monkeypatch):
    # The same guard on a whole report: with escaping switched off, the checker must object.
    run = small_store(tmp_path / "run", {"d": [True, False], EVIL_LABEL: [False, True]},
                      labels={EVIL_LABEL: ("d", "sparse$gpt_%", 0.5)})
    rep, files = report.write_report(run, tmp_path / "out", ["latex"], n_boot=50)
    assert latex_problems(files["latex"].read_text()) == []
    monkeypatch.setattr(report.render, "latex_escape", lambda text: text)
    assert latex_problems(report.render.render_latex(rep))


def test_latex_tables_compile_when_pdflatex_is_installed(evil_report, written, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed")
    for tables_tex in (evil_report["latex"], written[1]["latex"]):
        doc = tmp_path / "doc.tex"
        doc.write_text("\\documentclass{article}\\usepackage[utf8]{inputenc}"
                       "\\usepackage[T1]{fontenc}\\usepackage{booktabs,graphicx}"
                       f"\\begin{{document}}\\input{{{tables_tex.as_posix()}}}\\end{{document}}\n")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                               doc.name], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout[-3000:]
