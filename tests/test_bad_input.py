"""Bad input, table-driven, through the real CLI: every kind of file crbench reads (spec, each
dataset format, synthetic files, stored outputs to score, a results store, compression recipe
and calibration text, perplexity text, model folder), broken the ways files break: missing
fields, wrong types, empty, latin-1 or UTF-16 bytes, one huge line, duplicate ids, no weights,
pickle weights, weights of another model.

Every case must end in one short error line on stderr naming the file (and the place in it,
where a file has places), exit code 2, no traceback, and nothing stored changed: `run` cases
start from a store that already holds results and compare its tables, read independently with
sqlite3, before and after; broken-store cases compare the file's bytes; `compress` cases must
not create their output folder.

The CLI runs as a real subprocess. The cases run in a small thread pool (most of their time is
spent importing torch); each table row is still its own test.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from crbench import store
from crbench.records import FailureRecord, GenerationRecord, ScoreRecord, VariantRecord

FIXTURES = Path(__file__).parent / "fixtures"
CRBENCH = [sys.executable, "-m", "crbench.cli"]
HUGE = 50 * 1024 * 1024  # one line of 50 MB
MAX_LINE = 1000  # an error line a person can read: a 50 MB value must not be echoed back
RESULT_TABLES = ("generations", "scores", "variants", "failures")
# transformers' weight-loading progress bar may come before an error found after loading.
PROGRESS_BAR = re.compile(r"^Loading weights: ")

# --- good material the cases break -----------------------------------------------------------

AIME_ROW = {"ID": "2024-I-1", "Problem": "Find 2 + 3.", "Answer": 5}
FOLIO_ROW = json.loads((FIXTURES / "folio_v2.jsonl").read_text().splitlines()[0])
TEMPORAL = json.loads((FIXTURES / "temporal_sequences.json").read_text())
MUSIQUE_ROW = json.loads((FIXTURES / "musique_dev.jsonl").read_text().splitlines()[0])
MATH_ROW = json.loads((FIXTURES / "math500_test.jsonl").read_text().splitlines()[0])
GSM8K_ROW = json.loads((FIXTURES / "gsm8k_test.jsonl").read_text().splitlines()[0])
AIME25_ROW = {"question": "Find 2 + 3.", "answer": "5"}  # opencompass/AIME2025's fields
GPQA_CSV = (FIXTURES / "gpqa_diamond.csv").read_bytes()
SPEC = ('[models.m]\nsource = "demo"\nbatch_size = 1\n\n[[tasks]]\ntask = "folio"\n'
        f'path = "{FIXTURES / "folio_v2.jsonl"}"\n\n[sampling]\nmax_new_tokens = 4\n')


def jsonl(*rows: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def changed(row: dict, **fields: object) -> dict:
    """A copy of row with fields replaced; a field set to `...` is removed."""
    out = {**row, **fields}
    return {k: v for k, v in out.items() if v is not ...}


def temporal(*examples: object) -> bytes:
    return json.dumps({"canary": TEMPORAL["canary"], "examples": list(examples)}).encode()


def latin1_second_row(row: dict) -> bytes:
    """Two rows, the second with a latin-1 byte (a file saved in the wrong encoding)."""
    second = json.dumps(changed(row, note="X")).replace('"X"', '"caf\xe9"')
    return jsonl(row) + second.encode("latin-1") + b"\n"


def utf16(data: bytes) -> bytes:
    return data.decode().encode("utf-16")


def huge_value(row: dict, field: str) -> bytes:
    """One line of about 50 MB: `field` holds a huge string (a type the field must not have)."""
    return jsonl(changed(row, **{field: "9" * HUGE}))


def folder(files: dict[str, bytes | None]) -> Callable[[Path], None]:
    """Build a folder: name -> bytes (a file) or None (a sub-folder)."""

    def build(path: Path) -> None:
        path.mkdir()
        for name, data in files.items():
            if data is None:
                (path / name).mkdir()
            else:
                (path / name).write_bytes(data)

    return build


def model_folder(config: bytes | None = b"demo",
                 weights: dict[str, Callable[[], bytes]] | None = None,
                 tokenizer: bool = True,
                 quantization: dict | None = None) -> Callable[[Path], None]:
    """A model folder built from the demo model's files: config (b"demo" = the real one, with
    `quantization` as its quantization_config if given), weight files (default: the real
    safetensors, hard-linked; else name -> maker of bytes), and the tokenizer files."""

    def build(path: Path) -> None:
        from crbench.models import demo_model_path

        demo = demo_model_path()
        path.mkdir()
        if config is not None:
            data = (demo / "config.json").read_bytes() if config == b"demo" else config
            if quantization is not None:
                data = json.dumps({**json.loads(data), "quantization_config": quantization}
                                  ).encode()
            (path / "config.json").write_bytes(data)
        if tokenizer:
            for name in ("tokenizer.json", "tokenizer_config.json"):
                if (demo / name).exists():
                    shutil.copy(demo / name, path / name)
        if weights is None:
            link_or_copy(demo / "model.safetensors", path / "model.safetensors")
        for name, make in (weights or {}).items():
            (path / name).write_bytes(make())

    return build


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)


def harmless_pickle() -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"model.embed_tokens.weight": torch.zeros(2, 2)}, buffer)
    return buffer.getvalue()


def foreign_safetensors() -> bytes:
    """A valid safetensors file, but of tensors this model does not have."""
    import torch
    from safetensors.torch import save

    return save({"encoder.block.0.weight": torch.zeros(4, 4)})


def store_file(run_dir: Path, data: bytes) -> None:
    run_dir.mkdir()
    (run_dir / store.STORE_FILE).write_bytes(data)


def foreign_sqlite() -> bytes:
    """Another program's SQLite database that happens to be called results.sqlite."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "other.sqlite")
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.executemany("INSERT INTO invoices (total) VALUES (?)", [(9.5,), (12.0,)])
        conn.commit()
        conn.close()
        return (Path(tmp) / "other.sqlite").read_bytes()


