"""The companion study's tasks (MATH-500, GPQA-Diamond, AIME 2025, GSM8K): loading each official
format, the seeded GPQA shuffle, scoring tricky outputs, gold vs other items' answers, never
raising, MuSiQue's cover EM, and `reference_text` for every registered task."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crbench.errors import InputError
from crbench.tasks import (
    TASK_MODULES,
    aime25,
    get_task,
    gpqa_diamond,
    gsm8k,
    math500,
    musique,
    reference_text,
)
from crbench.tasks.base import Item

FIXTURES = Path(__file__).parent / "fixtures"
CRBENCH = Path(sys.executable).parent / "crbench"
DATA = {
    "math500": "math500_test.jsonl",
    "gpqa_diamond": "gpqa_diamond.csv",
    "gsm8k": "gsm8k_test.jsonl",
    "aime25": "aime25_problems.jsonl",
}
NEW_TASKS = {"math500": math500, "gpqa_diamond": gpqa_diamond, "gsm8k": gsm8k, "aime25": aime25}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def rows_of(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def csv_rows() -> list[dict[str, str]]:
    with open(FIXTURES / "gpqa_diamond.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def items_of(task: str) -> list[Item]:
    return NEW_TASKS[task].load(FIXTURES / DATA[task])


# --- loading --------------------------------------------------------------------------------


def test_math500_rows_keep_subject_level_and_unique_id(tmp_path):
    items = math500.load(FIXTURES / "math500_test.jsonl")
    assert len(items) == 12
    first = items[1]
    assert first.id == "test/precalculus/1002.json"
    assert first.reference == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first.fields["subject"] == "Precalculus" and first.fields["level"] == 2
    assert {i.fields["level"] for i in items} == {1, 2, 3, 4, 5}
    # The original MATH files write the level as "Level 3"; a JSON list reads like JSONL.
    rows = rows_of("math500_test.jsonl")
    rows[0]["level"] = "Level 3"
    path = tmp_path / "m.json"
    path.write_text(json.dumps(rows))
    assert math500.load(path)[0].fields["level"] == 3
    assert math500.load(path)[1:] == items[1:]


def test_math500_parquet_like_the_hub(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows_of("math500_test.jsonl")), path)
    assert math500.load(path) == math500.load(FIXTURES / "math500_test.jsonl")


def test_gpqa_csv_fields_stripped_and_answer_among_options():
    items = gpqa_diamond.load(FIXTURES / "gpqa_diamond.csv")
    rows = csv_rows()
    assert len(items) == len(rows) == 6
    for item, row in zip(items, rows, strict=True):
        assert item.id == row["Record ID"]
        assert item.fields["question"] == row["Question"].strip()
        options = item.fields["options"]
        assert list(options) == ["A", "B", "C", "D"]
        assert options[item.reference] == row["Correct Answer"].strip()
        wrong = {row[f"Incorrect Answer {k}"].strip() for k in (1, 2, 3)}
        assert {text for letter, text in options.items() if letter != item.reference} == wrong
        assert sorted(item.fields["permutation"]) == [0, 1, 2, 3]
    assert items[2].fields["options"]["D"] == "10 parsecs"  # "10 parsecs\n\n" in the file


def test_gpqa_shuffle_is_seeded_recorded_and_the_same_on_every_machine():
    items = gpqa_diamond.load(FIXTURES / "gpqa_diamond.csv")
    # Pinned: random.Random seeded by a string (SHA-512), keyed by the Record ID's SHA-256,
    # gives these orders everywhere, whatever PYTHONHASHSEED is.
    assert [i.fields["permutation"] for i in items] == [
        [0, 2, 3, 1], [0, 2, 3, 1], [3, 1, 2, 0], [3, 2, 1, 0], [0, 3, 2, 1], [2, 1, 3, 0]]
    assert [i.reference for i in items] == ["A", "A", "D", "D", "A", "D"]
    code = ("from crbench.tasks import gpqa_diamond as g; print([i.fields['permutation'] for i "
            f"in g.load({str(FIXTURES / 'gpqa_diamond.csv')!r})])")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}, timeout=120)
    assert other.stdout.strip() == str([i.fields["permutation"] for i in items]), other.stderr
    reseeded = gpqa_diamond.load(FIXTURES / "gpqa_diamond.csv", shuffle_seed=1)
    assert [i.fields["permutation"] for i in reseeded] != [i.fields["permutation"] for i in items]
    assert all(i.fields["shuffle_seed"] == 1 for i in reseeded)
    score = gpqa_diamond.score(items[2], "</think>\nAnswer: D")
    assert score.details == {"permutation": [3, 1, 2, 0], "shuffle_seed": 0,
                             "domain": "Physics", "subdomain": "Astrophysics"}
    assert gpqa_diamond.BREAKDOWN == ("domain", "subdomain")


def test_gpqa_jsonl_conversions(tmp_path):
    from_csv = gpqa_diamond.load(FIXTURES / "gpqa_diamond.csv")
    # The official columns as JSONL, and snake_case names: the same items, the same shuffle.
    same = write_jsonl(tmp_path / "same.jsonl", csv_rows())
    assert gpqa_diamond.load(same) == from_csv
    snake = [{"question": r["Question"], "correct_answer": r["Correct Answer"],
              **{f"incorrect_answer_{k}": r[f"Incorrect Answer {k}"] for k in (1, 2, 3)},
              "record_id": r["Record ID"], "high_level_domain": r["High-level domain"],
              "subdomain": r["Subdomain"]} for r in csv_rows()]
    assert gpqa_diamond.load(write_jsonl(tmp_path / "snake.jsonl", snake)) == from_csv
    # A conversion that lists its own options keeps their order.
    listed = [{"question": "Which is a noble gas?", "choices": ["N2", "Ar", "O2", "Cl2"],
               "answer": "B"},
              {"question": "2 + 2?", "options": ["3", "5", "6", "4"], "answer": 3},
              {"question": "3 + 3?", "A": "6", "B": "9", "C": "3", "D": "0", "answer": "A"}]
    items = gpqa_diamond.load(write_jsonl(tmp_path / "listed.jsonl", listed))
    assert [i.reference for i in items] == ["B", "D", "A"]
    assert items[0].fields["options"] == {"A": "N2", "B": "Ar", "C": "O2", "D": "Cl2"}
    assert items[0].fields["permutation"] == [1, 0, 2, 3]
    assert items[1].fields["permutation"] == [1, 2, 3, 0]
    assert items[2].fields["options"] == {"A": "6", "B": "9", "C": "3", "D": "0"}


def test_aime25_opencompass_and_plain_rows():
    opencompass = aime25.load(FIXTURES / "aime25_opencompass_I.jsonl")
    assert [(i.id, i.reference) for i in opencompass] == [("0", 70), ("1", 117), ("2", 15)]
    assert opencompass[0].fields["problem"].startswith("Find the sum of all integer bases")
    plain = aime25.load(FIXTURES / "aime25_problems.jsonl")
    assert [(i.id, i.reference) for i in plain] == [
        ("2025-II-1", 24), ("2025-II-2", 8), ("2025-II-3", 1), ("2025-II-4", 503)]
    assert aime25.prompt(plain[0]) == get_task("aime24").prompt(plain[0])


def test_aime25_hub_joins_both_papers_with_ids(monkeypatch):
    """The hub's two configs become one 30-item list with ids naming the paper (the download
    itself is offline-stubbed with the fixture's rows)."""
    parts = {"AIME2025-I": rows_of("aime25_opencompass_I.jsonl"),
             "AIME2025-II": rows_of("aime25_opencompass_I.jsonl")[:2]}
    asked = []

    def fake_hub_rows(repo: str, split: str, config: str | None = None) -> list[dict]:
        asked.append((repo, split, config))
        return parts[config or ""]

    monkeypatch.setattr(aime25, "hub_rows", fake_hub_rows)
    items = aime25.load()
    assert asked == [("opencompass/AIME2025", "test", "AIME2025-I"),
                     ("opencompass/AIME2025", "test", "AIME2025-II")]
    assert [i.id for i in items] == ["2025-I-1", "2025-I-2", "2025-I-3", "2025-II-1", "2025-II-2"]
    assert [i.index for i in items] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("task,hub", [
    ("math500", ("HuggingFaceH4/MATH-500", "test", None)),
    ("gsm8k", ("openai/gsm8k", "test", "main")),
    ("gpqa_diamond", ("Idavidrein/gpqa", "train", "gpqa_diamond")),
])
def test_hub_rows_make_the_same_items_as_the_local_file(task, hub, monkeypatch):
    """What `datasets` returns for the hub copy (stubbed offline with the fixture's rows; for
    GPQA, empty cells as None and numeric columns as floats, as `datasets` types them)."""
    from crbench.tasks import common

    if task == "gpqa_diamond":
        rows: list[dict] = [{k: (None if v == "" else v) for k, v in row.items()}
                            for row in csv_rows()]
        for row in rows:
            row["Expert Validator Accuracy"] = 1.0
    else:
        rows = rows_of(DATA[task])
    asked = []

    def fake_hub_rows(repo: str, split: str, config: str | None = None) -> list[dict]:
        asked.append((repo, split, config))
        return rows

    monkeypatch.setattr(common, "hub_rows", fake_hub_rows)
    assert NEW_TASKS[task].load() == items_of(task)
    assert asked == [hub]


