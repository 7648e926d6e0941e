"""Scoring outputs written elsewhere against a dataset file: what `crbench score` does.

Outputs come as a folder of `N.txt` files or a JSONL file of objects
    {"index": N, "output": "...", "finish_reason": "stop" | "length", "completion_tokens": 123,
     "reasoning_content": "..."}                      (all but index and output optional)
N is the item's 0-based row index in the data file (`Item.index`). Each output is graded by the
one scoring function (`crbench.scoring.score_generation`), read in the prompt style that made it:
the task's default unless `--style` says otherwise; the paper's "completion" style prefills
`<think>`, so an output with no `</think>` is unfinished (truncated; explicit answer markers in
its tail only). An item with no output counts as no answer; accuracy is over all loaded items.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

from crbench.errors import InputError
from crbench.records import JsonDict
from crbench.scoring import score_generation, unfinished
from crbench.tasks import reference_text
from crbench.tasks.base import Item
from crbench.tasks.common import read_text, row_place

NO_OUTPUT = "no-output"  # the rule of an item that has no output
COVER_EM = "cover_em"  # a score detail some tasks record; the summary averages it like EM


@dataclass(frozen=True)
class FileOutput:
    """One output as a file gives it."""

    output: str
    finish_reason: str = "stop"  # "length": the engine hit its token limit
    completion_tokens: int | None = None
    reasoning: str | None = None  # a server's separate reasoning_content


def read_outputs(path: str | Path) -> dict[int, FileOutput]:
    """index -> output, from a folder of N.txt files or a JSONL file."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    outputs: dict[int, FileOutput] = {}
    for n, line in enumerate(read_text(path).splitlines()):
        if not line.strip():
            continue
        place = row_place(len(outputs), n + 1)
        try:
            row = json.loads(line)
        except ValueError as exc:  # bad JSON, or a number too long to convert
            raise InputError(path, f"bad JSON: {getattr(exc, 'msg', exc)}", place) from None
        if not isinstance(row, dict):
            raise InputError(path, "expected a JSON object with index and output", place)
        index = row.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise InputError(path, f"'index' should be a row number >= 0, got {index!r}", place)
        if index in outputs:
            raise InputError(path, f"a second output for index {index}", place)
        outputs[index] = _file_output(path, place, row)
    return outputs


def _file_output(path: Path, place: str, row: JsonDict) -> FileOutput:
    output, finish = row.get("output"), row.get("finish_reason", "stop")
    tokens, reasoning = row.get("completion_tokens"), row.get("reasoning_content")
    if not isinstance(output, str):
        raise InputError(path, f"'output' should be a string, got {type(output).__name__}", place)
    if not isinstance(finish, str) and finish is not None:
        raise InputError(path, f"'finish_reason' should be a string, got {finish!r}", place)
    if tokens is not None and (not isinstance(tokens, int) or isinstance(tokens, bool)
                               or tokens < 0):
        raise InputError(path, f"'completion_tokens' should be a count >= 0, got {tokens!r}",
                         place)
    if reasoning is not None and not isinstance(reasoning, str):
        got = type(reasoning).__name__
        raise InputError(path, f"'reasoning_content' should be a string, got {got}", place)
    return FileOutput(output, finish or "stop", tokens, reasoning)


def _read_folder(folder: Path) -> dict[int, FileOutput]:
    outputs = {}
    for file in sorted(folder.glob("*.txt")):
        if not file.stem.isdigit():
            raise InputError(file, "output files should be named N.txt (N = the item's row index)")
        if not file.is_file():
            raise InputError(file, "is a folder, not an output file")
        # Model text is untrusted and may hold broken bytes; they must not stop the scoring.
        outputs[int(file.stem)] = FileOutput(file.read_bytes().decode("utf-8", errors="replace"))
    if not outputs:
        raise InputError(folder, "no N.txt output files in this folder")
    return outputs


def score_items(task: ModuleType, items: list[Item], outputs: dict[int, FileOutput],
                style: str) -> list[JsonDict]:
    """One record per item: index, id, `reference` (the gold answer as the task compares it),
    the ScoreRecord's fields (em, f1, details only when set), and `unfinished` (the output, read
    as written, never closed its thinking)."""
    records = []
    for item in items:
        found = outputs.get(item.index)
        reference = reference_text(task, item)  # the gold answer as the task compares it
        if found is None:  # scored as the empty output: no answer, EM/F1 0
            score = score_generation(task, item, "", style=None)
            record: JsonDict = {"index": item.index, "id": item.id, "reference": reference,
                                **asdict(score),
                                "rule": NO_OUTPUT, "unfinished": False}
        else:
            score = score_generation(task, item, found.output, style=style,
                                     reasoning=found.reasoning,
                                     finish_reason=found.finish_reason)
            record = {"index": item.index, "id": item.id, "reference": reference, **asdict(score),
                      "unfinished": unfinished(found.output, prompt=None, style=style,
                                               reasoning=found.reasoning)}
        record.pop("key")
        for name in ("details", "em", "f1"):
            if record.get(name) in (None, {}):
                record.pop(name, None)
        records.append(record)
    return records


def summarize(task_id: str, records: list[JsonDict], unmatched: int, style: str) -> JsonDict:
    """accuracy (fraction of all n items), and counts: no answer, truncated (unfinished or hit
    the token limit), unfinished (thinking never closed), missing output. Tasks that score EM
    and F1 get their means; tasks that record cover EM (`details["cover_em"]`) its mean, over
    all n items (an item without it counts 0, as a missing output does for EM)."""
    n = len(records)
    summary: JsonDict = {
        "task": task_id,
        "style": style,
        "n": n,
        "correct": sum(r["correct"] for r in records),
        "accuracy": sum(r["correct"] for r in records) / n if n else 0.0,
        "no_answer": sum(r["no_answer"] for r in records),
        "truncated": sum(r["truncated"] for r in records),
        "unfinished": sum(r["unfinished"] for r in records),
        "missing_output": sum(r["rule"] == NO_OUTPUT for r in records),
        "unmatched_outputs": unmatched,
        "rules": dict(Counter(r["rule"] for r in records).most_common()),
    }
    if records and "em" in records[0]:
        summary["em"] = sum(r["em"] for r in records) / n
        summary["f1"] = sum(r["f1"] for r in records) / n
    covers = [r.get("details", {}).get(COVER_EM) for r in records]
    if any(cover is not None for cover in covers):  # tasks that record it (MuSiQue)
        summary[COVER_EM] = sum(cover or 0.0 for cover in covers) / n
    return summary
