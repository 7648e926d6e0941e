"""One set of outputs, three scoring paths, identical scores.

    run      `crbench run` against an OpenAI-compatible server (a real HTTP server in this test
             process) that answers each prompt with a canned output
    rescore  `crbench score --run` of that store
    files    `crbench score --task --data --outputs` of the same outputs written as JSONL

The outputs include unfinished traces after a prefilled `<think>`, a finished one, one whose
thinking came back separately (reasoning_content), and ones that hit the token limit. Each
path goes through `crbench.scoring.score_generation`; the expected verdicts below also pin
what that reading is, so a bug shared by all three paths still fails here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from crbench import store
from crbench.records import ScoreRecord
from crbench.scoring import as_written, score_generation
from crbench.tasks import get_task

FIXTURES = Path(__file__).parent / "fixtures"
CRBENCH = Path(sys.executable).parent / "crbench"

# task label -> [(text found in the item's prompt, item index, output, reasoning, finish)]
CANNED = {
    "aime": [  # completion style: the prompt ends by opening the thinking
        ("7^{2024}", 0, "7^4 = 2401, so perhaps the answer is 1. Wait, let me check", None,
         "stop"),  # unfinished: a weak mid-thought answer must not count
        ("divide $720$", 1, "5*3*2 divisors.\n</think>\nSo the answer is \\boxed{30}.", None,
         "stop"),  # finished
        ("x^2 = 625", 2, "x is positive, x = 25.\nFinal answer: 25", None,
         "length"),  # hit the limit inside the thinking, explicit answer in its tail
        ("least common multiple", 3, "lcm(8, 14, 15)\nAnswer: 840\n</think>\n", None,
         "stop"),  # closed, empty answer part: the thinking's tail
        ("perimeter $58$", 4, "</think>\n\\boxed{421", None,
         "length"),  # closed, then cut off inside the box: the weak rule still reads it
    ],
    "temporal": [  # chat style; the server returns the thinking separately
        ("Mara", 0, "(B)", "Free from 11am to 12pm.", "stop"),
        ("Theo", 1, "", "The gap is 1pm to 3pm, so the answer is (D) but", "length"),
        ("Nell", 2, "Answer: (C)", None, "stop"),
    ],
}
EXPECTED = {  # (task, index) -> (extracted, correct, truncated, rule)
    ("aime", 0): (None, False, True, "none"),
    ("aime", 1): ("30", True, False, "boxed-after-think"),
    ("aime", 2): ("25", True, True, "answer-line-truncated-tail"),
    ("aime", 3): ("840", True, False, "answer-line-thinking-tail"),
    ("aime", 4): ("421", True, True, "last-number-after-think"),
    ("temporal", 0): ("B", True, False, "option-after-think"),
    ("temporal", 1): (None, False, True, "none"),
    ("temporal", 2): ("C", False, False, "answer-line-no-think"),
}
COMPARED = ("extracted", "correct", "no_answer", "truncated", "rule", "em", "f1")


class CannedServer(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body.get("prompt") or json.dumps(body.get("messages"))
        output, reasoning, finish = next((o, r, f) for cases in CANNED.values()
                                         for needle, _, o, r, f in cases if needle in prompt)
        if "messages" in body:
            message = {"role": "assistant", "content": output, "reasoning_content": reasoning}
            choice: dict[str, object] = {"message": message, "finish_reason": finish}
        else:
            choice = {"text": output, "finish_reason": finish}
        data = json.dumps({"choices": [choice],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 20}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def canned_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), CannedServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def crbench(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CRBENCH), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def verdict(score: ScoreRecord | dict[str, object]) -> tuple[object, ...]:
    values = score if isinstance(score, dict) else vars(score)
    return tuple(values.get(name) for name in COMPARED)


@pytest.fixture(scope="module")
def stored_run(canned_server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paths")
    spec = root / "spec.toml"
    spec.write_text(f"""
[models.canned]
source = "{canned_server}"
engine = "openai"
model = "demo"

[[tasks]]
task = "aime24"
label = "aime"
path = "{FIXTURES / 'aime24_problems.jsonl'}"

[[tasks]]
task = "temporal_sequences"
label = "temporal"
path = "{FIXTURES / 'temporal_sequences.json'}"
style = "chat"

[sampling]
max_new_tokens = 20
""")
    done = crbench("run", spec, "--out", root / "run")
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "run"


def stored_scores(run: Path) -> dict[tuple[str, int], ScoreRecord]:
    rows = store.read_run(run).rows
    assert all(s.score is not None for s in rows)
    return {(s.generation.task, s.generation.item_index): s.score for s in rows if s.score}


def test_the_run_path_reads_outputs_as_written(stored_run):
    scores = stored_scores(stored_run)
    assert {key: verdict(s)[:2] + verdict(s)[3:5] for key, s in scores.items()} == EXPECTED


def test_rescoring_a_run_changes_no_score(stored_run):
    before = stored_scores(stored_run)
    done = crbench("score", "--run", stored_run, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["rescored"], result["changed"], result["skipped"]) == (8, 0, 0)
    assert stored_scores(stored_run) == before


def test_scoring_files_gives_the_run_s_scores(stored_run, tmp_path):
    scores = stored_scores(stored_run)
    for label, task, data, style in (
            ("aime", "aime24", FIXTURES / "aime24_problems.jsonl", None),  # default: completion
            ("temporal", "temporal_sequences", FIXTURES / "temporal_sequences.json", "chat")):
        outputs = tmp_path / f"{label}.jsonl"
        outputs.write_text("".join(
            json.dumps({"index": index, "output": output, "finish_reason": finish,
                        "completion_tokens": 20, "reasoning_content": reasoning}) + "\n"
            for _, index, output, reasoning, finish in CANNED[label]))
        per_item = tmp_path / f"{label}.per_item.jsonl"
        done = crbench("score", "--task", task, "--data", data, "--outputs", outputs, "--json",
                       "--per-item", per_item, *(("--style", style) if style else ()))
        assert done.returncode == 0, done.stderr
        records = [json.loads(line) for line in per_item.read_text().splitlines()]
        assert len(records) == len(CANNED[label])
        for record in records:
            assert verdict(record) == verdict(scores[(label, record["index"])]), record
        summary = json.loads(done.stdout)
        unclosed = sum(r["unfinished"] for r in records)
        assert summary["unfinished"] == unclosed == {"aime": 2, "temporal": 0}[label]


def test_a_prompt_and_its_style_read_an_output_the_same_way():
    module = get_task("aime24")
    item = module.load(FIXTURES / "aime24_problems.jsonl")[0]  # answer: 1
    prompt = module.prompt(item, "completion")
    assert isinstance(prompt, str)
    for output in ("so the answer is 1", "x </think> \\boxed{1}", "<think>a</think>1", ""):
        by_prompt = score_generation(module, item, output, prompt=prompt)
        by_style = score_generation(module, item, output, style="completion")
        assert by_prompt == by_style, output
        assert as_written(output, prompt=prompt, style=None, reasoning=None) \
            == as_written(output, prompt=None, style="completion", reasoning=None)
    unfinished = score_generation(module, item, "so the answer is 1", style="completion")
    as_chat = score_generation(module, item, "so the answer is 1", style="chat")
    assert (unfinished.extracted, unfinished.truncated) == (None, True)
    assert (as_chat.extracted, as_chat.truncated) == ("1", False)
    separate = score_generation(module, item, "\\boxed{1}", style="chat", reasoning="hmm")
    assert (separate.rule, separate.correct) == ("boxed-after-think", True)