def test_gsm8k_reference_is_the_last_line_number():
    items = gsm8k.load(FIXTURES / "gsm8k_test.jsonl")
    assert [i.reference for i in items] == ["18", "1000", "-2", "0.25", "56", "14000"]
    assert items[0].fields == {"question": rows_of("gsm8k_test.jsonl")[0]["question"]}


@pytest.mark.parametrize("task", sorted(NEW_TASKS))
def test_new_tasks_registered_limit_seed_and_prompt(task):
    module = get_task(task)
    assert module is NEW_TASKS[task]
    assert task == module.NAME
    picked = module.load(FIXTURES / DATA[task], limit=2, seed=3)
    assert len(picked) == 2 and picked == module.load(FIXTURES / DATA[task], limit=2, seed=3)
    item = picked[0]
    text = module.prompt(item)
    assert text.endswith("\n<think>\n")
    assert module.prompt(item, "chat") == [{"role": "user", "content": text[:-len("\n<think>\n")]}]
    assert isinstance(module.prompt(item, "direct"), list)


def test_prompts_follow_the_study():
    item = items_of("math500")[0]
    assert math500.prompt(item, "chat")[0]["content"].endswith(
        "Please reason step by step, and put your final answer within \\boxed{}.")
    question = items_of("gpqa_diamond")[0]
    text = gpqa_diamond.prompt(question)
    for letter, option in question.fields["options"].items():
        assert f"({letter}) {option}" in text
    assert '"Answer: X"' in text


