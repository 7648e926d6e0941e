"""What the task modules share: reading dataset files (JSON, JSONL, parquet, or rows from the
hub), sampling a subset, rendering a prompt in either style, and building a Score.

Every file problem becomes an `InputError` naming the file and the row, so a bad file costs one
line on stderr. Rows are numbered from 0, like `Item.index`; messages also give the 1-based line.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crbench.errors import InputError
from crbench.extract import THINK_OPEN, Extraction
from crbench.tasks.base import Item, Score

# completion: the paper's plain prompt, ending by opening the thinking (R1-style models);
# chat: the same instruction as a chat message, for the model's own chat template;
# direct: a chat message asking for the answer alone, with no reasoning instruction -- for small
#         instruct models (the demo's 135M model rambles past any token budget when told to
#         reason step by step, and scores at chance).
STYLES = ("completion", "chat", "direct")


def render(reasoning: str, direct: str, style: str) -> str | list[dict[str, str]]:
    """The prompt for `style`, from the task's reasoning instruction and its direct one."""
    if style == "completion":
        return f"{reasoning}\n{THINK_OPEN}\n"
    if style == "chat":
        return [{"role": "user", "content": reasoning}]
    if style == "direct":
        return [{"role": "user", "content": direct}]
    raise InputError(None, f"unknown prompt style {style!r}; known: {', '.join(STYLES)}")


def fill_prompt(reasoning: str, direct: str, style: str, **fields: object
                ) -> str | list[dict[str, str]]:
    """The prompt for `style`, the task's two templates filled with the same `fields`."""
    return render(reasoning.format(**fields), direct.format(**fields), style)


def score_from(found: Extraction, correct: bool, **extra: Any) -> Score:
    return Score(
        extracted=found.value,
        correct=bool(correct and found.value is not None),
        no_answer=found.value is None,
        truncated=found.truncated,
        rule=found.rule,
        **extra,
    )


def read_text(path: str | Path) -> str:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(path, "not UTF-8 text", f"line {line}") from None
    if not text.strip():
        raise InputError(path, "empty file")
    return text


def read_json(path: str | Path) -> Any:
    return _parse_json(path, read_text(path))


