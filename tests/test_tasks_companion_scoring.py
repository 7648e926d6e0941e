"""The companion study's tasks, scoring: tricky-output corpora, gold answers vs other answers,
never raising on any text or any rows, math-verify off the main thread, MuSiQue's cover EM,
`reference_text` for every registered task, and `crbench score` on the new tasks."""

from __future__ import annotations

import json
import subprocess
import threading
from types import ModuleType

import pytest
from companion_data import (
    CRBENCH,
    DATA,
    FIXTURES,
    NEW_TASKS,
    items_of,
    rows_of,
    write_jsonl,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crbench.errors import InputError
from crbench.tasks import TASK_MODULES, get_task, gpqa_diamond, math500, musique, reference_text
from crbench.tasks.base import Item

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
    items = {item.index: item for item in items_of(task)}
    for case in cases:
        assert records[case["index"]]["extracted"] == case["extracted"]
    for index, record in records.items():  # what each output was held against
        assert record["reference"] == reference_text(NEW_TASKS[task], items[index])