def generation_row(key: str, index: int, output: str = "so </think> Answer: True"
                   ) -> GenerationRecord:
    return GenerationRecord(
        key=key, variant="m", base_model="m", engine="hf", task="folio", task_id="folio",
        item_index=index, item_id=str(index), repeat=0,
        task_options=json.dumps({"path": str(FIXTURES / "folio_v2.jsonl")}), seed=0,
        sampling="{}", prompt="p <think>\n", output=output, reasoning=None, prompt_tokens=3,
        completion_tokens=5, thinking_tokens=2, answer_tokens=3, finish_reason="stop",
        truncated=False, wall_s=0.1,
    )


def truncated_store() -> bytes:
    """A real store of 40 results, cut off in the middle (a copy that did not finish)."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = store.connect(tmp)
        for i in range(40):
            store.insert_generation(conn, generation_row(f"k{i}", i, output="x" * 2000), None)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        data = (Path(tmp) / store.STORE_FILE).read_bytes()
    return data[: len(data) // 2]


# --- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # spec | data:<task>[:mode] | outputs | store:<command> | recipe | calib | ppl
    #            | model
    name: str  # the bad file (or folder) the case writes
    content: bytes | Callable[[], bytes] | Callable[[Path], None]  # bytes, maker, folder builder
    place: str | None  # must appear in the error line, besides the file; None: the whole file
    named: str | None = None  # the file the message names, if not `name` (inside a folder)


SPEC_CASES = [
    Case("spec-empty", "spec", "spec.toml", b"", "[models]"),
    Case("spec-utf16", "spec", "spec.toml", utf16(SPEC.encode()), "line 1"),
    Case("spec-latin1", "spec", "spec.toml", SPEC.encode() + b"# caf\xe9\n", "line 11"),
    Case("spec-binary", "spec", "spec.toml", bytes(range(256)) * 4, "line 2"),
    Case("spec-bad-toml", "spec", "spec.toml", b"[models.m\nsource = 1\n", "line 1"),
    Case("spec-duplicate-key", "spec", "spec.toml", SPEC.encode() + b"max_new_tokens = 5\n",
         "line 11"),
    Case("spec-missing-source", "spec", "spec.toml",
         SPEC.replace('source = "demo"\n', "").encode(), "[models.m].source"),
    Case("spec-wrong-type", "spec", "spec.toml", SPEC.replace("= 4", '= "four"').encode(),
         "[sampling].max_new_tokens"),
    Case("spec-models-not-table", "spec", "spec.toml",
         b'models = 3\n[[tasks]]\ntask = "folio"\n', "[models]"),
    Case("spec-tasks-not-list", "spec", "spec.toml",
         b'tasks = "folio"\n[models.m]\nsource = "demo"\n', "[[tasks]]"),
    Case("spec-duplicate-label", "spec", "spec.toml",
         (SPEC + '[[tasks]]\ntask = "folio"\n').encode(), "[[tasks]] #2.label"),
    Case("spec-unknown-engine", "spec", "spec.toml",
         SPEC.replace("batch_size = 1", 'engine = "tgi"').encode(), "[models.m].engine"),
    Case("spec-unknown-task", "spec", "spec.toml",
         SPEC.replace('task = "folio"', 'task = "hellaswag"').encode(), "[[tasks]] #1.task"),
    Case("spec-negative-limit", "spec", "spec.toml",
         SPEC.replace('task = "folio"', 'task = "folio"\nlimit = -1').encode(),
         "[[tasks]] #1.limit"),
    Case("spec-unknown-variant-model", "spec", "spec.toml",
         (SPEC + '[variants.v]\nmodel = "nope"\nmethod = "rtn"\n').encode(),
         "[variants.v].model"),
    Case("spec-huge-line", "spec", "spec.toml",
         lambda: SPEC.replace("= 4", '= "' + "9" * HUGE + '"').encode(),
         "[sampling].max_new_tokens"),
    Case("spec-yaml-not-mapping", "spec", "spec.yaml", b"- models\n- tasks\n", None),
    Case("spec-yaml-python-tag", "spec", "spec.yaml",
         b"models: !!python/object/apply:os.getcwd []\ntasks: [{task: folio}]\n", "line 1"),
    Case("spec-yaml-bad-indent", "spec", "spec.yaml",
         b"models:\n  m: {source: demo}\n tasks: [x]\n", "line 3"),
]

AIME_CASES = [
    Case("aime-jsonl-empty", "data:aime24", "aime.jsonl", b"\n \n", None),
    Case("aime-jsonl-utf16", "data:aime24", "aime.jsonl", utf16(jsonl(AIME_ROW)), "line 1"),
    Case("aime-jsonl-latin1", "data:aime24", "aime.jsonl", latin1_second_row(AIME_ROW),
         "line 2"),
    Case("aime-jsonl-bad-json", "data:aime24", "aime.jsonl",
         jsonl(AIME_ROW) + b'{"ID": "x",\n', "row 1"),
    Case("aime-jsonl-missing-answer", "data:aime24", "aime.jsonl",
         jsonl(AIME_ROW, changed(AIME_ROW, ID="b", Answer=...)), "row 1"),
    Case("aime-jsonl-problem-not-text", "data:aime24", "aime.jsonl",
         jsonl(changed(AIME_ROW, Problem=7)), "row 0"),
    Case("aime-jsonl-answer-out-of-range", "data:aime24", "aime.jsonl",
         jsonl(changed(AIME_ROW, Answer=1000)), "row 0"),
    Case("aime-jsonl-answer-superscript", "data:aime24", "aime.jsonl",
         jsonl(changed(AIME_ROW, Answer="\u00b2")), "row 0"),
    Case("aime-jsonl-duplicate-id", "data:aime24", "aime.jsonl", jsonl(AIME_ROW, AIME_ROW),
         "row 1"),
    Case("aime-jsonl-row-not-object", "data:aime24", "aime.jsonl", jsonl(AIME_ROW, [1, 2]),
         "row 1"),
    Case("aime-jsonl-huge-line", "data:aime24", "aime.jsonl",
         lambda: huge_value(AIME_ROW, "Answer"), "row 0"),
    Case("aime-jsonl-huge-number", "data:aime24", "aime.jsonl",
         jsonl(AIME_ROW) + b'{"ID": "b", "Problem": "P", "Answer": ' + b"7" * 5000 + b"}\n",
         "row 1"),
    Case("aime-json-truncated", "data:aime24", "aime.json", b'[{"id": "a", "problem": "P",\n',
         "line 2"),
    Case("aime-json-list-of-strings", "data:aime24", "aime.json", b'["2024-I-1", "2024-I-2"]',
         "row 0"),
    Case("aime-json-answer-not-number", "data:aime24", "aime.json",
         json.dumps([{"id": "a", "problem": "P?", "answer": "twelve"}]).encode(), "row 0"),
    Case("aime-json-empty-list", "data:aime24", "aime.json", b"[]", None),
]

FOLIO_CASES = [
    Case("folio-empty", "data:folio", "folio.jsonl", b"", None),
    Case("folio-utf16", "data:folio", "folio.jsonl", utf16(jsonl(FOLIO_ROW)), "line 1"),
    Case("folio-latin1", "data:folio", "folio.jsonl", latin1_second_row(FOLIO_ROW), "line 2"),
    Case("folio-missing-conclusion", "data:folio", "folio.jsonl",
         jsonl(FOLIO_ROW, changed(FOLIO_ROW, conclusion=...)), "row 1"),
    Case("folio-label-unknown", "data:folio", "folio.jsonl",
         jsonl(changed(FOLIO_ROW, label="Maybe")), "row 0"),
    Case("folio-premises-number", "data:folio", "folio.jsonl",
         jsonl(changed(FOLIO_ROW, premises=3)), "row 0"),
    Case("folio-premises-list-of-numbers", "data:folio", "folio.jsonl",
         jsonl(changed(FOLIO_ROW, premises=[1, 2])), "row 0"),
    Case("folio-duplicate-id", "data:folio", "folio.jsonl", jsonl(FOLIO_ROW, FOLIO_ROW),
         "row 1"),
    Case("folio-huge-line", "data:folio", "folio.jsonl", lambda: huge_value(FOLIO_ROW, "label"),
         "row 0"),
]

TEMPORAL_CASES = [
    Case("temporal-empty", "data:temporal_sequences", "t.json", b"  \n", None),
    Case("temporal-utf16", "data:temporal_sequences", "t.json",
         utf16(temporal(TEMPORAL["examples"][0])), "line 1"),
    Case("temporal-not-json", "data:temporal_sequences", "t.json", b'{"examples": [\n{}\n',
         "line 3"),
    Case("temporal-no-examples", "data:temporal_sequences", "t.json", b'{"canary": "x"}', None),
    Case("temporal-examples-not-list", "data:temporal_sequences", "t.json",
         b'{"examples": "none"}', None),
    Case("temporal-missing-target", "data:temporal_sequences", "t.json",
         temporal(TEMPORAL["examples"][0], changed(TEMPORAL["examples"][1], target=...)),
         "row 1"),
    Case("temporal-target-number", "data:temporal_sequences", "t.json",
         temporal(changed(TEMPORAL["examples"][0], target=2)), "row 0"),
    Case("temporal-no-options", "data:temporal_sequences", "t.json",
         temporal(changed(TEMPORAL["examples"][0], input="When did Mara go?")), "row 0"),
    Case("temporal-example-not-object", "data:temporal_sequences", "t.json",
         temporal(TEMPORAL["examples"][0], "(A)"), "row 1"),
    Case("temporal-huge-line", "data:temporal_sequences", "t.json",
         lambda: temporal(changed(TEMPORAL["examples"][0], target="(" + "E" * HUGE + ")")),
         "row 0"),
]

MUSIQUE_CASES = [
    Case("musique-jsonl-empty", "data:musique", "m.jsonl", b"", None),
    Case("musique-jsonl-latin1", "data:musique", "m.jsonl", latin1_second_row(MUSIQUE_ROW),
         "line 2"),
    Case("musique-jsonl-missing-question", "data:musique", "m.jsonl",
         jsonl(changed(MUSIQUE_ROW, question=...)), "row 0"),
    Case("musique-jsonl-answer-number", "data:musique", "m.jsonl",
         jsonl(changed(MUSIQUE_ROW, answer=1905)), "row 0"),
    Case("musique-jsonl-aliases-string", "data:musique", "m.jsonl",
         jsonl(changed(MUSIQUE_ROW, answer_aliases="Ada")), "row 0"),
    Case("musique-jsonl-duplicate-id", "data:musique", "m.jsonl",
         jsonl(MUSIQUE_ROW, MUSIQUE_ROW), "row 1"),
    Case("musique-jsonl-paragraph-not-object", "data:musique", "m.jsonl",
         jsonl(changed(MUSIQUE_ROW, paragraphs=["text"])), "row 0"),
    Case("musique-open-without-paragraphs", "data:musique:open", "m.jsonl",
         jsonl(changed(MUSIQUE_ROW, paragraphs=[])), "row 0"),
    Case("musique-json-list-truncated", "data:musique", "m.json",
         b"[" + json.dumps(MUSIQUE_ROW).encode() + b",\n", "line 2"),
    Case("musique-json-list-not-objects", "data:musique", "m.json", b"[1, 2, 3]", "row 0"),
    Case("musique-json-huge-line", "data:musique", "m.json",
         lambda: b"[" + huge_value(MUSIQUE_ROW, "answer_aliases").rstrip() + b"]", "row 0"),
]



def gpqa_csv(edit: Callable[[list[dict[str, str]]], object]) -> bytes:
    """The GPQA fixture CSV with its rows changed by `edit` (in place)."""
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(GPQA_CSV.decode(), newline="")))
    edit(rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["Question"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


COMPANION_CASES = [  # the companion study's tasks: math500, gpqa_diamond, gsm8k, aime25
    Case("math500-utf16", "data:math500", "m.jsonl", utf16(jsonl(MATH_ROW)), "line 1"),
    Case("math500-missing-answer", "data:math500", "m.jsonl",
         jsonl(MATH_ROW, changed(MATH_ROW, unique_id="b", answer=...)), "row 1"),
    Case("math500-problem-number", "data:math500", "m.jsonl",
         jsonl(changed(MATH_ROW, problem=12)), "row 0"),
    Case("math500-level-out-of-range", "data:math500", "m.jsonl",
         jsonl(changed(MATH_ROW, level=9)), "row 0"),
    Case("math500-duplicate-unique-id", "data:math500", "m.jsonl", jsonl(MATH_ROW, MATH_ROW),
         "row 1"),
    Case("math500-huge-level", "data:math500", "m.jsonl",
         lambda: huge_value(MATH_ROW, "level"), "row 0"),
    Case("gpqa-csv-empty", "data:gpqa_diamond", "g.csv", b"", None),
    Case("gpqa-csv-header-only", "data:gpqa_diamond", "g.csv", GPQA_CSV.split(b"\r\n")[0],
         None),
    Case("gpqa-csv-latin1", "data:gpqa_diamond", "g.csv", GPQA_CSV + b"caf\xe9,x\r\n",
         "line 20"),
    Case("gpqa-csv-short-row", "data:gpqa_diamond", "g.csv", GPQA_CSV + b"one,two\r\n",
         "row 6"),
    Case("gpqa-csv-no-incorrect-3", "data:gpqa_diamond", "g.csv",
         gpqa_csv(lambda rows: [r.pop("Incorrect Answer 3") for r in rows]), "row 0"),
    Case("gpqa-csv-blank-correct-answer", "data:gpqa_diamond", "g.csv",
         gpqa_csv(lambda rows: rows[2].update({"Correct Answer": " \n"})), "row 2"),
    Case("gpqa-csv-duplicate-record-id", "data:gpqa_diamond", "g.csv",
         gpqa_csv(lambda rows: rows[1].update({"Record ID": rows[0]["Record ID"]})), "row 1"),
    Case("gpqa-csv-huge-field", "data:gpqa_diamond", "g.csv",
         lambda: GPQA_CSV + b'"' + b"9" * HUGE + b'",x\r\n', "line 20"),
    Case("gpqa-jsonl-three-choices", "data:gpqa_diamond", "g.jsonl",
         jsonl({"question": "Q?", "choices": ["a", "b", "c"], "answer": "A"}), "row 0"),
    Case("gpqa-jsonl-answer-not-a-letter", "data:gpqa_diamond", "g.jsonl",
         jsonl({"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "E"}), "row 0"),
    Case("gsm8k-no-final-line", "data:gsm8k", "g.jsonl",
         jsonl(changed(GSM8K_ROW, answer="She makes 18 dollars.")), "row 0"),
    Case("gsm8k-final-not-a-number", "data:gsm8k", "g.jsonl",
         jsonl(GSM8K_ROW, changed(GSM8K_ROW, answer="#### eighteen")), "row 1"),
    Case("gsm8k-huge-number", "data:gsm8k", "g.jsonl",
         jsonl(changed(GSM8K_ROW, answer="#### " + "7" * 5000)), "row 0"),
    Case("gsm8k-latin1", "data:gsm8k", "g.jsonl", latin1_second_row(GSM8K_ROW), "line 2"),
    Case("aime25-no-question", "data:aime25", "a.jsonl", jsonl(changed(AIME25_ROW, question=...)),
         "row 0"),
    Case("aime25-answer-fraction", "data:aime25", "a.jsonl",
         jsonl(AIME25_ROW, changed(AIME25_ROW, answer="3/4")), "row 1"),
    Case("aime25-duplicate-id", "data:aime25", "a.jsonl",
         jsonl(changed(AIME25_ROW, id="x"), changed(AIME25_ROW, id="x")), "row 1"),
]

SYNTH_CASES = [  # a synthetic family given a file reads it with the real task's loader
    Case("synth-arith-missing-answer", "data:synth_arith", "arith.jsonl",
         jsonl(changed(AIME_ROW, Answer=...)), "row 0"),
    Case("synth-logic-bad-label", "data:synth_logic", "logic.jsonl",
         jsonl(changed(FOLIO_ROW, label="Perhaps")), "row 0"),
    Case("synth-temporal-no-target", "data:synth_temporal", "temporal.json",
         temporal(changed(TEMPORAL["examples"][0], target=...)), "row 0"),
    Case("synth-multihop-utf16", "data:synth_multihop", "multihop.jsonl",
         utf16(jsonl(MUSIQUE_ROW)), "line 1"),
]

OUTPUT_CASES = [  # `crbench score --outputs` against the aime24 fixture
    Case("outputs-empty", "outputs", "o.jsonl", b"", None),
    Case("outputs-utf16", "outputs", "o.jsonl", utf16(jsonl({"index": 0, "output": "x"})),
         "line 1"),
    Case("outputs-latin1", "outputs", "o.jsonl",
         jsonl({"index": 0, "output": "x"}) + b'{"index": 1, "output": "caf\xe9"}\n', "line 2"),
    Case("outputs-bad-json", "outputs", "o.jsonl", b'{"index": 0, "output": \n', "row 0"),
    Case("outputs-not-object", "outputs", "o.jsonl", jsonl(["0", "x"]), "row 0"),
    Case("outputs-missing-output", "outputs", "o.jsonl", jsonl({"index": 0}), "row 0"),
    Case("outputs-index-text", "outputs", "o.jsonl", jsonl({"index": "zero", "output": "x"}),
         "row 0"),
    Case("outputs-index-negative", "outputs", "o.jsonl", jsonl({"index": -1, "output": "x"}),
         "row 0"),
    Case("outputs-output-number", "outputs", "o.jsonl", jsonl({"index": 0, "output": 5}),
         "row 0"),
    Case("outputs-duplicate-index", "outputs", "o.jsonl",
         jsonl({"index": 0, "output": "x"}, {"index": 0, "output": "y"}), "row 1"),
    Case("outputs-huge-line", "outputs", "o.jsonl",
         lambda: huge_value({"index": 0, "output": "x"}, "index"), "row 0"),
    Case("outputs-huge-number", "outputs", "o.jsonl",
         b'{"index": ' + b"1" * 5000 + b', "output": "x"}\n', "row 0"),
    Case("outputs-folder-empty", "outputs", "outs", folder({"notes.md": b"x"}), None),
    Case("outputs-folder-bad-name", "outputs", "outs", folder({"0.txt": b"x", "one.txt": b"y"}),
         None, named="outs/one.txt"),
    Case("outputs-folder-entry-is-folder", "outputs", "outs", folder({"0.txt": None}), None,
         named="outs/0.txt"),
]

STORE_CASES = [  # a run directory whose store is not one: `score --run`, `export`, `report`
    Case(f"store-{what}-{command}", f"store:{command}", "run", build, None,
         named="run/results.sqlite")
    for what, build in (("garbage", lambda path: store_file(path, b"not sqlite\n" * 500)),
                        ("foreign-sqlite", lambda path: store_file(path, foreign_sqlite())),
                        ("truncated", lambda path: store_file(path, truncated_store())))
    for command in ("score", "export", "report")
]

RECIPE_CASES = [  # `crbench compress --recipe`
    Case("recipe-empty", "recipe", "r.toml", b"", "method"),
    Case("recipe-utf16", "recipe", "r.toml", utf16(b'method = "rtn"\n'), "line 1"),
    Case("recipe-bad-toml", "recipe", "r.toml", b'method = "rtn\n', "line 1"),
    Case("recipe-unknown-method", "recipe", "r.toml", b'method = "awq"\n', "method"),
    Case("recipe-unknown-field", "recipe", "r.toml", b'method = "rtn"\nbitz = 4\n', "bitz"),
    Case("recipe-bits-text", "recipe", "r.toml", b'method = "rtn"\nbits = "four"\n', "bits"),
    Case("recipe-bad-pattern", "recipe", "r.toml", b'method = "magnitude"\npattern = "4:2"\n',
         "pattern"),
    Case("recipe-override-without-match", "recipe", "r.toml",
         b'method = "rtn"\noverrides = [{bits = 8}]\n', "overrides.0.match"),
    Case("recipe-huge-line", "recipe", "r.toml", lambda: b'method = "' + b"x" * HUGE + b'"\n',
         "method"),
]

CALIB_CASES = [  # `crbench compress --method wanda --calib FILE`
    Case("calib-empty", "calib", "c.txt", b"\n\n", None),
    Case("calib-latin1", "calib", "c.txt", b"Une ligne.\nUn caf\xe9.\n", "byte 17"),
    Case("calib-folder", "calib", "c.txt", folder({}), None),
    Case("calib-jsonl-bad-json", "calib", "c.jsonl", jsonl({"text": "a"}) + b"{text: b}\n",
         "line 2"),
    Case("calib-jsonl-no-text", "calib", "c.jsonl", jsonl({"text": "a"}, {"title": "b"}),
         "line 2"),
    Case("calib-json-not-list", "calib", "c.json", b'{"text": "a"}', None),
    Case("calib-json-row-not-object", "calib", "c.json", b'[{"text": "a"}, "b"]', "row 1"),
    Case("calib-jsonl-huge-line", "calib", "c.jsonl",
         lambda: jsonl({"body": "w " * (HUGE // 2)}), "line 1"),
    Case("calib-too-short", "calib", "c.txt", b"Three short words.\n", None),
]

PPL_CASES = [  # `crbench ppl --model demo --data FILE`, read as calibration text is (latin-1
    #            text and a folder are in CALIB_CASES)
    Case("ppl-empty", "ppl", "p.txt", b"", None),
    Case("ppl-utf16", "ppl", "p.txt", utf16(b"some text\n"), "byte 0"),
    Case("ppl-too-short", "ppl", "p.txt", b"Too short for one window.\n", None),
]

MODEL_CASES = [  # `crbench ppl --model FOLDER`
    Case("model-not-a-folder", "model", "model.txt", b"a file", None),
    Case("model-no-config", "model", "m", model_folder(config=None), None),
    Case("model-config-not-json", "model", "m", model_folder(config=b"{model_type: llama"), None,
         named="m/config.json"),
    Case("model-config-utf16", "model", "m", model_folder(config=utf16(b'{"model_type": "x"}')),
         None, named="m/config.json"),
    Case("model-config-a-list", "model", "m", model_folder(config=b"[1, 2]"), None,
         named="m/config.json"),
    Case("model-config-no-type", "model", "m", model_folder(config=b"{}"), None),
    Case("model-without-weights", "model", "m", model_folder(weights={}), None),
    Case("model-only-pickle-bin", "model", "m",
         model_folder(weights={"pytorch_model.bin": harmless_pickle}), None),
    Case("model-garbage-safetensors", "model", "m", model_folder(
        weights={"model.safetensors": lambda: b"\x08" + b"\x00" * 7 + b"{}junk"}), None),
    Case("model-foreign-safetensors", "model", "m",
         model_folder(weights={"model.safetensors": foreign_safetensors}), None),
    Case("model-no-tokenizer", "model", "m", model_folder(tokenizer=False), None),
    # A published GPTQ checkpoint whose loader (optimum / gptqmodel) is not installed here.
    Case("model-quantized-loader-missing", "model", "m", model_folder(
        quantization={"quant_method": "gptq", "bits": 4, "group_size": 64}), None),
]

CASES = (SPEC_CASES + AIME_CASES + FOLIO_CASES + TEMPORAL_CASES + MUSIQUE_CASES + SYNTH_CASES
         + COMPANION_CASES
         + OUTPUT_CASES + STORE_CASES + RECIPE_CASES + CALIB_CASES + PPL_CASES + MODEL_CASES)


# --- running the table -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory) -> Path:
    """A run directory whose store already holds results: what a bad input must not touch."""
    run_dir = tmp_path_factory.mktemp("stored") / "run"
    conn = store.connect(run_dir)
    for i in range(3):
        store.insert_generation(conn, generation_row(f"k{i}", i), ScoreRecord(
            f"k{i}", extracted="True", correct=i != 1, no_answer=False, truncated=False,
            rule="answer-line"))
    store.put_variant(conn, VariantRecord("m", "m", "dense"))
    store.record_failure(conn, FailureRecord("k9", "m", "folio", item_index=9, repeat=0,
                                             error="TimeoutError: server did not answer",
                                             attempts=3))
    conn.close()
    return run_dir


def table_digests(run_dir: Path, tables: tuple[str, ...] = RESULT_TABLES) -> dict[str, str]:
    """sha256 of each table's rows, read with a separate read-only sqlite3 connection."""
    conn = sqlite3.connect(f"{(run_dir / store.STORE_FILE).as_uri()}?mode=ro", uri=True)
    try:
        return {t: hashlib.sha256(repr(sorted(conn.execute(f"SELECT * FROM {t}"))).encode())
                .hexdigest() for t in tables}
    finally:
        conn.close()


