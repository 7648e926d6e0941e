"""Shared by the companion-task tests: the fixture files in each official format, and the
task modules under test."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from crbench.tasks import aime25, gpqa_diamond, gsm8k, math500
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
