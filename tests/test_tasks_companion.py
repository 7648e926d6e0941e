"""The companion study's tasks (MATH-500, GPQA-Diamond, AIME 2025, GSM8K): loading each official
format both ways (local file, hub rows), the seeded GPQA shuffle, bad rows, prompts, and the
study's spec (liu2025_quantization.toml). Scoring is in test_tasks_companion_scoring.py."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from companion_data import (
    CRBENCH,
    DATA,
    FIXTURES,
    NEW_TASKS,
    csv_rows,
    items_of,
    rows_of,
    write_jsonl,
)

from crbench.errors import InputError
from crbench.tasks import aime25, get_task, gpqa_diamond, gsm8k, math500

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