def _parse_json(path: str | Path, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:  # bad JSON, or a number too long to convert (over 4300 digits)
        line = getattr(exc, "lineno", None)
        place = f"line {line}" if line else None
        raise InputError(path, f"bad JSON: {getattr(exc, 'msg', exc)}", place) from None


def read_records(path: str | Path) -> list[dict]:
    """Rows of a JSONL file, a JSON list, or a parquet file (chosen by content / suffix)."""
    path = Path(path)
    if path.suffix == ".parquet":
        rows = _read_parquet(path)
    else:
        text = read_text(path)
        rows = _json_list(path, text) if text.lstrip().startswith("[") else _jsonl(path, text)
    if not rows:
        raise InputError(path, "no rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            msg = f"expected a JSON object, got {type(row).__name__}"
            raise InputError(path, msg, row_place(i))
    return rows


def _jsonl(path: Path, text: str) -> list[Any]:
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:  # bad JSON, or a number too long to convert
            msg = f"bad JSON: {getattr(exc, 'msg', exc)}"
            raise InputError(path, msg, row_place(len(rows), line_no)) from None
    return rows


def _json_list(path: Path, text: str) -> list[Any]:
    rows = _parse_json(path, text)
    if not isinstance(rows, list):
        raise InputError(path, "expected a JSON list of rows")
    return rows


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq  # comes with `datasets`

    try:
        return pq.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(path, f"cannot read parquet: {exc}") from None


def hub_rows(repo: str, split: str, config: str | None = None) -> list[dict]:
    """Rows of a Hugging Face hub dataset (online; cached by `datasets`)."""
    import datasets

    try:
        return list(datasets.load_dataset(repo, config, split=split))
    except Exception as exc:  # network, auth (gated dataset), missing split: all one message
        where = f"{repo}" + (f" ({config})" if config else "") + f" split {split}"
        msg = f"cannot load {where} from the Hugging Face hub: {type(exc).__name__}: {exc}"
        raise InputError(None, msg.splitlines()[0]) from None


def hub_file(repo: str, filename: str) -> Path:
    """One file of a Hugging Face hub dataset repo, downloaded once (online; cached)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, repo_type="dataset"))
    except Exception as exc:  # network, auth, missing file: all one message
        msg = f"cannot download {filename} of {repo} from the Hugging Face hub: {exc}"
        raise InputError(None, msg.splitlines()[0]) from None


def read_rows(path: str | Path | None, hub: tuple[str, ...]) -> list[dict]:
    """Rows of the local file, or of the hub dataset (repo, split[, config]) when path is None."""
    return hub_rows(*hub) if path is None else read_records(path)


def build_items(
    path: str | Path | None,
    rows: list,
    make_item: Callable[[str | Path | None, dict, int], Item | None],
    limit: int | None,
    seed: int,
) -> list[Item]:
    """Items from rows (make_item returns None to skip a row), ids checked, subset taken."""
    items = [item for i, row in enumerate(rows) if (item := make_item(path, row, i)) is not None]
    if not items:
        raise InputError(path or "hub", "no usable rows")
    check_unique_ids(path, items)
    return subset(items, limit, seed)


def no_options(task: str, options: dict) -> None:
    if options:
        msg = f"{task} takes no options besides limit and seed, got {sorted(options)}"
        raise InputError(None, msg)


def row_place(index: int, line: int | None = None) -> str:
    return f"row {index}" + (f" (line {line})" if line is not None else "")


def row_id(row: dict, index: int, *names: str) -> str:
    """An item's id: the row's value under the first of `names` it has, else (no such field,
    or null) its index."""
    for name in names:
        if name in row:
            return str(row[name]) if row[name] is not None else str(index)
    return str(index)


def field(path: str | Path | None, row: dict, index: int, name: str, kind: type | tuple) -> Any:
    """row[name], which must exist and be of `kind`; otherwise an InputError naming the row."""
    source = path or "hub"
    if name not in row:
        raise InputError(source, f"missing field {name!r}", row_place(index))
    value = row[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        want = " or ".join(k.__name__ for k in _kinds(kind))
        got = type(value).__name__
        raise InputError(source, f"field {name!r} should be {want}, got {got}", row_place(index))
    if isinstance(value, str) and not value.strip():
        raise InputError(source, f"field {name!r} is empty", row_place(index))
    return value


def _kinds(kind: type | tuple) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)


def check_unique_ids(path: str | Path | None, items: list[Item]) -> None:
    seen: dict[str, int] = {}
    for item in items:
        if item.id in seen:
            msg = f"duplicate id {item.id!r} (also row {seen[item.id]})"
            raise InputError(path or "hub", msg, row_place(item.index))
        seen[item.id] = item.index


def subset(items: list[Item], limit: int | None, seed: int) -> list[Item]:
    """A deterministic random sample of `limit` items (all when None), kept in file order."""
    if limit is None or limit >= len(items):
        return items
    if limit < 0:
        raise InputError(None, f"limit must be >= 0, got {limit}")
    chosen = random.Random(seed).sample(range(len(items)), limit)
    return [items[i] for i in sorted(chosen)]


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV file with a header line (GPQA's official format), as header -> text.

    Quoted fields may span lines; a row with more or fewer fields than the header is refused,
    naming its 0-based row and the line it ends on.
    """
    import csv
    import io

    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        if len(set(header)) != len(header):
            raise InputError(path, "the header names a column twice", "line 1")
        rows: list[dict[str, str]] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                msg = f"{len(row)} fields where the header has {len(header)}"
                raise InputError(path, msg, row_place(len(rows), reader.line_num))
            rows.append(dict(zip(header, row, strict=True)))
    except csv.Error as exc:  # bad quoting, a field over csv's size limit
        raise InputError(path, f"bad CSV: {exc}", f"line {reader.line_num}") from None
    if not rows:
        raise InputError(path, "no rows")
    return rows
