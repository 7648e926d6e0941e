"""Synthetic arithmetic word problems with a difficulty knob, scored like AIME 2024.

    Mia has 7 shells. Mia finds 5 more shells. Then Mia gives away 3 shells.
    How many shells does Mia have now?                                         -> 9

Difficulty d means d operations on numbers up to OPERAND_MAX[d]: level 1 is one addition of
one-digit numbers, level 2 adds subtraction, level 3 multiplication, level 5 halving/thirding.
Every intermediate value stays a non-negative integer. Items have the aime24 field contract
(`fields={"problem"}`, integer `reference`); `write` emits aime24 JSONL (ID / Problem /
Answer) and prompt/score are aime24's own.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from crbench.tasks.base import Item, Score
from crbench.tasks.synth_common import (
    DEFAULT_N,
    item_rng,
    load_items,
    real_task,
    think,
    write_jsonl,
)

NAME = "synth_arith"
REAL_TASK = "aime24"

# Largest operand per difficulty level (index = level). Every value along the way stays within
# AIME's answer range, 0..999, which the aime24 prompt announces and its loader enforces.
OPERAND_MAX = [0, 9, 20, 50, 100, 200, 300, 400, 500]
LARGEST = 999
PEOPLE = ["Mia", "Omar", "Lena", "Ravi", "Zoe", "Tariq", "Ines", "Kofi", "Hana", "Luca",
          "Noor", "Emil", "Aiko", "Bruno", "Sana", "Piet"]
THINGS = ["apples", "marbles", "stamps", "shells", "coins", "stickers", "books", "pencils",
          "cards", "beads", "buttons", "seeds"]
MULTIPLES = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}
FRACTIONS = {2: "half", 3: "a third", 4: "a quarter"}


def operations(difficulty: int) -> list[str]:
    ops = ["add"]
    if difficulty >= 2:
        ops.append("sub")
    if difficulty >= 3:
        ops.append("mul")
    if difficulty >= 5:
        ops.append("div")
    return ops


def step(rng: random.Random, value: int, op: str, top: int) -> tuple[int, int] | None:
    """(operand, new value) for one operation, or None when it does not fit the current value."""
    # Operands start at 2 so every count reads as a plural ("gives away 2 shells").
    if op == "add":
        b = rng.randint(2, top)
        return (b, value + b) if value + b <= LARGEST else None
    if op == "sub":
        if value < 4:
            return None
        b = rng.randint(2, min(top, value - 2))
        return b, value - b
    if op == "mul":
        k = rng.choice(list(MULTIPLES))
        return (k, value * k) if value * k <= min(10 * top, LARGEST) else None
    divisors = [k for k in FRACTIONS if value % k == 0 and value >= k]
    if not divisors:
        return None
    k = rng.choice(divisors)
    return k, value - value // k  # "gives away a third": keeps the rest


def sentence(op: str, who: str, things: str, b: int, first: bool) -> str:
    then = "" if first else "Then "
    if op == "add":
        return f"{then}{who} gets {b} more {things}."
    if op == "sub":
        return f"{then}{who} gives away {b} {things}."
    if op == "mul":
        return f"{then}{who} ends up with {MULTIPLES[b]} as many {things} as before."
    return f"{then}{who} gives away {FRACTIONS[b]} of the {things}."


def make_item(index: int, difficulty: int, seed: int) -> Item:
    rng = item_rng(NAME, seed, difficulty, index)
    who, things = rng.choice(PEOPLE), rng.choice(THINGS)
    top = OPERAND_MAX[difficulty]
    value = rng.randint(2, top)
    lines = [f"{who} has {value} {things}."]
    ops = operations(difficulty)
    while len(lines) <= difficulty:
        op = rng.choice(ops)
        result = step(rng, value, op, top)
        if result is None:
            continue
        b, new_value = result
        lines.append(sentence(op, who, things, b, first=len(lines) == 1))
        value = new_value
    lines.append(f"How many {things} does {who} have now?")
    return Item(
        index=index,
        id=f"synth-arith-d{difficulty}-s{seed}-{index:04d}",
        fields={"problem": " ".join(lines)},
        reference=value,
    )


def generate(n: int, difficulty: int, seed: int = 0) -> list[Item]:
    return [make_item(i, difficulty, seed) for i in range(n)]


def write(items: list[Item], path: str | Path) -> Path:
    """aime24 JSONL: one {"ID", "Problem", "Answer"} row per item."""
    rows = [{"ID": item.id, "Problem": item.fields["problem"], "Answer": item.reference}
            for item in items]
    return write_jsonl(rows, path)


def load(path: str | None = None, *, limit: int | None = None, seed: int = 0,
         difficulty: int = 1, n: int = DEFAULT_N, **options: Any) -> list[Item]:
    return load_items(generate, REAL_TASK, path, limit=limit, seed=seed, difficulty=difficulty,
                      n=n, options=options)


def prompt(item: Item, style: str = "completion") -> str | list[dict]:
    return real_task(REAL_TASK).prompt(item, style)


def score(item: Item, output: str, *, hit_limit: bool = False) -> Score:
    return real_task(REAL_TASK).score(item, output, hit_limit=hit_limit)


# --- solver trace: the problem read back from its English, one line per operation ---------------

_START = re.compile(r"has (\d+) ")
_STEP = re.compile(
    r"gets (?P<add>\d+) more |gives away (?P<sub>\d+) |ends up with (?P<mul>[\w ]+?) as many "
    r"|gives away (?P<div>half|a third|a quarter) of "
)
_TIMES = {text: k for k, text in MULTIPLES.items()}
_PARTS = {text: k for k, text in FRACTIONS.items()}


def trace(item: Item) -> str:
    """`<think>` one line per operation `</think>` then `\\boxed{N}` (what aime24 reads)."""
    problem = item.fields["problem"]
    start = _START.search(problem)
    if start is None:
        raise ValueError(f"{item.id}: not a synth_arith problem")
    value = int(start[1])
    steps = [f"Start: {value}."]
    for m in _STEP.finditer(problem, start.end()):
        if m["add"]:
            b = int(m["add"])
            steps.append(f"{value} + {b} = {value + b}.")
            value += b
        elif m["sub"]:
            b = int(m["sub"])
            steps.append(f"{value} - {b} = {value - b}.")
            value -= b
        elif m["mul"]:
            k = _TIMES[m["mul"]]
            steps.append(f"{value} * {k} = {value * k}.")
            value *= k
        else:
            k = _PARTS[m["div"]]
            part = value // k
            steps.append(f"{value} / {k} = {part}, {value} - {part} = {value - part}.")
            value -= part
    return think(steps, f"\\boxed{{{value}}}")
