"""What every synthetic family promises: deterministic items, files in the real dataset's format
that the real loader reads back to the same items, the real scorer accepting the reference as a
model would write it, and the `crbench synth` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from crbench.errors import InputError
from crbench.tasks import get_task

FAMILIES = ["synth_arith", "synth_logic", "synth_temporal", "synth_multihop"]
SUFFIX = {"synth_arith": ".jsonl", "synth_logic": ".jsonl", "synth_temporal": ".json",
          "synth_multihop": ".jsonl"}


def as_model_would_write(name: str, item) -> str:
    """A short reply of a model that got the item right, in each task's usual answer form."""
    if name == "synth_arith":
        return f"Adding it up step by step gives the total.\n\\boxed{{{item.reference}}}"
    if name == "synth_logic":
        return f"Following the premises one by one.\nAnswer: {item.reference}"
    if name == "synth_temporal":
        free = item.fields["options"][item.reference]
        return f"The only free hour is {free}, so ({item.reference})."
    return f"Following the paragraphs.\nAnswer: {item.reference[0]}"


@pytest.mark.parametrize("name", FAMILIES)
def test_same_seed_same_items_other_seed_other_items(name):
    task = get_task(name)
    for difficulty in (1, 4):
        items = task.generate(12, difficulty, 3)
        assert items == task.generate(12, difficulty, 3)
        assert task.generate(5, difficulty, 3) == items[:5]  # n does not change earlier items
        others = task.generate(12, difficulty, 4)
        assert sum(a.fields != b.fields for a, b in zip(items, others, strict=True)) >= 10
        assert len({json.dumps(i.fields, sort_keys=True) for i in items}) == len(items)
        assert [i.index for i in items] == list(range(12))


@pytest.mark.parametrize("name", FAMILIES)
def test_written_file_reads_back_through_the_real_loader(name, tmp_path):
    task = get_task(name)
    for difficulty in (1, 3, 8):
        items = task.generate(9, difficulty, 0)
        path = task.write(items, tmp_path / f"{name}-{difficulty}{SUFFIX[name]}")
        assert task.load(str(path)) == items
        real = get_task(task.REAL_TASK)
        load_options = {"mode": "open"} if name == "synth_multihop" else {}
        assert real.load(str(path), **load_options) == items


@pytest.mark.parametrize("name", FAMILIES)
def test_real_scorer_accepts_the_reference_and_rejects_another(name):
    task = get_task(name)
    items = task.generate(6, 2, 1)
    for item in items:
        right = task.score(item, as_model_would_write(name, item))
        assert right.correct and not right.no_answer, (item, right)
    wrong = task.score(items[0], as_model_would_write(name, items[1]))
    assert items[0].reference == items[1].reference or not wrong.correct


@pytest.mark.parametrize("name", FAMILIES)
def test_prompt_is_the_real_tasks_prompt(name):
    task = get_task(name)
    real = get_task(task.REAL_TASK)
    item = task.generate(1, 1, 0)[0]
    for style in ("completion", "chat"):
        assert task.prompt(item, style) == real.prompt(item, style)


@pytest.mark.parametrize("name", FAMILIES)
def test_load_generates_and_checks_its_arguments(name):
    task = get_task(name)
    assert task.load(difficulty=2, n=6, seed=5, limit=4) == task.generate(6, 2, 5)[:4]
    with pytest.raises(InputError):
        task.load(difficulty=0)
    with pytest.raises(InputError):
        task.load(difficulty=9)
    with pytest.raises(InputError):
        task.load(n=0)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crbench.cli", "synth", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_the_official_format(tmp_path):
    out = tmp_path / "temporal.json"
    done = run_cli("temporal", "--difficulty", "3", "--n", "7", "--seed", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert len(data["examples"]) == 7 and data["examples"][0]["target"].startswith("(")
    task = get_task("synth_temporal")
    assert get_task("temporal_sequences").load(str(out)) == task.generate(7, 3, 2)


def test_cli_bad_arguments_are_one_line_errors(tmp_path):
    for args in (["riddles"], ["logic", "--difficulty", "12"], ["arith", "--n", "0"]):
        done = run_cli(*args, "--out", str(tmp_path / "x.jsonl"))
        assert done.returncode == 2, args
        assert done.stderr.startswith("crbench: error:") and done.stderr.count("\n") == 1
        assert not (tmp_path / "x.jsonl").exists()


# --- solver traces (what `crbench distill` teaches the tiny reasoner) -------------------------


def trace_steps(trace: str) -> int:
    thinking = trace.split("<think>\n", 1)[1].split("\n</think>", 1)[0]
    return len(thinking.splitlines())


@pytest.mark.parametrize("name", FAMILIES)
def test_solver_trace_is_r1_shaped_and_scored_right_by_the_real_scorer(name, tmp_path):
    task = get_task(name)
    for difficulty in (1, 2, 3, 5):
        items = task.generate(30, difficulty, 11)
        for item in items:
            trace = task.trace(item)
            assert trace.startswith("<think>\n") and trace.count("</think>") == 1, trace
            score = task.score(item, trace)
            assert score.correct and not score.truncated, (item, trace, score)
            assert score.rule.endswith("after-think"), score.rule
        # The solver reads only what a file holds: items read back from the official format
        # get the same traces.
        path = task.write(items, tmp_path / f"{name}-{difficulty}{SUFFIX[name]}")
        assert [task.trace(i) for i in task.load(str(path))] == [task.trace(i) for i in items]


@pytest.mark.parametrize("name", FAMILIES)
def test_solver_trace_grows_with_difficulty(name):
    task = get_task(name)
    mean_steps = [sum(trace_steps(task.trace(i)) for i in task.generate(30, d, 5)) / 30
                  for d in (1, 2, 3, 4)]
    assert mean_steps == sorted(mean_steps) and mean_steps[3] > mean_steps[0] + 1, mean_steps


def test_arithmetic_trace_computes_each_step():
    from crbench.tasks.base import Item

    problem = ("Mia has 7 shells. Mia gets 5 more shells. Then Mia gives away 3 shells. Then Mia "
               "ends up with three times as many shells as before. Then Mia gives away a third "
               "of the shells. How many shells does Mia have now?")
    trace = get_task("synth_arith").trace(Item(0, "x", {"problem": problem}, 18))
    assert trace == ("<think>\nStart: 7.\n7 + 5 = 12.\n12 - 3 = 9.\n9 * 3 = 27.\n"
                     "27 / 3 = 9, 27 - 9 = 18.\n</think>\n\\boxed{18}")