@pytest.mark.parametrize("task", sorted(NEW_TASKS))
def test_hub_unreachable_is_an_input_error(task, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    with pytest.raises(InputError, match="Hugging Face hub"):
        NEW_TASKS[task].load()


BAD_ROWS = [
    (math500, [{"problem": "P?", "answer": "1", "level": 7}], "row 0: field 'level'"),
    (math500, [{"problem": "P?", "answer": "1"}, {"problem": "Q?"}], "row 1: missing .*answer"),
    (math500, [{"problem": "P?", "answer": "1", "unique_id": "a"},
               {"problem": "Q?", "answer": "2", "unique_id": "a"}], "row 1: duplicate id"),
    (gsm8k, [{"question": "Q?", "answer": "It is 5."}], "row 0: .*'#### N'"),
    (gsm8k, [{"question": "Q?", "answer": "#### five"}], "row 0: .*'#### N'"),
    (gsm8k, [{"question": "Q?", "answer": "#### " + "7" * 5000}], "row 0: .*'#### N'"),
    (aime25, [{"answer": "70"}], "row 0: missing field 'problem' \\(or 'question'\\)"),
    (aime25, [{"question": "Q?", "answer": "3/4"}], "row 0: .*integer from 0 to 999"),
    (gpqa_diamond, [{"question": "Q?", "choices": ["a", "b", "c"], "answer": "A"}],
     "row 0: field 'choices'"),
    (gpqa_diamond, [{"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "E"}],
     "row 0: field 'answer'"),
    (gpqa_diamond, [{"Question": "Q?", "Correct Answer": "x", "Incorrect Answer 1": "y",
                     "Incorrect Answer 2": "z"}], "row 0: missing field 'incorrect answer 3'"),
    (gpqa_diamond, [{"question": "Q?", "A": "1", "B": "2", "C": " ", "D": "4", "answer": "A"}],
     "row 0: field 'c' is empty"),
]


@pytest.mark.parametrize("module,rows,message", BAD_ROWS)
def test_bad_rows_name_the_row(tmp_path, module, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(InputError, match=message) as caught:
        module.load(path)
    assert caught.value.path == str(path)


def test_bad_gpqa_csv_files(tmp_path):
    text = (FIXTURES / "gpqa_diamond.csv").read_text()
    lines = text.splitlines(keepends=True)
    short = tmp_path / "short.csv"
    short.write_text(lines[0] + "just,three,fields\n")
    with pytest.raises(InputError, match=r"row 0 \(line 2\): 3 fields where the header has"):
        gpqa_diamond.load(short)
    header_only = tmp_path / "header.csv"
    header_only.write_text(lines[0])
    with pytest.raises(InputError, match="no rows"):
        gpqa_diamond.load(header_only)
    rows = csv_rows()
    rows[1]["Record ID"] = rows[0]["Record ID"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    duplicate = tmp_path / "dup.csv"
    duplicate.write_text(buffer.getvalue())
    with pytest.raises(InputError, match="row 1: duplicate id 'recAAA111'"):
        gpqa_diamond.load(duplicate)
    with pytest.raises(InputError, match="shuffle_seed"):
        gpqa_diamond.load(FIXTURES / "gpqa_diamond.csv", shuffle_seed="x")
    with pytest.raises(InputError, match="options are shuffle_seed"):
        gpqa_diamond.load(FIXTURES / "gpqa_diamond.csv", mode="open")


# --- scoring --------------------------------------------------------------------------------

CORPORA = [("math500", "outputs_math500.jsonl"), ("gpqa_diamond", "outputs_gpqa_diamond.jsonl"),
           ("gsm8k", "outputs_gsm8k.jsonl"), ("aime25", "outputs_aime25.jsonl")]


def corpus_cases() -> list[tuple[str, dict]]:
    return [(task, case) for task, name in CORPORA for case in rows_of(name)]


@pytest.mark.parametrize("task,case", corpus_cases(),
                         ids=[f"{t}-{c['why']}" for t, c in corpus_cases()])
def test_tricky_outputs(task, case):
    item = {i.index: i for i in items_of(task)}[case["index"]]
    got = NEW_TASKS[task].score(item, case["output"], hit_limit=case.get("hit_limit", False))
    assert (got.extracted, got.correct, got.rule, got.truncated) == (
        case["extracted"], case["correct"], case["rule"], case["truncated"])
    assert got.no_answer == (got.extracted is None)


def stated(task: str, text: str) -> list[str]:
    """How reasoning models state an answer: boxed, under a heading, on an "Answer:" line, and
    (for a letter) in prose."""
    if task == "gpqa_diamond":
        return [f"Reasoning.\n</think>\n\nAnswer: {text}", f"</think>\nThe answer is ({text}).",
                f"</think>\n$\\boxed{{{text}}}$"]
    return [f"Let me work it out.\n</think>\n\nThe final answer is $\\boxed{{{text}}}$.",
            f"</think>\n**Final Answer**\n\\[ \\boxed{{{text}}} \\]",
            f"Working...\n</think>\nAnswer: {text}"]


def wrong_answers(task: str, items: list[Item], k: int) -> list[str]:
    """Answers that are not item k's: the next item's gold answer; for GPQA, whose letters
    coincide across items by chance, the item's own three wrong letters."""
    if task == "gpqa_diamond":
        return [letter for letter in "ABCD" if letter != items[k].reference]
    return [reference_text(NEW_TASKS[task], items[(k + 1) % len(items)])]


@pytest.mark.parametrize("task", sorted(NEW_TASKS))
def test_gold_scores_all_and_other_answers_score_zero(task):
    module = NEW_TASKS[task]
    items = items_of(task)
    for item in items:
        for output in stated(task, reference_text(module, item)):
            got = module.score(item, output)
            assert got.correct, (item.id, output, got)
    wrong = [(item.id, output) for k, item in enumerate(items)
             for answer in wrong_answers(task, items, k) for output in stated(task, answer)
             if module.score(item, output).correct]
    assert wrong == []


def test_gpqa_option_text_that_starts_like_a_letter():
    item = Item(0, "x", {"question": "Which fly?", "options": {
        "A": "Apis mellifera", "B": "Musca domestica", "C": "Aedes aegypti",
        "D": "D. melanogaster"}, "permutation": [1, 2, 3, 0], "shuffle_seed": 0}, "D")
    assert gpqa_diamond.score(item, "</think>\nAnswer: D. melanogaster").extracted == "D"
    other = Item(0, "x", {**item.fields, "options": {**item.fields["options"],
                                                     "A": "D. melanogaster", "D": "Apis"}}, "A")
    assert gpqa_diamond.score(other, "</think>\nAnswer: D. melanogaster").extracted == "A"
    assert gpqa_diamond.score(other, "</think>\nAnswer: D. It is the fruit fly").extracted == "D"


def test_math_verify_scores_in_a_worker_thread():
    """math-verify's timeout is a SIGALRM handler (main thread only); off the main thread the
    comparison must still run rather than fail into "wrong"."""
    item = items_of("math500")[2]  # 2\sqrt{13}
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.append(
        math500.score(item, "</think>\\boxed{\\sqrt{52}}").correct))
    worker.start()
    worker.join(120)
    assert results == [True]


def test_costly_expressions_are_not_evaluated_off_the_main_thread():
    """Off the main thread math-verify has no timeout, and sympy evaluates a power tower or the
    factorial of a huge number for minutes: such outputs are compared as text (and lose)."""
    item = items_of("math500")[0]
    towers = ["9^{9^{9^{9}}}", "10^{10^{10}}", "2^2^2^2^2", "(10^{100})!", "x^{10^{10}}+1",
              "100000!"]
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.extend(
        math500.score(item, f"</think>\\boxed{{{tower}}}").correct for tower in towers),
        daemon=True)
    worker.start()
    worker.join(120)  # each takes milliseconds; evaluated, the first would never finish
    assert results == [False] * len(towers)
    assert not math500.too_costly("x^2y^3") and not math500.too_costly("(x+1)^{200}")


def test_math500_details_carry_subject_and_level():
    item = items_of("math500")[3]
    got = math500.score(item, "</think>\\boxed{[-2,7]}")
    assert got.details == {"subject": "Algebra", "level": 3}
    assert math500.BREAKDOWN == ("subject", "level")


def test_musique_cover_em_sees_an_answer_written_as_a_sentence():
    item = musique.load(FIXTURES / "musique_dev.jsonl")[0]  # "Ada Quill" / "A. Quill"
    sentence = musique.score(item, "</think>\nAnswer: The company was founded by Ada Quill.")
    assert (sentence.em, sentence.correct, sentence.details["cover_em"]) == (0.0, False, 1.0)
    exact = musique.score(item, "</think>\nAnswer: Ada Quill")
    assert (exact.em, exact.details["cover_em"]) == (1.0, 1.0)
    alias = musique.score(item, "</think>\nAnswer: it was A. Quill, an engineer")
    assert alias.details["cover_em"] == 1.0
    partial = musique.score(item, "</think>\nAnswer: Ada Quillson")  # not a whole span
    assert partial.details["cover_em"] == 0.0
    none = musique.score(item, "</think>\n")
    assert none.details["cover_em"] == 0.0 and none.no_answer


# --- never raises -----------------------------------------------------------------------------

PIECES = ["</think>", "<think>", "\\boxed{", "}", "{", "Answer:", "Final Answer", "the answer is",
          "(C)", "C", "A)", "option B", "$", "\\frac{1}{2}", "0.5", "1,000", "$18", "\\text{(C)}",
          "\\begin{pmatrix}", "\\\\", "\\end{pmatrix}", "[-2,7]", "^\\circ", "\n", " ", "=",
          "\\sqrt{", "9^9^9", "-", "####", "\x1b[31m", "\u2212", "1e308", "x"]
OUTPUTS = st.one_of(st.text(max_size=300),
                    st.lists(st.sampled_from(PIECES), max_size=40).map("".join))


@pytest.mark.parametrize("task", sorted(NEW_TASKS))
def test_score_never_raises(task):
    items = items_of(task)

    @settings(max_examples=120, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(output=OUTPUTS, which=st.integers(0, len(items) - 1), hit_limit=st.booleans())
    def check(output: str, which: int, hit_limit: bool) -> None:
        got = NEW_TASKS[task].score(items[which], output, hit_limit=hit_limit)
        assert got.no_answer == (got.extracted is None)
        assert not (got.correct and got.no_answer)
        json.dumps(got.to_dict())  # what the store writes

    check()


ROW_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=30),
                       st.lists(st.text(max_size=5), max_size=5))


@pytest.mark.parametrize("task", sorted(NEW_TASKS))
def test_load_gives_items_or_one_input_error(task, tmp_path_factory):
    """Rows of any shape with the task's field names: items, or an InputError, nothing else."""
    names = {"math500": ["problem", "answer", "level", "subject", "unique_id"],
             "gsm8k": ["question", "answer", "id"],
             "aime25": ["question", "problem", "answer", "id"],
             "gpqa_diamond": ["Question", "Correct Answer", "Incorrect Answer 1",
                              "Incorrect Answer 2", "Incorrect Answer 3", "choices", "answer",
                              "Record ID"]}[task]
    folder = tmp_path_factory.mktemp(task)

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(rows=st.lists(st.dictionaries(st.sampled_from(names), ROW_VALUES), min_size=1,
                         max_size=4))
    def check(rows: list[dict]) -> None:
        path = write_jsonl(folder / "rows.jsonl", rows)
        try:
            items = NEW_TASKS[task].load(path)
        except InputError as exc:
            assert exc.path == str(path)
            return
        for item in items:
            assert isinstance(reference_text(NEW_TASKS[task], item), str)
            NEW_TASKS[task].prompt(item)

    check()


CSV_PIECES = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
              "Incorrect Answer 3", "Record ID", ",", '"', '""', "\r\n", "\n", "x", " ", "\x00",
              "\u00e9"]


def test_gpqa_csv_of_any_text_gives_items_or_one_input_error(tmp_path_factory):
    folder = tmp_path_factory.mktemp("csv")
    header = ",".join(['"Question"', '"Correct Answer"', '"Incorrect Answer 1"',
                       '"Incorrect Answer 2"', '"Incorrect Answer 3"', '"Record ID"']) + "\r\n"

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=st.lists(st.sampled_from(CSV_PIECES), max_size=60).map("".join),
           with_header=st.booleans())
    def check(body: str, with_header: bool) -> None:
        path = folder / "g.csv"
        path.write_text((header if with_header else "") + body, encoding="utf-8")
        try:
            items = gpqa_diamond.load(path)
        except InputError as exc:
            assert exc.path == str(path)
            return
        assert all(set(i.fields["options"]) == set("ABCD") for i in items)

    check()


