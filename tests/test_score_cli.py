"""`crbench score` as a user runs it: a real subprocess, both output forms, bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CRBENCH = Path(sys.executable).parent / "crbench"


def crbench(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CRBENCH), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def corpus(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def write_outputs_jsonl(path: Path, cases: list[dict]) -> Path:
    rows = [
        {"index": c["index"], "output": c["output"]}
        | ({"finish_reason": "length"} if c.get("hit_limit") else {})
        for c in cases
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def one_per_item(cases: list[dict]) -> list[dict]:
    """The last corpus case for each item index, so each item has exactly one output."""
    return list({c["index"]: c for c in cases}.values())


def test_jsonl_outputs_json_summary_and_per_item(tmp_path):
    # The corpus gives each output's verdict read exactly as written (no thinking prefilled):
    # the chat style's reading.
    cases = one_per_item(corpus("outputs_aime24.jsonl"))
    outputs = write_outputs_jsonl(tmp_path / "outputs.jsonl", cases)
    per_item = tmp_path / "per_item.jsonl"
    done = crbench("score", "--task", "aime24", "--data", FIXTURES / "aime24_problems.jsonl",
                   "--outputs", outputs, "--per-item", per_item, "--json", "--style", "chat")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["task"] == "aime24" and summary["n"] == 5
    assert summary["accuracy"] == pytest.approx(sum(c["correct"] for c in cases) / 5)
    assert summary["no_answer"] == sum(c["extracted"] is None for c in cases)
    assert summary["truncated"] == sum(c["truncated"] for c in cases)
    records = {r["index"]: r for r in map(json.loads, per_item.read_text().splitlines())}
    assert sorted(records) == [0, 1, 2, 3, 4]
    for case in cases:
        record = records[case["index"]]
        assert (record["extracted"], record["correct"], record["truncated"], record["no_answer"]) \
            == (case["extracted"], case["correct"], case["truncated"], case["extracted"] is None)


def test_folder_of_txt_outputs_and_missing_items(tmp_path):
    folder = tmp_path / "outs"
    folder.mkdir()
    (folder / "0.txt").write_text("She is busy until 11am.\n</think>\nAnswer: (B)")
    (folder / "2.txt").write_text("</think>\nAnswer: (C)")
    (folder / "notes.md").write_text("not an output; ignored")
    done = crbench("score", "--task", "temporal_sequences", "--data",
                   FIXTURES / "temporal_sequences.json", "--outputs", folder, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["n"], summary["correct"], summary["no_answer"]) == (3, 1, 1)
    assert summary["accuracy"] == pytest.approx(1 / 3)
    assert summary["missing_output"] == 1


def test_musique_em_f1_modes_and_sample(tmp_path):
    cases = [c for c in corpus("outputs_musique.jsonl") if c["index"] in (0, 1)]
    outputs = write_outputs_jsonl(tmp_path / "o.jsonl", one_per_item(cases))
    per_item = tmp_path / "p.jsonl"
    data = FIXTURES / "musique_dev.jsonl"
    done = crbench("score", "--task", "musique", "--data", data, "--outputs", outputs,
                   "--mode", "open", "--json", "--per-item", per_item)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["n"] == 4
    records = [json.loads(line) for line in per_item.read_text().splitlines()]
    assert all({"em", "f1"} <= set(r) for r in records)
    assert summary["em"] == pytest.approx(sum(r["em"] for r in records) / 4)
    assert summary["f1"] == pytest.approx(sum(r["f1"] for r in records) / 4)
    sample = crbench("score", "--task", "musique", "--data", data, "--outputs", outputs,
                     "--limit", "2", "--seed", "3", "--json")
    assert json.loads(sample.stdout)["n"] == 2


def test_musique_summary_averages_cover_em_next_to_em_and_f1(tmp_path):
    # Hand-checked: a statement that contains the gold answer is cover EM but not EM.
    rows = [{"index": 0, "output": "</think>\nAnswer: The founder was Ada Quill."},
            {"index": 1, "output": "</think>\nAnswer: Fenn Valley"},
            {"index": 3, "output": "</think>\nAnswer: Swedish"}]  # index 4: no output
    outputs = tmp_path / "o.jsonl"
    outputs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    per_item = tmp_path / "p.jsonl"
    done = crbench("score", "--task", "musique", "--data", FIXTURES / "musique_dev.jsonl",
                   "--outputs", outputs, "--mode", "open", "--json", "--per-item", per_item)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    records = [json.loads(line) for line in per_item.read_text().splitlines()]
    assert [r["details"]["cover_em"] for r in records] == [1.0, 1.0, 0.0, 0.0]
    assert [r["em"] for r in records] == [0.0, 1.0, 0.0, 0.0]
    assert (summary["em"], summary["cover_em"]) == (0.25, 0.5)
    keys = list(summary)
    assert keys.index("cover_em") == keys.index("f1") + 1 == keys.index("em") + 2


def test_tasks_without_cover_em_have_none_in_the_summary(tmp_path):
    outputs = tmp_path / "o.jsonl"
    outputs.write_text(json.dumps({"index": 0, "output": "</think>\n\\boxed{25}"}) + "\n")
    done = crbench("score", "--task", "aime24", "--data", FIXTURES / "aime24_problems.jsonl",
                   "--outputs", outputs, "--json")
    assert done.returncode == 0, done.stderr
    assert "cover_em" not in json.loads(done.stdout)


def test_table_escapes_model_text(tmp_path):
    outputs = tmp_path / "o.jsonl"
    row = {"index": 0, "output": "</think>\nAnswer: [red]Ann[/red]"}
    outputs.write_text(json.dumps(row) + "\n")
    done = crbench("score", "--task", "musique", "--data", FIXTURES / "musique_dev.jsonl",
                   "--outputs", outputs)
    assert done.returncode == 0, done.stderr
    assert "accuracy" in done.stdout
    assert "[red]Ann[/red]" in done.stdout  # shown as text, not taken as rich markup


def test_finish_reason_length_counts_as_truncated(tmp_path):
    outputs = tmp_path / "o.jsonl"
    rows = [{"index": 2, "output": "</think>\n\\boxed{25}", "finish_reason": "length"},
            {"index": 3, "output": "</think>\n\\boxed{840}", "finish_reason": "stop"}]
    outputs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = crbench("score", "--task", "aime24", "--data", FIXTURES / "aime24_problems.jsonl",
                   "--outputs", outputs, "--json")
    summary = json.loads(done.stdout)
    assert (summary["correct"], summary["truncated"]) == (2, 1)


def assert_one_line_error(done: subprocess.CompletedProcess, *needles: str | Path) -> None:
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert str(needle) in lines[0]


def test_bad_data_file_is_one_line_naming_file_and_row(tmp_path):
    data = tmp_path / "folio.jsonl"
    good = (FIXTURES / "folio_v2.jsonl").read_text().splitlines()
    data.write_text("\n".join([good[0], good[1], '{"premises": "A.", "conclusion": ']) + "\n")
    outputs = tmp_path / "o.jsonl"
    outputs.write_text('{"index": 0, "output": "Answer: True"}\n')
    done = crbench("score", "--task", "folio", "--data", data, "--outputs", outputs)
    assert_one_line_error(done, data, "row 2", "bad JSON")
    data.write_text("\n".join([good[0], good[1].replace('"False"', '"Perhaps"')]) + "\n")
    done = crbench("score", "--task", "folio", "--data", data, "--outputs", outputs)
    assert_one_line_error(done, data, "row 1", "label")


def test_bad_outputs_are_one_line_errors(tmp_path):
    data = FIXTURES / "aime24_problems.jsonl"
    outputs = tmp_path / "o.jsonl"
    outputs.write_text('{"index": 0, "output": "x"}\n{"index": 0, "output": "y"}\n')
    assert_one_line_error(crbench("score", "--task", "aime24", "--data", data, "--outputs",
                                  outputs), outputs, "row 1", "second output")
    outputs.write_text('{"index": "zero", "output": "x"}\n')
    assert_one_line_error(crbench("score", "--task", "aime24", "--data", data, "--outputs",
                                  outputs), outputs, "row 0", "'index'")
    folder = tmp_path / "outs"
    folder.mkdir()
    (folder / "first.txt").write_text("x")
    assert_one_line_error(crbench("score", "--task", "aime24", "--data", data, "--outputs",
                                  folder), folder / "first.txt", "N.txt")
    assert_one_line_error(crbench("score", "--task", "nope", "--data", data, "--outputs",
                                  folder), "unknown task")
    assert_one_line_error(crbench("score", "--task", "aime24"), "--data")
    assert_one_line_error(crbench("score", "--run", tmp_path / "empty"), "no results store")
    assert not (tmp_path / "empty").exists()


def test_run_option_rescores_a_stored_run(tmp_path):
    from crbench.records import GenerationRecord, ScoreRecord
    from crbench.store import connect, insert_generation

    run_dir = tmp_path / "run"
    conn = connect(run_dir)
    options = {"path": str(FIXTURES / "aime24_problems.jsonl")}
    row = GenerationRecord(
        key="k0", variant="dense", base_model="dense", engine="hf", task="aime24",
        task_id="aime24", task_options=json.dumps(options), item_index=3,
        item_id="2024-II-1", repeat=0, seed=0, sampling="{}", prompt="p",
        output="</think>\n\\boxed{840}\\boxed{840}", reasoning=None, prompt_tokens=1,
        completion_tokens=9, thinking_tokens=1, answer_tokens=8,
        finish_reason="stop", truncated=False, wall_s=0.1,
    )
    stale = ScoreRecord("k0", extracted="840840", correct=False, no_answer=False,
                        truncated=False, rule="old")
    insert_generation(conn, row, stale)
    conn.close()
    done = crbench("score", "--run", run_dir, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["rescored"], result["changed"]) == (1, 1)


def test_outputs_are_read_in_their_prompt_style(tmp_path):
    """The paper's completion style (aime24's default) prefills <think>: an output that never
    closes it is unfinished and graded from explicit markers in its tail only; read as a chat
    answer, the same text is graded from its last weak marker."""
    outputs = tmp_path / "o.jsonl"
    rows = [
        # unfinished thinking, a weak "the answer is" mid-thought: no answer when prefilled
        {"index": 2, "output": "Hmm, so perhaps the answer is 25. Wait, let me check"},
        # finished: closes the thinking, answers after it
        {"index": 3, "output": "x + y ...\n</think>\n\\boxed{840}", "completion_tokens": 12},
        # a server that returned the thinking separately
        {"index": 0, "output": "\\boxed{1}", "reasoning_content": "Let me think.",
         "finish_reason": "stop"},
        # hit the limit inside the thinking, with an explicit answer line near the end
        {"index": 1, "output": "long thought\nFinal answer: 30", "finish_reason": "length"},
    ]
    outputs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = FIXTURES / "aime24_problems.jsonl"
    per_item = tmp_path / "p.jsonl"
    done = crbench("score", "--task", "aime24", "--data", data, "--outputs", outputs, "--json",
                   "--per-item", per_item)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["style"] == "completion"
    records = {r["index"]: r for r in map(json.loads, per_item.read_text().splitlines())}
    assert (records[2]["extracted"], records[2]["truncated"], records[2]["unfinished"]) \
        == (None, True, True)
    assert (records[3]["extracted"], records[3]["truncated"]) == ("840", False)
    assert (records[0]["rule"], records[0]["unfinished"]) == ("boxed-after-think", False)
    assert (records[1]["extracted"], records[1]["truncated"], records[1]["unfinished"]) \
        == ("30", True, True)
    assert (summary["unfinished"], summary["truncated"], summary["missing_output"]) == (2, 2, 1)
    chat = json.loads(crbench("score", "--task", "aime24", "--data", data, "--outputs", outputs,
                              "--json", "--style", "chat", "--per-item", per_item).stdout)
    records = {r["index"]: r for r in map(json.loads, per_item.read_text().splitlines())}
    assert (records[2]["extracted"], records[2]["truncated"]) == ("25", False)
    assert (chat["style"], chat["unfinished"], chat["truncated"]) == ("chat", 0, 1)


def test_bad_output_fields_and_style_are_one_line_errors(tmp_path):
    data = FIXTURES / "aime24_problems.jsonl"
    outputs = tmp_path / "o.jsonl"
    for row, needle in (({"finish_reason": 3}, "'finish_reason'"),
                        ({"completion_tokens": -1}, "'completion_tokens'"),
                        ({"completion_tokens": "9"}, "'completion_tokens'"),
                        ({"reasoning_content": ["x"]}, "'reasoning_content'")):
        outputs.write_text(json.dumps({"index": 0, "output": "x", **row}) + "\n")
        assert_one_line_error(crbench("score", "--task", "aime24", "--data", data, "--outputs",
                                      outputs), outputs, "row 0", needle)
    outputs.write_text('{"index": 0, "output": "x"}\n')
    assert_one_line_error(crbench("score", "--task", "aime24", "--data", data, "--outputs",
                                  outputs, "--style", "essay"), "--style", "unknown prompt style")
