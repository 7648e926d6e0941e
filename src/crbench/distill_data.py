"""What `crbench distill` trains on: (prompt, completion) pairs from one of three sources.

    synthetic   the generated families' solver traces (`crbench.tasks.synth_*.trace`), prompts
                rendered exactly as crbench renders them for a run (the task's `prompt(item,
                style)`), so a student trains on the format it is evaluated in
    traces      a JSONL file of {"prompt": ..., "completion": ...} rows (a prompt is a string or
                a list of chat messages)
    run         a crbench run's store: its generations as (prompt, output), picked by "correct"
                (every correct one), "shortest-correct" (one per item) or "all"

`tokenize` turns pairs into training rows: the prompt's token ids as an engine sends them
(`crbench.engines.prompts.encode_prompt`: chat template with the assistant turn opened), then
the completion and the end-of-turn token; the loss is on the completion only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crbench.errors import InputError
from crbench.tasks.common import read_text, row_place

PICKS = ("correct", "shortest-correct", "all")
Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class TracePair:
    """One training example: what the student is asked and what it should write."""

    prompt: Prompt
    completion: str
    source: str  # where it came from: "synth_arith/d1/7", "traces.jsonl:12", "run:<key>"


@dataclass(frozen=True)
class FamilyLevels:
    """`counts[i]` generated items of one synthetic family at level `levels[i]`."""

    task: str  # "synth_arith"
    levels: tuple[int, ...]
    counts: tuple[int, ...]


def parse_synthetic(text: str, count: int, level_counts: list[int] | None = None
                    ) -> list[FamilyLevels]:
    """"synth_arith:1-3,synth_temporal:1-2,synth_logic:2" -> one FamilyLevels per family, with
    `level_counts[d - 1]` items at level d where given, else `count`."""
    from crbench.tasks.synth_common import FAMILIES, check_difficulty

    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        task, _, levels = part.partition(":")
        if task.removeprefix("synth_") not in FAMILIES:
            known = ", ".join(f"synth_{f}" for f in FAMILIES)
            raise InputError(None, f"unknown synthetic family {task!r}; known: {known}",
                             "synthetic")
        try:
            low, _, high = (levels or "1").partition("-")
            span = range(int(low), int(high or low) + 1)
        except ValueError:
            raise InputError(None, f"bad levels {levels!r} (want N or N-M)", "synthetic") from None
        if not span:
            raise InputError(None, f"empty level range {levels!r}", "synthetic")
        chosen = tuple(check_difficulty(d) for d in span)
        counts = tuple(level_counts[d - 1] if level_counts and d <= len(level_counts) else count
                       for d in chosen)
        out.append(FamilyLevels(f"synth_{task.removeprefix('synth_')}", chosen, counts))
    if not out:
        raise InputError(None, "no synthetic families given", "synthetic")
    return out


def synthetic_pairs(families: list[FamilyLevels], *, seed: int, style: str) -> list[TracePair]:
    """Generated items and their solver traces, interleaved family by family."""
    from crbench.tasks.synth_common import real_task

    per_family = []
    for family in families:
        module = real_task(family.task)
        pairs = [TracePair(module.prompt(item, style), module.trace(item),
                           f"{family.task}/d{level}/{item.index}")
                 for level, count in zip(family.levels, family.counts, strict=True)
                 for item in module.generate(count, level, seed)]
        per_family.append(pairs)
    # Round-robin, so any prefix of the data (a short run) sees every family and level.
    longest = max(len(p) for p in per_family)
    return [pairs[i] for i in range(longest) for pairs in per_family if i < len(pairs)]


def jsonl_pairs(path: str | Path) -> list[TracePair]:
    """{"prompt", "completion"} rows of a JSONL file; any bad row is one InputError."""
    path = Path(path)
    pairs: list[TracePair] = []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        place = row_place(len(pairs), line_no)
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(path, f"bad JSON: {getattr(exc, 'msg', exc)}", place) from None
        if not isinstance(row, dict):
            raise InputError(path, f"expected a JSON object, got {type(row).__name__}", place)
        pairs.append(TracePair(check_prompt(path, row.get("prompt"), place),
                               check_completion(path, row.get("completion"), place),
                               f"{path.name}:{line_no}"))
    if not pairs:
        raise InputError(path, "no rows")
    return pairs


def check_prompt(path: Path, prompt: Any, place: str) -> Prompt:  # Any: parsed JSON
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    if isinstance(prompt, list) and prompt and all(
        isinstance(m, dict) and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str) for m in prompt
    ):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise InputError(path, "field 'prompt' should be a non-empty string or a list of "
                           "{role, content} messages", place)


def check_completion(path: Path, completion: Any, place: str) -> str:  # Any: parsed JSON
    if not isinstance(completion, str) or not completion.strip():
        raise InputError(path, "field 'completion' should be a non-empty string", place)
    return completion


def run_pairs(run_dir: str | Path, pick: str) -> list[TracePair]:
    """Generations of a crbench run as teacher traces, picked by `pick` (see PICKS)."""
    from crbench.store import read_run

    if pick not in PICKS:
        raise InputError(None, f"pick must be one of {', '.join(PICKS)}, got {pick!r}", "pick")
    rows = read_run(run_dir).rows
    kept = [r for r in rows if pick == "all" or (r.score is not None and r.score.correct)]
    if pick == "shortest-correct":
        best: dict[tuple[str, str, int], Any] = {}
        for r in kept:
            g = r.generation
            item = (g.variant, g.task, g.item_index)
            if item not in best or g.completion_tokens < best[item].generation.completion_tokens:
                best[item] = r
        kept = list(best.values())
    if not kept:
        raise InputError(run_dir, f"the run holds no generations to learn from (pick {pick!r})")
    pairs = []
    for r in kept:
        g = r.generation
        prompt: Prompt = g.prompt if g.prompt_text is not None else json.loads(g.prompt)
        pairs.append(TracePair(prompt, g.output, f"run:{g.key}"))
    return pairs


def data_sha256(pairs: list[TracePair]) -> str:
    """A hash of the training data itself (what the manifest and the cache key record)."""
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(json.dumps([pair.prompt, pair.completion], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def tokenize(pairs: list[TracePair], tokenizer: Any, max_length: int) -> list[dict[str, list[int]]]:
    """Training rows {"input_ids", "completion_mask"}: the prompt as an engine encodes it, the
    completion, the end-of-turn token (what stops generation); longer rows are cut."""
    from crbench.engines.prompts import encode_prompt

    rows = []
    for pair in pairs:
        prompt_ids = encode_prompt(tokenizer, pair.prompt)
        completion_ids = tokenizer(pair.completion, add_special_tokens=False)["input_ids"]
        completion_ids = [*completion_ids, tokenizer.eos_token_id]
        ids = (prompt_ids + completion_ids)[:max_length]
        mask = ([0] * len(prompt_ids) + [1] * len(completion_ids))[:max_length]
        rows.append({"input_ids": ids, "completion_mask": mask})
    return rows