def spec_for_data(case: Case, data: Path) -> str:
    _, task, *mode = case.kind.split(":")
    mode_line = f'mode = "{mode[0]}"\n' if mode else ""
    return (f'[models.m]\nsource = "demo"\nbatch_size = 1\n\n[[tasks]]\ntask = "{task}"\n'
            f'path = "{data}"\n{mode_line}\n[sampling]\nmax_new_tokens = 4\n')


def argv_for(case: Case, case_dir: Path, stored: Path) -> list[str]:
    """Write the case's files into case_dir; the crbench command line that reads them."""
    bad = case_dir / case.name
    if isinstance(case.content, bytes):
        bad.write_bytes(case.content)
    elif inspect.signature(case.content).parameters:  # builds a folder at the path it is given
        case.content(bad)
    else:  # makes bytes (only when run: some are 50 MB)
        bad.write_bytes(case.content())
    if case.kind == "spec" or case.kind.startswith("data"):
        shutil.copytree(stored, case_dir / "run")
        spec = bad
        if case.kind != "spec":
            spec = case_dir / "spec.toml"
            spec.write_text(spec_for_data(case, bad), encoding="utf-8")
        return ["run", str(spec), "--out", str(case_dir / "run")]
    if case.kind.startswith("store:"):
        command = case.kind.split(":")[1]
        args = {"score": ["score", "--run"], "export": ["export"], "report": ["report"]}[command]
        return [*args, str(bad)]
    if case.kind == "outputs":
        return ["score", "--task", "aime24", "--data", str(FIXTURES / "aime24_problems.jsonl"),
                "--outputs", str(bad)]
    out = ["--out", str(case_dir / "compressed")]
    if case.kind == "recipe":
        return ["compress", "--model", "demo", *out, "--recipe", str(bad)]
    if case.kind == "calib":
        return ["compress", "--model", "demo", *out, "--method", "wanda", "--sparsity", "0.5",
                "--calib", str(bad), "--calib-samples", "2", "--seqlen", "64"]
    if case.kind == "ppl":
        return ["ppl", "--model", "demo", "--data", str(bad), "--seqlen", "64"]
    if case.kind == "model":
        return ["ppl", "--model", str(bad), "--data", str(FIXTURES / "compress_heldout.txt"),
                "--seqlen", "64"]
    raise ValueError(case.kind)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, stored_run, demo_model) -> dict[str, tuple]:
    """Every case run once, a few at a time: id -> (case dir, completed process, store bytes
    before, for broken-store cases)."""
    root = tmp_path_factory.mktemp("bad-input")

    def one(case: Case) -> tuple:
        case_dir = root / case.id
        case_dir.mkdir()
        argv = argv_for(case, case_dir, stored_run)
        before = None
        if case.kind.startswith("store:"):
            before = (case_dir / case.named).read_bytes()
        done = subprocess.run([*CRBENCH, *argv], capture_output=True, text=True,
                              errors="replace", cwd=case_dir, timeout=600)
        return case_dir, done, before

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip((c.id for c in CASES), pool.map(one, CASES), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_stores_nothing(case, outcomes, stored_run):
    case_dir, done, before = outcomes[case.id]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.strip().splitlines() if not PROGRESS_BAR.match(line)]
    assert len(lines) == 1, done.stderr[-3000:]
    line = lines[0]
    named = str(case_dir / (case.named or case.name))
    assert line.startswith("crbench: error: ") and named in line, line[:MAX_LINE]
    if case.place is not None:
        assert case.place in line, line[:MAX_LINE]
    assert len(line) - len(named) <= MAX_LINE, f"{len(line)} characters: {line[:MAX_LINE]}"
    assert done.returncode == 2, line
    if case.kind == "spec" or case.kind.startswith("data"):
        assert table_digests(case_dir / "run") == table_digests(stored_run)
    if case.kind.startswith("store:"):
        assert (case_dir / case.named).read_bytes() == before
    if case.kind in ("recipe", "calib"):
        assert not (case_dir / "compressed").exists()
