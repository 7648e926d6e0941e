"""`crbench score` on outputs with several samples per item: avg@n, pass@k and maj@k.

A JSONL outputs file holds several samples per item when its rows carry a sample number:
    {"index": N, "sample": S, "output": "...", ...}     ("repeat" is read the same as "sample")
(the other fields as in `crbench.score`). Each sample number is scored like a file of its own:
every item gets one record per sample number present in the file, and a sample an item lacks
counts as no answer, as a missing item does for single outputs. The summary adds avg@n, pass@k
and maj@k with 95% bootstrap intervals over items (`crbench.sampling_metrics`); its `n` and
counts are over (item, sample) records, so its `accuracy` is avg@n, the mean over all samples.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from types import ModuleType

from crbench.analysis import Estimate
from crbench.errors import InputError
from crbench.records import JsonDict
from crbench.sampling_metrics import Attempt, SamplingMetrics, TaskKey, sampling_metrics
from crbench.score import FileOutput, score_items
from crbench.score import _file_output as file_output  # the one check of an output row
from crbench.tasks.base import Item
from crbench.tasks.common import read_text, row_place

SAMPLE_FIELDS = ("sample", "repeat")  # what a row may call its sample number
# sample number -> item index -> output
SampledOutputs = dict[int, dict[int, FileOutput]]


def sample_number(path: Path, place: str, row: JsonDict) -> int | None:
    """The row's sample number (None: the row has none)."""
    named = [name for name in SAMPLE_FIELDS if name in row]
    if not named:
        return None
    if len(named) > 1:
        raise InputError(path, "give the sample number once: 'sample' or 'repeat'", place)
    value = row[named[0]]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(path, f"{named[0]!r} should be a sample number >= 0, got {value!r}",
                         place)
    return value


def read_sampled_outputs(path: str | Path) -> SampledOutputs | None:
    """sample -> index -> output from a JSONL file whose rows carry sample numbers; None for a
    folder or a file without them (one output per item: `crbench.score.read_outputs`)."""
    path = Path(path)
    if path.is_dir():
        return None
    rows: list[tuple[str, object]] = []
    for n, line in enumerate(read_text(path).splitlines()):
        if line.strip():
            place = row_place(len(rows), n + 1)
            try:
                rows.append((place, json.loads(line)))
            except ValueError as exc:  # bad JSON, or a number too long to convert
                raise InputError(path, f"bad JSON: {getattr(exc, 'msg', exc)}", place) from None
    numbered = [(place, row) for place, row in rows
                if isinstance(row, dict) and any(name in row for name in SAMPLE_FIELDS)]
    if not numbered:
        return None
    outputs: SampledOutputs = defaultdict(dict)
    for place, row in rows:
        if not isinstance(row, dict):
            raise InputError(path, "expected a JSON object with index and output", place)
        sample = sample_number(path, place, row)
        if sample is None:
            raise InputError(path, "this row has no 'sample' number while others have one",
                             place)
        index = row.get("index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise InputError(path, f"'index' should be a row number >= 0, got {index!r}", place)
        if index in outputs[sample]:
            raise InputError(path, f"a second output for index {index}, sample {sample}", place)
        outputs[sample][index] = file_output(path, place, row)
    return dict(sorted(outputs.items()))


def score_samples(task: ModuleType, items: list[Item], outputs: SampledOutputs,
                  style: str) -> list[JsonDict]:
    """One record per (sample, item), sample by sample; each record names its `sample`."""
    records = []
    for sample, by_index in outputs.items():
        records += [{**record, "sample": sample}
                    for record in score_items(task, items, by_index, style)]
    return records


def metrics_of(records: list[JsonDict], n_boot: int = 2000, seed: int = 0,
               task_key: TaskKey | None = None) -> SamplingMetrics:
    attempts: dict[int, list[Attempt]] = defaultdict(list)
    for r in records:
        attempts[r["index"]].append(Attempt(r["sample"], bool(r["correct"]), r["extracted"]))
    return sampling_metrics(attempts, n_boot, seed, task_key)


def as_json(e: Estimate) -> JsonDict:
    return {"mean": e.mean, "lo": e.lo, "hi": e.hi, "items": e.n_questions}


def sampling_summary(records: list[JsonDict], n_boot: int = 2000, seed: int = 0,
                     task_key: TaskKey | None = None) -> JsonDict:
    """The summary's additions: samples per item, avg@n, pass@k and maj@k (votes grouped by the
    task's `task_key`, see crbench.tasks.vote_key) with intervals."""
    m = metrics_of(records, n_boot, seed, task_key)
    return {
        "samples_per_item": m.n_max,
        "items": m.avg.n_questions,
        "avg_at_n": as_json(m.avg),
        "pass_at_k": {str(k): as_json(e) for k, e in m.pass_at.items()},
        "maj_at_k": {str(k): as_json(e) for k, e in m.maj_at.items()},
        "note": "pass@1 over n samples per item is avg@n, not pass@n",
    }


def sampling_rows(summary: JsonDict) -> list[tuple[str, JsonDict]]:
    """(metric name, its estimate) in the order a table shows them."""
    rows = [(f"avg@{summary['samples_per_item']}", summary["avg_at_n"])]
    rows += [(f"pass@{k}", e) for k, e in summary["pass_at_k"].items()]
    rows += [(f"maj@{k}", e) for k, e in summary["maj_at_k"].items()]
    return rows


def print_sampling_table(summary: JsonDict) -> None:
    """avg@n, pass@k and maj@k on the terminal, each with its interval."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{summary['samples_per_item']} samples × {summary['items']} items",
                  caption="95% bootstrap intervals; pass@1 over n samples per item is avg@n, "
                          "not pass@n")
    for name in ("metric", "%", "interval"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for name, e in sampling_rows(summary):
        table.add_row(name, f"{100 * e['mean']:.1f}",
                      escape(f"[{100 * e['lo']:.1f}, {100 * e['hi']:.1f}]"))
    Console().print(table)
