"""What the four synthetic task families share: seeding, label balance, loading and writing.

Each family (`synth_arith`, `synth_logic`, `synth_temporal`, `synth_multihop`) generates items
with the field contract of one real task (aime24, folio, temporal_sequences, musique), writes
them in that dataset's official file format, and delegates prompt and score to the real module,
so a synthetic item is scored exactly like a real one.

Determinism: item i of (family, seed, difficulty) depends on nothing else, so the first n items
are the same whatever n is asked for, and no global random state is touched.
"""

from __future__ import annotations

import importlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from crbench.errors import InputError
from crbench.tasks.base import Item

FAMILIES = ("arith", "logic", "temporal", "multihop")  # modules synth_<family>
MAX_DIFFICULTY = 8
DEFAULT_N = 30


def item_rng(family: str, seed: int, difficulty: int, index: int) -> random.Random:
    """The random source of one item; string seeds are hashed stably (sha512), not by hash()."""
    return random.Random(f"{family}/seed={seed}/difficulty={difficulty}/item={index}")


def balanced_label(labels: list[str], family: str, seed: int, difficulty: int, index: int) -> str:
    """The target label of item `index`: every block of len(labels) items holds each label once,
    in a shuffled order, so any prefix is balanced to within one item per label."""
    block, position = divmod(index, len(labels))
    order = list(labels)
    random.Random(f"{family}/seed={seed}/difficulty={difficulty}/block={block}").shuffle(order)
    return order[position]


def check_difficulty(difficulty: int) -> int:
    if not isinstance(difficulty, int) or not 1 <= difficulty <= MAX_DIFFICULTY:
        raise InputError(None, f"must be an integer from 1 to {MAX_DIFFICULTY}, "
                               f"got {difficulty!r}", "difficulty")
    return difficulty


def real_task(name: str) -> ModuleType:
    """A task module by registry name, imported on first use (the real task whose format and
    scoring a family borrows, or a family itself)."""
    return importlib.import_module(f"crbench.tasks.{name}")


def load_items(
    generate: Callable[[int, int, int], list[Item]],
    real_name: str,
    path: str | Path | None,
    *,
    limit: int | None,
    seed: int,
    difficulty: int,
    n: int,
    options: dict[str, Any],
) -> list[Item]:
    """`load` of every family: a file written by `write` is read by the real task's loader;
    without a file, n items are generated."""
    if path is not None:
        return real_task(real_name).load(str(path), limit=limit, seed=seed, **options)
    if options:
        raise InputError(None, f"unknown option(s) for a generated task: {', '.join(options)}")
    if not isinstance(n, int) or n < 1:
        raise InputError(None, f"must be a positive integer, got {n!r}", "n")
    items = generate(n, check_difficulty(difficulty), seed)
    return items[:limit] if limit is not None else items


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def write_json(data: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


# Invented words: pronounceable, capitalised, never real names, so a model cannot have memorised
# any fact about them. Onsets and vowels alternate; codas close the word.
ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "k", "kl", "l", "m", "n", "p", "pr", "qu", "r",
          "s", "st", "t", "tr", "v", "z", "sh", "th"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "y"]
CODAS = ["n", "r", "l", "s", "x", "th", "m", "k", "nd", "rt", "v", "sk"]


def invented_word(rng: random.Random, syllables: int = 2) -> str:
    parts = [rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(CODAS)).capitalize()


# --- solver traces ------------------------------------------------------------------------------
# Each family's `trace(item)` writes its solver's working in R1's shape: the steps inside
# <think>...</think>, then the answer as the task's scorer reads it. Steps are terse (one short
# line each), so a small model can learn them on a CPU and generate them cheaply; their number
# grows with the item's difficulty. `crbench distill` trains on them.


def think(steps: list[str], answer: str) -> str:
    """An R1-shaped trace: the steps, one per line, inside the think tags, then the answer."""
    return "<think>\n" + "\n".join(steps) + "\n</think>\n" + answer
