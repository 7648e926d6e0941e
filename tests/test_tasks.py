"""The four seed tasks: loading each official file format, rejecting bad files, prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crbench.errors import InputError
from crbench.tasks import aime24, folio, get_task, musique, temporal_sequences
from crbench.tasks.base import Item

FIXTURES = Path(__file__).parent / "fixtures"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def rows_of(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


# --- loading --------------------------------------------------------------------------------


def test_aime_hub_layout_and_lowercase_copy_agree():
    hub = aime24.load(FIXTURES / "aime24_problems.jsonl")
    assert [i.reference for i in hub] == [1, 30, 25, 840, 421]
    assert hub[0].id == "2024-I-1" and hub[0].index == 0
    assert set(hub[0].fields) == {"problem"}
    lower = aime24.load(FIXTURES / "aime24_lowercase.json")
    assert [(i.id, i.reference) for i in lower] == [("2024-I-3", 25), ("2024-II-1", 840)]
    assert lower[0].fields == hub[2].fields


def test_aime_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "aime.parquet"
    pq.write_table(pa.Table.from_pylist(rows_of("aime24_problems.jsonl")), path)
    assert aime24.load(path) == aime24.load(FIXTURES / "aime24_problems.jsonl")


def test_folio_v2_string_premises_and_v0_list_premises():
    v2 = folio.load(FIXTURES / "folio_v2.jsonl")
    assert [i.reference for i in v2] == ["True", "False", "Uncertain", "False"]
    assert v2[0].fields["premises"] == [
        "All herons in the marsh are wading birds.",
        "Every wading bird in the marsh eats fish.",
        "Pip is a heron in the marsh.",
    ]
    assert v2[0].id == "5001"
    v0 = folio.load(FIXTURES / "folio_v0.jsonl")
    assert v0[1].fields["premises"][1] == "The red lantern is in the shed."
    assert (v0[1].id, v0[1].reference) == ("1", "Uncertain")


def test_folio_unknown_label_means_uncertain(tmp_path):
    row = {"premises": "A.\nB.", "conclusion": "C.", "label": "Unknown"}
    assert folio.load(write_jsonl(tmp_path / "f.jsonl", [row]))[0].reference == "Uncertain"


def test_temporal_options_parsed_from_input():
    items = temporal_sequences.load(FIXTURES / "temporal_sequences.json")
    assert [i.reference for i in items] == ["B", "D", "A"]
    assert items[0].fields["options"] == {
        "A": "6am to 9am",
        "B": "11am to 12pm",
        "C": "9am to 11am",
        "D": "12pm to 4pm",
    }
    assert items[0].fields["input"].endswith("(D) 12pm to 4pm")


def test_temporal_jsonl_rows_like_the_hub(tmp_path):
    examples = json.loads((FIXTURES / "temporal_sequences.json").read_text())["examples"]
    path = write_jsonl(tmp_path / "t.jsonl", examples)
    assert temporal_sequences.load(path) == temporal_sequences.load(
        FIXTURES / "temporal_sequences.json"
    )


def test_musique_keeps_answerable_rows_with_their_file_index():
    items = musique.load(FIXTURES / "musique_dev.jsonl")
    assert [i.index for i in items] == [0, 1, 3, 4]  # row 2 is unanswerable
    assert items[0].reference == ["Ada Quill", "A. Quill"]
    assert items[0].fields["mode"] == "closed"
    assert items[0].fields["paragraphs"][1] == {
        "title": "Quillworks",
        "paragraph_text": "Quillworks is an aircraft maker founded in 1924 by the engineer "
        "Ada Quill.",
        "is_supporting": True,
    }


def test_musique_json_list_and_open_mode(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(rows_of("musique_dev.jsonl")))
    items = musique.load(path, mode="open")
    assert [i.index for i in items] == [0, 1, 3, 4]
    assert {i.fields["mode"] for i in items} == {"open"}


def test_subset_is_a_deterministic_seeded_sample_in_file_order(tmp_path):
    rows = [{"id": f"p{i}", "problem": f"Problem {i}?", "answer": i} for i in range(60)]
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    first = aime24.load(path, limit=10, seed=1)
    assert first == aime24.load(path, limit=10, seed=1)
    assert len(first) == 10
    indexes = [i.index for i in first]
    assert indexes == sorted(indexes) and len(set(indexes)) == 10
    assert [i.index for i in aime24.load(path, limit=10, seed=2)] != indexes
    assert len(aime24.load(path, limit=100)) == 60
    assert all(i.reference == i.index for i in first)  # items keep their own row


def test_limit_and_seed_apply_to_every_task():
    for task, name in [
        (aime24, "aime24_problems.jsonl"),
        (folio, "folio_v2.jsonl"),
        (temporal_sequences, "temporal_sequences.json"),
        (musique, "musique_dev.jsonl"),
    ]:
        picked = task.load(FIXTURES / name, limit=2, seed=7)
        assert len(picked) == 2
        assert picked == task.load(FIXTURES / name, limit=2, seed=7)


def test_item_ids_come_from_the_first_id_field_a_row_has(tmp_path):
    from crbench.tasks.common import row_id

    assert row_id({"ID": 7, "id": "x"}, 3, "ID", "id") == "7"
    assert row_id({"id": "x"}, 3, "ID", "id") == "x"
    assert row_id({}, 3, "ID", "id") == "3"
    # A field that is there but null gives the index, without looking at the next name (as
    # `row.get("ID", row.get("id"))` did in each task before).
    assert row_id({"ID": None, "id": "x"}, 3, "ID", "id") == "3"
    rows = [{"ID": None, "id": "x", "Problem": "p", "Answer": 1},
            {"id": "y", "problem": "q", "answer": 2}]
    assert [item.id for item in aime24.load(write_jsonl(tmp_path / "a.jsonl", rows))] == ["0", "y"]


def test_registry_finds_the_modules():
    for name in ("aime24", "folio", "temporal_sequences", "musique"):
        assert name == get_task(name).NAME


@pytest.mark.parametrize("task", [aime24, folio, temporal_sequences, musique])
def test_hub_unreachable_is_an_input_error(task, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    with pytest.raises(InputError, match="Hugging Face hub"):
        task.load()


# --- bad files ------------------------------------------------------------------------------

BAD_AIME = [
    ([{"ID": "a", "Problem": "P?", "Answer": 3}, "not json"], r"row 1 \(line 2\): bad JSON"),
    ([{"ID": "a", "Problem": "P?"}], "row 0: missing field 'Answer' \\(or 'answer'\\)"),
    ([{"id": "a", "problem": 5, "answer": 3}], "row 0: field 'problem' should be str"),
    ([{"id": "a", "problem": "P?", "answer": "1000"}], "integer from 0 to 999"),
    ([{"id": "a", "problem": "P?", "answer": True}], "should be int or str, got bool"),
    ([{"id": "a", "problem": "P?", "answer": 1}, {"id": "a", "problem": "Q?", "answer": 2}],
     "row 1: duplicate id 'a'"),
    ([[1, 2]], "row 0: expected a JSON object"),
]


@pytest.mark.parametrize("rows,message", BAD_AIME)
def test_bad_aime_rows(tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    with pytest.raises(InputError, match=message) as caught:
        aime24.load(path)
    assert caught.value.path == str(path)


def test_empty_missing_and_non_utf8_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(InputError, match="empty file"):
        folio.load(empty)
    with pytest.raises(InputError, match="cannot read"):
        folio.load(tmp_path / "nowhere.jsonl")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"premises": "ok", "conclusion": "c", "label": "True"}\n{"x": "caf\xe9"}\n')
    with pytest.raises(InputError, match="line 2: not UTF-8"):
        folio.load(latin)


def test_bad_parquet(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match="cannot read parquet"):
        aime24.load(path)


@pytest.mark.parametrize(
    "row,message",
    [
        ({"premises": "A.", "conclusion": "C.", "label": "Maybe"}, "'label' should be one of"),
        ({"premises": 3, "conclusion": "C.", "label": "True"}, "field 'premises' should be"),
        ({"premises": ["A.", 4], "conclusion": "C.", "label": "True"}, "'premises'.*of strings"),
        ({"premises": "A.", "label": "True"}, "missing field 'conclusion'"),
    ],
)
def test_bad_folio_rows(tmp_path, row, message):
    good = {"premises": "A.", "conclusion": "C.", "label": "True"}
    with pytest.raises(InputError, match=f"row 1: .*{message}"):
        folio.load(write_jsonl(tmp_path / "f.jsonl", [good, row]))


def temporal_file(tmp_path: Path, example: dict) -> Path:
    examples = json.loads((FIXTURES / "temporal_sequences.json").read_text())["examples"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"canary": "x", "examples": [examples[0], example]}))
    return path


def test_bad_temporal_items(tmp_path):
    options = "\n(A) 1am to 2am\n(B) 2am to 3am\n(C) 3am to 4am"
    three = {"input": "Q?\nOptions:" + options, "target": "(A)"}
    with pytest.raises(InputError, match="row 1: input should list options .* found A, B, C"):
        temporal_sequences.load(temporal_file(tmp_path, three))
    options += "\n(D) 4am to 5am"
    not_an_option = {"input": "Q?\nOptions:" + options, "target": "(E)"}
    with pytest.raises(InputError, match="row 1: target '\\(E\\)' is not one of the options"):
        temporal_sequences.load(temporal_file(tmp_path, not_an_option))
    no_examples = tmp_path / "none.json"
    no_examples.write_text(json.dumps({"canary": "x"}))
    with pytest.raises(InputError, match="under 'examples'"):
        temporal_sequences.load(no_examples)


def test_bad_musique_rows_and_options(tmp_path):
    rows = rows_of("musique_dev.jsonl")
    rows[3]["answer_aliases"] = "Norsk"
    with pytest.raises(InputError, match="row 3: field 'answer_aliases'"):
        musique.load(write_jsonl(tmp_path / "m.jsonl", rows))
    rows = rows_of("musique_dev.jsonl")
    rows[1]["paragraphs"] = []
    assert len(musique.load(write_jsonl(tmp_path / "m.jsonl", rows))) == 4  # fine closed-book
    with pytest.raises(InputError, match="row 1: open mode needs 'paragraphs'"):
        musique.load(tmp_path / "m.jsonl", mode="open")
    with pytest.raises(InputError, match="mode must be one of closed, open"):
        musique.load(FIXTURES / "musique_dev.jsonl", mode="book")
    rows = rows_of("musique_dev.jsonl")
    rows[4]["id"] = rows[0]["id"]
    with pytest.raises(InputError, match="row 4: duplicate id"):
        musique.load(write_jsonl(tmp_path / "m.jsonl", rows))
    with pytest.raises(InputError, match="options"):
        folio.load(FIXTURES / "folio_v2.jsonl", mode="open")


# --- prompts --------------------------------------------------------------------------------


def all_items() -> list[tuple[object, Item]]:
    return [
        (aime24, aime24.load(FIXTURES / "aime24_problems.jsonl")[0]),
        (folio, folio.load(FIXTURES / "folio_v2.jsonl")[0]),
        (temporal_sequences, temporal_sequences.load(FIXTURES / "temporal_sequences.json")[0]),
        (musique, musique.load(FIXTURES / "musique_dev.jsonl")[0]),
        (musique, musique.load(FIXTURES / "musique_dev.jsonl", mode="open")[0]),
    ]


def test_completion_prompt_opens_thinking_and_chat_prompt_does_not():
    for task, item in all_items():
        text = task.prompt(item)
        assert text.endswith("\n<think>\n") and text.count("<think>") == 1
        chat = task.prompt(item, "chat")
        assert chat == [{"role": "user", "content": text[: -len("\n<think>\n")]}]
        with pytest.raises(InputError, match="prompt style"):
            task.prompt(item, "fancy")


def test_prompts_carry_the_item_and_ask_for_an_answer_format():
    (_, aime), (_, logic), (_, temporal), (_, closed), (_, open_) = all_items()
    assert aime.fields["problem"] in aime24.prompt(aime) and "\\boxed{N}" in aime24.prompt(aime)
    text = folio.prompt(logic)
    assert all(p in text for p in logic.fields["premises"])
    assert logic.fields["conclusion"] in text and '"Answer: Uncertain"' in text
    assert temporal.fields["input"] in temporal_sequences.prompt(temporal)
    assert "Answer: (X)" in temporal_sequences.prompt(temporal)
    assert "Title:" not in musique.prompt(closed) and closed.fields["question"] in musique.prompt(
        closed
    )
    text = musique.prompt(open_)
    assert text.index("Title: Lark (glider)") < text.index(open_.fields["question"])
    assert "as few words as possible" in text


# --- a real model on the real prompts -------------------------------------------------------


@pytest.mark.slow
def test_demo_model_outputs_on_both_prompt_styles_score_cleanly(demo_model):
    """SmolLM2 answers each task's prompt; its raw text goes straight into score()."""
    import torch

    from crbench.models import load_causal_lm

    model, tokenizer = load_causal_lm(demo_model)
    for task, item in all_items()[:4]:
        for style in ("completion", "chat"):
            prompt = task.prompt(item, style)
            if style == "chat":
                prompt = tokenizer.apply_chat_template(prompt, tokenize=False,
                                                       add_generation_prompt=True)
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=16, do_sample=False)
            text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            hit_limit = out.shape[1] - ids.shape[1] == 16 and out[0, -1] != tokenizer.eos_token_id
            got = task.score(item, text, hit_limit=bool(hit_limit))
            assert got.no_answer == (got.extracted is None)
            if hit_limit:
                assert got.truncated
                # a cut-off reply is read only for explicit markers near its end
                assert got.rule == "none" or "truncated-tail" in got.rule
