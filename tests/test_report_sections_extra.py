"""The report's "Several samples per item" and "Accuracy by level and subject" sections, on
results stores written here through the store module with known rows; every number is
checked against a value computed by hand."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from crbench import report, store
from crbench.records import GenerationRecord, ScoreRecord, VariantRecord
from crbench.report.render import render_html, render_md
from crbench.report.results import load_results

SAMPLES_TITLE = "Several samples per item"
BREAKDOWN_TITLE = "Accuracy by level and subject"
T, F = True, False

# (extracted answer, scored correct) of samples 0..3 of each aime24 item.
DENSE = [
    [("12", T), ("12", T), ("12", T), ("12", T)],  # c=4, majority right
    [("7", F), ("12", T), ("12", T), ("7", F)],  # c=2, a 2-2 tie: "7" came first -> wrong
    [(None, F), (None, F), ("3", T), ("5", F)],  # c=1, no-answers do not vote; tie -> "3"
    [("1", F), ("2", F), ("1", F), ("3", F)],  # c=0
    [("9", T), ("8", F), ("8", F), ("8", F)],  # c=1, majority wrong
]
# The compressed model is right once in four on every item: pass@4 100%, avg 25%, maj 0%.
GPTQ = [[("0", F), ("0", F), ("0", F), (str(10 + i), T)] for i in range(5)]
HAND = {  # variant -> metric -> value in %
    "r1": {"avg": 40.0, "pass_at_1": 40.0, "pass_at_2": 100 * (1 + 5 / 6 + 0.5 + 0 + 0.5) / 5,
           "pass_at_4": 80.0, "maj_at_4": 40.0},
    "r1-gptq4": {"avg": 25.0, "pass_at_1": 25.0, "pass_at_2": 50.0, "pass_at_4": 100.0,
                 "maj_at_4": 0.0},
}


def generation(variant: str, task: str, task_id: str, item: int, repeat: int) -> GenerationRecord:
    key = hashlib.sha256(json.dumps([variant, task, item, repeat]).encode()).hexdigest()
    return GenerationRecord(
        key=key, variant=variant, base_model="r1", engine="hf", task=task, task_id=task_id,
        task_options="{}", item_index=item, item_id=f"{task}-{item}", repeat=repeat,
        seed=repeat, sampling='{"temperature": 0.6}', prompt="prompt",
        output=f"<think>working on {item}</think> answer", reasoning=None, prompt_tokens=20,
        completion_tokens=100 + repeat, thinking_tokens=90, answer_tokens=10 + repeat,
        finish_reason="stop", truncated=False, wall_s=1.0, created_at="2025-01-01T00:00:00")


def add(conn: store.Store, variant: str, task: str, task_id: str, item: int, repeat: int,
        extracted: str | None, correct: bool, details: dict | None = None) -> None:
    g = generation(variant, task, task_id, item, repeat)
    score = ScoreRecord(g.key, extracted, correct, extracted is None, False, "test",
                        details=details or {})
    assert store.insert_generation(conn, g, score)


def new_run(path: Path) -> store.Store:
    conn = store.connect(path)
    store.put_variant(conn, VariantRecord("r1", "r1", "dense"))
    store.put_variant(conn, VariantRecord("r1-gptq4", "r1", "gptq", bits=4.0, group_size=128))
    return conn


def sampled_run(path: Path, repeats: int) -> Path:
    """aime24 with `repeats` samples per item for both variants, and folio with one."""
    conn = new_run(path)
    for variant, table in (("r1", DENSE), ("r1-gptq4", GPTQ)):
        for item, samples in enumerate(table):
            for repeat, (extracted, correct) in enumerate(samples[:repeats]):
                add(conn, variant, "aime24", "aime24", item, repeat, extracted, correct)
            add(conn, variant, "folio", "folio", item, 0, "True", item % 2 == 0)
    conn.close()
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def section_titles(rep: report.Report) -> list[str]:
    return [s.title for s in rep.sections]


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> tuple[report.Report, dict[str, Path]]:
    run = sampled_run(tmp_path_factory.mktemp("sampled") / "run", repeats=4)
    return report.write_report(run, run / "report", ("csv", "latex"), n_boot=400)


def test_four_samples_per_item_show_avg_pass_and_maj_by_hand(sampled) -> None:
    rep, written = sampled
    assert SAMPLES_TITLE in section_titles(rep)
    rows = read_csv(written["csv"] / "samples.csv")
    # Only the cells with several samples per item: folio has one, so it is not a row.
    assert [(r["variant"], r["task"]) for r in rows] == [("r1", "aime24"), ("r1-gptq4", "aime24")]
    for row in rows:
        assert (row["samples_min"], row["samples_max"], row["questions"]) == ("4", "4", "5")
        for metric, value in HAND[row["variant"]].items():
            assert float(row[f"{metric}_pct"]) == pytest.approx(value), (row["variant"], metric)
            assert float(row[f"{metric}_lo"]) <= value + 1e-9
            assert float(row[f"{metric}_hi"]) >= value - 1e-9
        assert row["pass_at_4_questions"] == "5"
        assert "maj_at_2_pct" not in row and "pass_at_8_pct" not in row
    # The headline accuracy is avg@n: the main table agrees with pass@1 here.
    main = {r["variant"]: r for r in read_csv(written["csv"] / "main.csv")}
    assert float(main["r1"]["aime24_acc_pct"]) == pytest.approx(HAND["r1"]["pass_at_1"])
    assert "pass@4" in written["latex"].read_text()


def test_the_section_warns_about_pass_at_1_over_n_samples(sampled) -> None:
    rep, _ = sampled
    section = next(s for s in rep.sections if s.title == SAMPLES_TITLE)
    assert "pass@1 computed from n samples per question is avg@n" in section.text
    assert "not pass@n" in section.text
    table = section.items[0]
    assert isinstance(table, report.Table)
    assert table.columns[:5] == ["variant", "task", "samples / question", "avg@n %", "pass@1 %"]
    assert table.rows[1][table.columns.index("pass@4 %")].startswith("100.0 [")


def test_a_run_in_progress_counts_each_k_on_the_questions_that_have_k(tmp_path: Path) -> None:
    run = sampled_run(tmp_path / "run", repeats=2)
    conn = store.connect(run)
    for repeat in (2, 3):  # item 0 of the dense model is done, the rest are not yet
        add(conn, "r1", "aime24", "aime24", 0, repeat, "12", True)
    conn.close()
    _, written = report.write_report(run, tmp_path / "out", ("csv",), n_boot=200)
    row = next(r for r in read_csv(written["csv"] / "samples.csv") if r["variant"] == "r1")
    assert (row["samples_min"], row["samples_max"]) == ("2", "4")
    assert row["pass_at_2_questions"] == "5"
    assert row["pass_at_4_questions"] == "1"
    assert float(row["pass_at_4_pct"]) == 100.0
    # pass@2 over the five questions: item 0 (4 of 4), 1 (1 of 2: 7, 12), 2 (0 of 2),
    # 3 (0 of 2), 4 (1 of 2).
    assert float(row["pass_at_2_pct"]) == pytest.approx(100 * (1 + 1 + 0 + 0 + 1) / 5)


def test_one_sample_per_item_has_no_such_section(tmp_path: Path) -> None:
    run = sampled_run(tmp_path / "run", repeats=1)
    rep, written = report.write_report(run, tmp_path / "out", ("csv",), n_boot=200)
    assert SAMPLES_TITLE not in section_titles(rep)
    assert not (written["csv"] / "samples.csv").exists()
    assert (written["csv"] / "main.csv").exists()


# --- accuracy by level and subject -----------------------------------------------------------

# math500 items: (level, subject); the subject of item 5 is untrusted text from a data file.
MATH_ITEMS = [(1, "Algebra"), (1, "Geometry"), (2, "Algebra"), (2, "Algebra"), (5, "Geometry"),
              (5, "<b>Number</b> Theory")]
# correct per (variant, item): two samples each
MATH_CORRECT = {
    "r1": [(T, T), (T, F), (T, T), (F, F), (F, T), (F, F)],
    "r1-gptq4": [(T, F), (F, F), (T, T), (F, F), (F, F), (F, F)],
}


def breakdown_run(path: Path) -> Path:
    conn = new_run(path)
    for variant, items in MATH_CORRECT.items():
        for item, samples in enumerate(items):
            level, subject = MATH_ITEMS[item]
            for repeat, correct in enumerate(samples):
                add(conn, variant, "math500", "math500", item, repeat, "x", correct,
                    {"subject": subject, "level": level})
            add(conn, variant, "aime24", "aime24", item, 0, "1", T)  # aime24 records no groups
    # A score stored without the groups (e.g. scored before the task kept them): left out.
    add(conn, "r1", "math500", "math500", 6, 0, "x", T, {})
    conn.close()
    return path


def per_question_mean(cells: list[tuple[bool, ...]]) -> float:
    return 100 * sum(sum(c) / len(c) for c in cells) / len(cells)


def expected(variant: str, pick: int, value: object) -> float:
    cells = [MATH_CORRECT[variant][i] for i, groups in enumerate(MATH_ITEMS)
             if groups[pick] == value]
    return per_question_mean(cells)


@pytest.fixture(scope="module")
def broken_down(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    run = breakdown_run(tmp_path_factory.mktemp("breakdown") / "run")
    out = run / "report"
    done = subprocess.run([sys.executable, "-m", "crbench.cli", "report", str(run), "--format",
                           "csv", "--bootstrap", "300", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return run, out / "csv"


def test_math500_accuracy_by_level_by_hand(broken_down) -> None:
    _, csv_dir = broken_down
    rows = read_csv(csv_dir / "breakdown_1_math500_subject.csv")
    assert rows  # subject first, as the task lists its BREAKDOWN
    rows = read_csv(csv_dir / "breakdown_2_math500_level.csv")
    assert [r["level"] for r in rows] == ["1", "2", "5"]  # numeric order
    assert [r["questions"] for r in rows] == ["2", "2", "2"]
    for row in rows:
        for variant in MATH_CORRECT:
            value = expected(variant, 0, int(row["level"]))
            assert float(row[f"{variant}_pct"]) == pytest.approx(value), (variant, row["level"])
            assert float(row[f"{variant}_lo"]) <= value <= float(row[f"{variant}_hi"])
    # level 1 by hand: dense (1 + 0.5) / 2 = 75%, GPTQ (0.5 + 0) / 2 = 25%
    assert float(rows[0]["r1_pct"]) == 75.0 and float(rows[0]["r1-gptq4_pct"]) == 25.0


def test_math500_accuracy_by_subject_by_hand(broken_down) -> None:
    _, csv_dir = broken_down
    rows = read_csv(csv_dir / "breakdown_1_math500_subject.csv")
    assert [r["subject"] for r in rows] == ["<b>Number</b> Theory", "Algebra", "Geometry"]
    assert [r["questions"] for r in rows] == ["1", "3", "2"]
    for row in rows:
        for variant in MATH_CORRECT:
            value = expected(variant, 1, row["subject"])
            assert float(row[f"{variant}_pct"]) == pytest.approx(value), (variant, row["subject"])
    # The score stored without groups counted nowhere: Algebra has items 0, 2, 3 only.
    assert float(rows[1]["r1_pct"]) == pytest.approx(100 * (1 + 1 + 0) / 3)
    assert not list(csv_dir.glob("breakdown_*aime24*"))  # aime24 records no groups


def test_breakdown_section_on_the_page_escapes_group_names(broken_down) -> None:
    run, _ = broken_down
    rep = report.build_report(load_results(run, n_boot=200), run / "page", with_figures=False)
    section = next(s for s in rep.sections if s.title == BREAKDOWN_TITLE)
    titles = [t.title for t in section.items if isinstance(t, report.Table)]
    assert titles == ["math500: accuracy by subject", "math500: accuracy by level"]
    html = render_html(rep)
    assert "&lt;b&gt;Number&lt;/b&gt; Theory" in html and "<b>Number</b>" not in html
    assert "Accuracy by level and subject" in render_md(rep, run / "page")
    # Two samples per item: the samples section is there too, for math500 and not for aime24.
    samples = next(s for s in rep.sections if s.title == SAMPLES_TITLE)
    table = samples.items[0]
    assert isinstance(table, report.Table)
    assert {row[1] for row in table.rows} == {"math500"}


def test_no_breakdown_section_without_recorded_groups(tmp_path: Path) -> None:
    run = sampled_run(tmp_path / "run", repeats=1)
    rep = report.build_report(load_results(run, n_boot=100), tmp_path / "out",
                              with_figures=False)
    assert BREAKDOWN_TITLE not in section_titles(rep)


def test_pass_at_k_figure_draws_every_variant(tmp_path: Path) -> None:
    from crbench.report.figures import Figures
    from crbench.report.samples import draw_pass_at_k, sampled_cells

    results = load_results(sampled_run(tmp_path / "run", repeats=4), n_boot=100)
    cells = sampled_cells(results)
    plot = draw_pass_at_k(Figures(results, tmp_path / "figures"), cells)
    assert plot.png.stat().st_size > 5000
    svg = plot.svg.read_text()
    assert "r1-gptq4" in svg and "aime24" in svg
    assert "folio" not in svg  # one sample per item there: no panel


def test_level_figure_has_a_line_per_variant_and_no_subject_panel(broken_down,
                                                                   tmp_path: Path) -> None:
    from crbench.report.breakdown import breakdowns, draw_levels
    from crbench.report.figures import Figures

    run, _ = broken_down
    results = load_results(run, n_boot=100)
    plot = draw_levels(Figures(results, tmp_path / "figures"), breakdowns(results))
    assert plot is not None and plot.png.stat().st_size > 5000
    svg = plot.svg.read_text()
    assert "r1-gptq4" in svg and "level" in svg
    assert "Algebra" not in svg  # subjects are not numbers: a table only


# --- a real run ------------------------------------------------------------------------------

MATH500_FIXTURE = Path(__file__).parent / "fixtures" / "math500_test.jsonl"


@pytest.mark.slow
def test_a_real_run_with_repeats_and_n_shows_both_sections(tmp_path: Path) -> None:
    """The demo model samples each of 4 MATH-500 items 2 x 2 times (repeats x n): the runner
    stores the groups the task records, and the report shows 4 samples per item."""
    import io

    from crbench import runner

    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[models.smol]\nsource = "demo"\nbatch_size = 4\n\n'
        f'[[tasks]]\ntask = "math500"\npath = "{MATH500_FIXTURE}"\nlimit = 4\n\n'
        "[sampling]\ntemperature = 0.8\nmax_new_tokens = 8\nrepeats = 2\nn = 2\n",
        encoding="utf-8")
    run = tmp_path / "run"
    runner.run(spec, run, stream=io.StringIO())
    rep, written = report.write_report(run, run / "report", ("csv",), n_boot=200)
    assert SAMPLES_TITLE in section_titles(rep) and BREAKDOWN_TITLE in section_titles(rep)
    [row] = read_csv(written["csv"] / "samples.csv")
    assert (row["samples_min"], row["samples_max"], row["questions"]) == ("4", "4", "4")
    assert {"pass_at_1_pct", "pass_at_2_pct", "pass_at_4_pct", "maj_at_4_pct"} <= set(row)
    items = {r.generation.item_index for r in load_results(run, n_boot=10).run.rows}
    fixture = [json.loads(line) for line in MATH500_FIXTURE.read_text().splitlines()]
    levels = [fixture[i]["level"] for i in sorted(items)]
    by_level = read_csv(written["csv"] / "breakdown_2_math500_level.csv")
    assert [int(r["level"]) for r in by_level] == sorted(set(levels))
    assert [int(r["questions"]) for r in by_level] == [levels.count(v)
                                                       for v in sorted(set(levels))]
