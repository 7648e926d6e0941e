"""Synthetic "when could they have gone?" puzzles with a difficulty knob, scored like BBH
Temporal Sequences.

A person's day from waking to a shop's closing time is filled with sightings except for one
gap; the question asks which of four time ranges is that gap. Difficulty d means d+1 sightings:
level 1 has two one-hour sightings in time order; from level 3 sightings last one or two hours
and are listed out of order. Every item is checked: exactly one option lies inside free time.

Items have the temporal_sequences field contract (`fields={"input", "options"}`, the correct
letter as reference); `write` emits the BBH JSON object and prompt/score are temporal_sequences'.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from crbench.tasks.base import Item, Score
from crbench.tasks.synth_common import (
    DEFAULT_N,
    balanced_label,
    item_rng,
    load_items,
    real_task,
    think,
    write_json,
)

NAME = "synth_temporal"
REAL_TASK = "temporal_sequences"
LETTERS = ["A", "B", "C", "D"]
FIRST_HOUR, LATEST_WAKE, LAST_HOUR = 5, 11, 23  # wake by 11am; the day ends by 11pm

PEOPLE = ["Nora", "Omar", "Leila", "Jonas", "Priya", "Mateo", "Ingrid", "Kwame", "Yuki", "Dmitri",
          "Amara", "Felix", "Sofia", "Tomas", "Hana", "Elias"]
DESTINATIONS = ["bakery", "museum", "post office", "dentist", "gym", "bookshop", "zoo", "bank",
                "flower shop", "pharmacy", "art gallery", "hardware store"]
ACTIVITIES = ["buying fruit at the market", "reading at the library", "jogging in the park",
              "waiting at the train station", "swimming at the pool", "working at the office",
              "eating at a cafe", "getting a haircut at the barber's",
              "painting in the studio", "playing chess at the club", "fixing a bike in the garage",
              "watching a film at the cinema", "taking photos on the bridge",
              "walking a dog by the river", "sitting in a meeting at city hall",
              "practising piano at the music school"]

Slot = tuple[int, int]  # [start, end) in whole hours of the day


def clock(hour: int) -> str:
    """12-hour clock text: 5 -> "5am", 12 -> "12pm", 13 -> "1pm", 24 -> "12am"."""
    suffix = "am" if hour % 24 < 12 else "pm"
    return f"{(hour - 1) % 12 + 1}{suffix}"


def span(slot: Slot) -> str:
    return f"{clock(slot[0])} to {clock(slot[1])}"


def make_timeline(rng: random.Random, difficulty: int) -> tuple[int, list[Slot], Slot, int]:
    """(wake hour, sighting slots in time order, the free slot, closing hour)."""
    events = difficulty + 1
    longest = 1 if difficulty <= 2 else 2
    lengths = [rng.randint(1, longest) for _ in range(events + 1)]
    while sum(lengths) > LAST_HOUR - FIRST_HOUR:  # keep the day within 5am..11pm
        lengths[lengths.index(max(lengths))] -= 1
    gap = rng.randrange(events + 1)  # which block of the day is free
    wake = rng.randint(FIRST_HOUR, min(LATEST_WAKE, LAST_HOUR - sum(lengths)))
    slots, t = [], wake
    for length in lengths:
        slots.append((t, t + length))
        t += length
    free = slots.pop(gap)
    return wake, slots, free, t


def free_hours(wake: int, sightings: list[Slot], closing: int) -> set[int]:
    busy = {h for start, end in sightings for h in range(start, end)}
    return {h for h in range(wake, closing) if h not in busy}


def make_item(index: int, difficulty: int, seed: int) -> Item:
    rng = item_rng(NAME, seed, difficulty, index)
    wake, sightings, free, closing = make_timeline(rng, difficulty)
    who, *witnesses = rng.sample(PEOPLE, len(sightings) + 1)
    place = rng.choice(DESTINATIONS)
    doing = rng.sample(ACTIVITIES, len(sightings))

    # Wrong options: times someone saw them; with only two sightings, also an hour outside the
    # day (before waking or after closing).
    wrong = rng.sample(sightings, min(3, len(sightings)))
    if len(wrong) < 3:
        outside = [(wake - 1, wake)] if wake > FIRST_HOUR else []
        outside += [(closing, closing + 1)] if closing < LAST_HOUR else []
        wrong.append(rng.choice(outside))
    answer = balanced_label(LETTERS, NAME, seed, difficulty, index)
    rng.shuffle(wrong)
    slots = wrong[: LETTERS.index(answer)] + [free] + wrong[LETTERS.index(answer):]
    options = {letter: span(slot) for letter, slot in zip(LETTERS, slots, strict=True)}

    # The one check that matters: exactly one option lies wholly in free time.
    free_set = free_hours(wake, sightings, closing)
    inside = [letter for letter, slot in zip(LETTERS, slots, strict=True)
              if set(range(*slot)) <= free_set]
    if inside != [answer] or set(range(*free)) != free_set:
        raise RuntimeError(f"bad timeline: difficulty {difficulty}, seed {seed}, item {index}")

    lines = [f"Today, {who} went to the {place}. Between what times could {who} have gone?",
             "Here is what we know:", f"{who} woke up at {clock(wake)}."]
    order = list(range(len(sightings)))
    if difficulty >= 3:
        rng.shuffle(order)
    for i in order:
        lines.append(f"{witnesses[i]} saw {who} {doing[i]} from {span(sightings[i])}.")
    lines += [f"The {place} was closed after {clock(closing)}.",
              f"Between what times could {who} have gone to the {place}?",
              "Options:", *(f"({letter}) {text}" for letter, text in options.items())]
    return Item(
        index=index,
        id=str(index),
        fields={"input": "\n".join(lines), "options": options},
        reference=answer,
    )


def generate(n: int, difficulty: int, seed: int = 0) -> list[Item]:
    return [make_item(i, difficulty, seed) for i in range(n)]


def write(items: list[Item], path: str | Path) -> Path:
    """The BBH task file: one JSON object holding the examples and their "(X)" targets."""
    examples = [{"input": item.fields["input"], "target": f"({item.reference})"}
                for item in items]
    return write_json({"canary": "synthetic items generated by crbench synth",
                       "examples": examples}, path)


def load(path: str | None = None, *, limit: int | None = None, seed: int = 0,
         difficulty: int = 1, n: int = DEFAULT_N, **options: Any) -> list[Item]:
    return load_items(generate, REAL_TASK, path, limit=limit, seed=seed, difficulty=difficulty,
                      n=n, options=options)


def prompt(item: Item, style: str = "completion") -> str | list[dict]:
    return real_task(REAL_TASK).prompt(item, style)


def score(item: Item, output: str, *, hit_limit: bool = False) -> Score:
    return real_task(REAL_TASK).score(item, output, hit_limit=hit_limit)


# --- solver trace: the day walked hour by hour from waking to closing ----------------------------

_CLOCK = r"(\d{1,2}[ap]m)"
_WOKE = re.compile(rf"woke up at {_CLOCK}\.")
_SEEN = re.compile(rf" saw .+ from {_CLOCK} to {_CLOCK}\.")
_CLOSED = re.compile(rf"was closed after {_CLOCK}\.")


def hour(text: str) -> int:
    """The inverse of `clock`: "5am" -> 5, "12pm" -> 12, "1pm" -> 13."""
    number, suffix = int(text[:-2]) % 12, text[-2:]
    return number + (12 if suffix == "pm" else 0)


def trace(item: Item) -> str:
    """`<think>` the day in time order, one line per sighting or free stretch `</think>` then
    "Answer: (X)" (what temporal_sequences reads)."""
    text = item.fields["input"]
    woke, closed = _WOKE.search(text), _CLOSED.search(text)
    if woke is None or closed is None:
        raise ValueError(f"{item.id}: not a synth_temporal puzzle")
    sightings = sorted((hour(a), hour(b)) for a, b in _SEEN.findall(text))
    t, closing = hour(woke[1]), hour(closed[1])
    steps = [f"Awake at {clock(t)}."]
    free: Slot | None = None
    for start, end in [*sightings, (closing, closing)]:
        if start > t:
            free = (t, start)
            steps.append(f"{span(free)}: free.")
        if end > start:
            steps.append(f"{span((start, end))}: seen.")
        t = max(t, end)
    steps.append(f"Closed after {clock(closing)}.")
    options = item.fields["options"]
    letter = next((k for k, v in options.items() if free and v == span(free)), None)
    if free is None or letter is None:
        raise ValueError(f"{item.id}: no option is the free time")
    steps.append(f"Free: {span(free)}, option ({letter}).")
    return think(steps, f"Answer: ({letter})")