# --- reference_text for every task ------------------------------------------------------------


def test_reference_text_for_every_registered_task():
    from crbench.tasks import synth_common

    data = {**DATA, "aime24": "aime24_problems.jsonl", "folio": "folio_v2.jsonl",
            "temporal_sequences": "temporal_sequences.json", "musique": "musique_dev.jsonl"}
    seen = {}
    for name in TASK_MODULES:
        module: ModuleType = get_task(name)
        if name in data:
            item = module.load(FIXTURES / data[name])[0]
        else:  # a generated family
            item = module.load(None, limit=1, seed=0)[0]
            assert name.removeprefix("synth_") in synth_common.FAMILIES
        seen[name] = reference_text(module, item)
        assert isinstance(seen[name], str) and seen[name]
    assert seen["aime24"] == "1" and seen["folio"] == "True"
    assert seen["temporal_sequences"] == "B" and seen["musique"] == "Ada Quill | A. Quill"
    assert seen["math500"] == "\\frac{3}{4}" and seen["gsm8k"] == "18"
    assert seen["gpqa_diamond"] == "A" and seen["aime25"] == "24"


# --- through the CLI --------------------------------------------------------------------------


@pytest.mark.parametrize("task,corpus", CORPORA)
def test_crbench_score_on_the_new_tasks(tmp_path, task, corpus):
    cases = list({c["index"]: c for c in rows_of(corpus)}.values())  # one output per item
    outputs = write_jsonl(tmp_path / "outputs.jsonl", [
        {"index": c["index"], "output": c["output"]}
        | ({"finish_reason": "length"} if c.get("hit_limit") else {}) for c in cases])
    per_item = tmp_path / "per_item.jsonl"
    done = subprocess.run(
        [str(CRBENCH), "score", "--task", task, "--data", str(FIXTURES / DATA[task]),
         "--outputs", str(outputs), "--per-item", str(per_item), "--json"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["n"] == len(items_of(task))
    assert summary["correct"] == sum(c["correct"] for c in cases)
    records = {r["index"]: r for r in map(json.loads, per_item.read_text().splitlines())}
    for case in cases:
        assert records[case["index"]]["extracted"] == case["extracted"]


# --- the study's spec -------------------------------------------------------------------------

LIU_SPEC = Path(__file__).parents[1] / "src" / "crbench" / "specs" / "liu2025_quantization.toml"


def test_liu2025_spec_has_the_studys_settings():
    from crbench.spec import load_spec

    spec = load_spec(LIU_SPEC)
    assert {m.source for m in spec.models.values()} == {
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"}
    recipes = {(v.model, v.method, v.recipe["bits"], v.recipe["group_size"])
               for v in spec.variants.values()}
    assert recipes == {(m, method, bits, 128) for m in spec.models
                       for method in ("awq", "gptq") for bits in (3, 4)}
    assert {t.task for t in spec.tasks} >= set(NEW_TASKS)
    sampling = spec.sampling
    assert (sampling.temperature, sampling.top_p, sampling.max_new_tokens) == (0.6, 0.95, 32768)
    assert [sampling.seed + r for r in range(sampling.repeats)] == [42, 43, 44]
    text = LIU_SPEC.read_text()
    for anchor in ("25.6 / 85.0", "20.0 / 83.4", "18.9 / 83.0", "6.7 / 52.6", "10.0 / 71.4"):
        assert anchor in text


def test_liu2025_spec_dry_run_offline_with_local_files(tmp_path):
    """The shipped spec loads its tasks from the hub; with each task given a local file (as its
    comment says to do offline), `crbench run --dry-run` plans every cell and creates nothing."""
    text = LIU_SPEC.read_text()
    for task, name in {**DATA, "aime24": "aime24_problems.jsonl"}.items():
        line = f'task = "{task}"'
        text = text.replace(line, f'{line}\npath = "{FIXTURES / name}"', 1)
    spec = tmp_path / "liu.toml"
    spec.write_text(text)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([str(CRBENCH), "run", "--dry-run", str(spec), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    per_item = (12 + 6 + 4 + 6 + 5) * 3  # fixture items of the five tasks, 3 repeats
    assert f"total: {15 * per_item} generations, 0 stored" in done.stdout
    assert not (tmp_path / "run").exists()
