"""avg@k, pass@k and maj@k against values computed by hand, and the unbiased estimator against
exact binomials (fractions) for every n, c, k up to 30 and for n in the thousands."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crbench import tasks
from crbench.sampling_metrics import (
    Attempt,
    ks_for,
    maj_at_k,
    majority_correct,
    pass_at_k,
    sampling_metrics,
    vote_key,
)
from crbench.tasks import aime24, aime25, folio, gsm8k, math500, math_common, musique, synth_arith
from crbench.tasks.base import Item


def exact_pass(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def attempts(*votes: tuple[str | None, bool]) -> list[Attempt]:
    """Samples numbered 0, 1, ... in the order given: (extracted answer, scored correct)."""
    return [Attempt(i, correct, extracted) for i, (extracted, correct) in enumerate(votes)]


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (4, 0, 1, 0.0), (4, 0, 2, 0.0), (4, 0, 4, 0.0),  # c = 0: never
    (4, 4, 1, 1.0), (4, 4, 3, 1.0), (4, 4, 4, 1.0),  # c = n: always
    (4, 1, 4, 1.0), (3, 1, 3, 1.0),  # n = k: solved when any sample is
    (4, 1, 1, 0.25), (4, 3, 1, 0.75),  # k = 1: c / n
    (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (4, 2, 2, 5 / 6),  # 1 - C(2,2)/C(4,2) = 1 - 1/6
    (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
])
def test_pass_at_k_by_hand(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_the_exact_binomial_ratio_for_every_small_case() -> None:
    for n in range(1, 31):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(exact_pass(n, c, k)),
                                                           abs=1e-12), (n, c, k)


@pytest.mark.parametrize(("n", "c", "k"), [(1000, 1, 1), (1000, 1, 500), (2000, 3, 1000),
                                           (5000, 10, 64), (5000, 4990, 4999), (3000, 0, 7)])
def test_pass_at_k_is_stable_where_the_binomials_overflow_a_float(n: int, c: int, k: int) -> None:
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(float(exact_pass(n, c, k)), rel=1e-9, abs=1e-12)


def test_the_binomials_themselves_overflow_a_float() -> None:
    with pytest.raises(OverflowError):  # why pass_at_k never forms them
        float(math.comb(2000, 1000))


@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n),
                                                         st.integers(1, n))))
def test_pass_at_k_grows_with_k_and_c(args: tuple[int, int, int]) -> None:
    n, c, k = args
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    if k < n:
        assert pass_at_k(n, c, k + 1) >= value - 1e-12
    if c < n:
        assert pass_at_k(n, c + 1, k) >= value - 1e-12
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 1, 5), (4, 5, 1), (4, -1, 1), (4, 1, 0), (0, 0, 1)])
def test_pass_at_k_refuses_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_ks_are_the_powers_of_two_and_n() -> None:
    assert ks_for(1) == [1]
    assert ks_for(3) == [1, 2, 3]
    assert ks_for(4) == [1, 2, 4]
    assert ks_for(6) == [1, 2, 4, 6]
    assert ks_for(64) == [1, 2, 4, 8, 16, 32, 64]
    assert ks_for(0) == []


def test_vote_key_ignores_white_space_only() -> None:
    assert vote_key(" 1, 2 ") == vote_key("1,2") == "1,2"
    assert vote_key("\\frac{1}{2}") != vote_key("0.5")  # the task's comparison is not redone
    assert vote_key("A") != vote_key("a")
    assert vote_key("  ") is None
    assert vote_key(None) is None


def test_majority_wins() -> None:
    assert majority_correct(attempts(("7", False), ("12", True), ("12", True)))
    assert not majority_correct(attempts(("12", True), ("7", False), ("7", False)))


def test_a_tie_goes_to_the_answer_that_appeared_first() -> None:
    wrong_first = attempts(("7", False), ("12", True), ("12", True), ("7", False))
    assert not majority_correct(wrong_first)
    right_first = attempts(("12", True), ("7", False), ("7", False), ("12", True))
    assert majority_correct(right_first)
    # By sample number, not by the order of the list: the same samples shuffled agree.
    assert not majority_correct(list(reversed(wrong_first)))
    assert majority_correct(list(reversed(right_first)))
    # A three-way tie of single votes: the first sample's answer.
    assert majority_correct(attempts(("3", True), ("4", False), ("5", False)))
    assert not majority_correct(attempts(("4", False), ("3", True), ("5", False)))


def test_samples_without_an_answer_do_not_vote() -> None:
    assert majority_correct(attempts((None, False), (None, False), ("5", True)))
    assert not majority_correct(attempts((None, False), (None, False), (" ", False)))
    assert not majority_correct([])


def test_a_vote_is_correct_when_any_sample_giving_it_was_scored_correct() -> None:
    # The same answer text scored both ways (e.g. once cut off by the token limit): the
    # task's verdict that this answer is right stands for the vote.
    assert majority_correct(attempts(("1,2", False), ("1, 2", True), ("3", False)))


def test_maj_at_k_uses_the_first_k_samples() -> None:
    samples = attempts(("7", False), ("7", False), ("12", True), ("12", True), ("12", True))
    assert not maj_at_k(samples, 3)  # 7, 7, 12
    assert maj_at_k(samples, 5)  # 7, 7, 12, 12, 12
    with pytest.raises(ValueError):
        maj_at_k(samples, 6)


def test_cell_metrics_by_hand() -> None:
    questions = {
        "q1": attempts(("3", True), ("4", False), ("4", False), ("3", True)),  # tie -> "3"
        "q2": attempts(("9", True), ("9", True), ("9", True), ("9", True)),
        "q3": attempts(("1", False), (None, False), ("2", False), ("1", False)),
        "q4": attempts(("5", False), ("6", True), ("6", True), ("6", True)),
    }
    m = sampling_metrics(questions, n_boot=500, seed=3)
    assert (m.n_min, m.n_max) == (4, 4)
    assert m.avg.mean == pytest.approx((0.5 + 1 + 0 + 0.75) / 4)
    assert sorted(m.pass_at) == [1, 2, 4]
    assert m.pass_at[1].mean == pytest.approx(m.avg.mean)  # the trap: pass@1 is avg@n
    assert m.pass_at[2].mean == pytest.approx((5 / 6 + 1 + 0 + 1) / 4)
    assert m.pass_at[4].mean == pytest.approx(3 / 4)  # any correct among the four
    assert sorted(m.maj_at) == [4]
    assert m.maj_at[4].mean == pytest.approx(3 / 4)  # q1 (tie to "3"), q2, q4
    for e in (m.avg, *m.pass_at.values(), *m.maj_at.values()):
        assert e.n_questions == 4
        assert e.lo <= e.mean <= e.hi
    assert m.pass_at[4].lo < m.pass_at[4].hi  # the interval comes from resampling questions
    again = sampling_metrics(questions, n_boot=500, seed=3)
    assert (again.pass_at[2].lo, again.pass_at[2].hi) == (m.pass_at[2].lo, m.pass_at[2].hi)


def test_questions_with_fewer_samples_count_only_for_the_k_they_have() -> None:
    questions = {
        "full": attempts(("1", True), ("2", False), ("2", False), ("1", True)),
        "half": attempts(("1", False), ("1", True)),  # a run in progress
    }
    m = sampling_metrics(questions, n_boot=200)
    assert (m.n_min, m.n_max) == (2, 4)
    assert m.pass_at[2].n_questions == 2
    assert m.pass_at[4].n_questions == 1
    assert m.pass_at[4].mean == 1.0
    assert m.avg.mean == pytest.approx((0.5 + 0.5) / 2)


def test_no_questions_give_empty_metrics() -> None:
    m = sampling_metrics({}, n_boot=10)
    assert m.n_max == 0 and m.avg.n_questions == 0 and not m.pass_at and not m.maj_at


# --- a task's own vote key: answers written differently, one vote ----------------------------


def scored(task: ModuleType, reference: object, outputs: list[str]) -> list[Attempt]:
    """The outputs as samples 0, 1, ... of one item, each scored by the task itself."""
    item = Item(0, "q", {"problem": "?"}, reference)
    found = [task.score(item, output) for output in outputs]
    return [Attempt(i, s.correct, s.extracted) for i, s in enumerate(found)]


def test_math500_votes_compare_values_so_a_split_majority_now_agrees() -> None:
    samples = scored(math500, "\\frac{1}{2}",
                     ["\\boxed{3}", "\\boxed{\\frac{1}{2}}", "\\boxed{0.5}"])
    assert [a.correct for a in samples] == [False, True, True]  # the scorer agrees on both
    key = tasks.vote_key(math500)
    assert key is not None
    # Text votes: three answers once each, the first ("3", wrong) wins the tie.
    assert not maj_at_k(samples, 3)
    # Value votes: "\frac{1}{2}" and "0.5" are two votes for one answer, which is right.
    assert maj_at_k(samples, 3, key)
    m = sampling_metrics({"q": samples}, n_boot=50, task_key=key)
    assert m.maj_at[3].mean == 1.0
    assert sampling_metrics({"q": samples}, n_boot=50).maj_at[3].mean == 0.0  # default: as before


def test_aime_votes_agree_on_a_wrong_value_written_two_ways() -> None:
    # The split flattered maj@k: two samples that state one wrong value outvote the right one.
    samples = scored(aime24, 25, ["\\boxed{25}", "\\boxed{\\frac{3}{2}}", "\\boxed{1.5}"])
    assert [a.extracted for a in samples] == ["25", "\\frac{3}{2}", "1.5"]
    assert [a.correct for a in samples] == [True, False, False]
    assert maj_at_k(samples, 3)  # text: a three-way tie, the first (right) answer wins
    for task in (aime24, aime25, synth_arith):  # aime25 and the arithmetic family read as aime24
        key = tasks.vote_key(task)
        assert key is not None and not maj_at_k(samples, 3, key)


def test_tasks_without_a_vote_key_keep_the_default() -> None:
    for task in (gsm8k, folio, musique):
        assert tasks.vote_key(task) is None


@pytest.mark.parametrize(("same", "answers"), [
    (True, ["\\frac{1}{2}", "0.5", "\\dfrac12", "1/2", "\\tfrac{1}{2}", "$0.50$"]),
    (True, ["025", "25", "2^{2}\\cdot 6+1"]),
    (True, ["\\left( 2, \\frac{\\pi}{3} \\right)", "(2,\\pi/3)"]),
    (True, ["\\{1, 2\\}", "\\{2,1\\}"]),
    (True, ["\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"]),
    (False, ["0.5", "0.51"]),
    (False, ["\\frac{1}{3}", "0.333"]),
    (False, ["\\text{Evelyn}", "\\text{Evenly}"]),  # letters: sympy's product would merge them
    (False, ["x+1", "x-1"]),
    (False, ["(1,2)", "[1,2]"]),
])
def test_the_math_vote_key(same: bool, answers: list[str]) -> None:
    keys = {math_common.vote_key(answer) for answer in answers}
    assert (len(keys) == 1) is same, keys


def test_the_math_vote_key_never_raises_and_never_hands_sympy_a_tower() -> None:
    for junk in ["", "}{", "\\frac{", "9^{9^{9}}", "x" * 500, "\\sqrt{-1}", "1/0", "\\infty"]:
        assert isinstance(math_common.vote_key(junk), str)
    assert math_common.vote_key("9^{9^{9}}") == "9^{9^{9}}"  # compared as text only


# --- crbench score on outputs with several samples per item ----------------------------------

FIXTURES = Path(__file__).parent / "fixtures"
CRBENCH = Path(sys.executable).parent / "crbench"
MATH500 = FIXTURES / "math500_test.jsonl"


def crbench(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CRBENCH), *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def math500_answers() -> list[str]:
    return [json.loads(line)["answer"] for line in MATH500.read_text().splitlines()]


def sampled_outputs(path: Path, field: str = "sample") -> Path:
    """Four samples of every MATH-500 fixture item, in four patterns (item i: pattern i % 4):
    all right; right twice in a 2-2 tie the wrong answer opened; right once in a three-way tie
    it opened (the first sample gives no answer); never right."""
    rows = []
    for index, answer in enumerate(math500_answers()):
        right, wrong = f"\\boxed{{{answer}}}", "\\boxed{999}"
        pattern = [[right] * 4, [wrong, right, right, wrong],
                   ["I am not sure.", right, "\\boxed{998}", wrong], [wrong] * 4][index % 4]
        rows += [{"index": index, field: s, "output": out} for s, out in enumerate(pattern)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_reports_avg_pass_and_maj_of_several_samples(tmp_path: Path) -> None:
    outputs = sampled_outputs(tmp_path / "outputs.jsonl")
    per_item = tmp_path / "per_item.jsonl"
    done = crbench("score", "--task", "math500", "--data", MATH500, "--outputs", outputs,
                   "--style", "chat", "--json", "--per-item", per_item)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    n_items = len(math500_answers())
    assert n_items % 4 == 0  # every pattern equally often: the values below are exact
    assert (summary["samples_per_item"], summary["items"], summary["n"]) == (4, n_items,
                                                                            4 * n_items)
    by_hand = {"avg": (1 + 0.5 + 0.25 + 0) / 4, "1": (1 + 0.5 + 0.25 + 0) / 4,
               "2": (1 + 5 / 6 + 0.5 + 0) / 4, "4": (1 + 1 + 1 + 0) / 4,
               "maj4": (1 + 0 + 1 + 0) / 4}
    assert summary["avg_at_n"]["mean"] == pytest.approx(by_hand["avg"])
    assert summary["accuracy"] == pytest.approx(by_hand["avg"])  # accuracy is avg@n
    assert list(summary["pass_at_k"]) == ["1", "2", "4"]
    for k in ("1", "2", "4"):
        e = summary["pass_at_k"][k]
        assert e["mean"] == pytest.approx(by_hand[k]), k
        assert e["lo"] <= e["mean"] <= e["hi"] and e["items"] == n_items
    assert list(summary["maj_at_k"]) == ["4"]
    assert summary["maj_at_k"]["4"]["mean"] == pytest.approx(by_hand["maj4"])
    records = [json.loads(line) for line in per_item.read_text().splitlines()]
    assert len(records) == 4 * n_items
    assert {(r["index"], r["sample"]) for r in records} == {
        (i, s) for i in range(n_items) for s in range(4)}


def test_repeat_is_a_sample_number_and_a_missing_sample_is_no_answer(tmp_path: Path) -> None:
    outputs = sampled_outputs(tmp_path / "outputs.jsonl", field="repeat")
    rows = [json.loads(line) for line in outputs.read_text().splitlines()]
    # Item 0 (all right) loses its last sample: 3 of 4 right now.
    rows = [r for r in rows if (r["index"], r["repeat"]) != (0, 3)]
    outputs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = crbench("score", "--task", "math500", "--data", MATH500, "--outputs", outputs,
                   "--style", "chat", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    n_items = len(math500_answers())
    assert summary["missing_output"] == 1
    full = (1 + 0.5 + 0.25 + 0) / 4
    assert summary["avg_at_n"]["mean"] == pytest.approx(full - 0.25 / n_items)
    assert summary["pass_at_k"]["4"]["mean"] == pytest.approx(0.75)  # item 0 still solved


def test_the_terminal_table_shows_the_metrics_and_the_trap(tmp_path: Path) -> None:
    outputs = sampled_outputs(tmp_path / "outputs.jsonl")
    done = crbench("score", "--task", "math500", "--data", MATH500, "--outputs", outputs,
                   "--style", "chat")
    assert done.returncode == 0, done.stderr
    for text in ("avg@4", "pass@1", "pass@2", "pass@4", "maj@4", "75.0", "not pass@n"):
        assert text in done.stdout, text


@pytest.mark.parametrize(("rows", "place", "message"), [
    ([{"index": 0, "sample": 0, "output": "x"}, {"index": 1, "output": "y"}], "row 1",
     "no 'sample' number"),
    ([{"index": 0, "sample": 0, "output": "x"}, {"index": 0, "sample": 0, "output": "y"}],
     "row 1", "second output for index 0, sample 0"),
    ([{"index": 0, "sample": "first", "output": "x"}], "row 0", "sample number"),
    ([{"index": 0, "sample": -1, "output": "x"}], "row 0", "sample number"),
    ([{"index": 0, "sample": True, "output": "x"}], "row 0", "sample number"),
    ([{"index": 0, "sample": 0, "repeat": 0, "output": "x"}], "row 0", "once"),
    ([{"index": -2, "sample": 0, "output": "x"}], "row 0", "'index'"),
    ([{"index": 0, "sample": 0, "output": 5}], "row 0", "'output'"),
    ([{"index": 0, "sample": 0, "output": "x"}, [1, 2]], "row 1", "JSON object"),
])
def test_bad_sampled_outputs_are_one_line_errors(tmp_path: Path, rows: list, place: str,
                                                 message: str) -> None:
    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = crbench("score", "--task", "math500", "--data", MATH500, "--outputs", outputs)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert str(outputs) in lines[0] and place in lines[0] and message in lines[0], lines[0]
