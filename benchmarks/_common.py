"""What the benchmark scripts share: prompts, the demo model, and the machine they ran on."""

from __future__ import annotations

import os
import platform
import random

from crbench.threads import set_openmp_waiting

set_openmp_waiting()  # before torch loads its OpenMP runtime; both sides of a benchmark inherit it
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

NAMES = ["Emily", "Jason", "Sarah", "Michael", "Ashley", "David", "Leslie", "Tiffany", "Hannah"]
PLACES = ["the beach", "the park", "the museum", "the bakery", "the gym", "the library",
          "the swimming pool", "the coffee shop", "the art studio", "the soccer field"]
ACTIVITIES = ["buying clothes at the mall", "walking in the garden", "reading at the library",
              "working out at the gym", "taking photos near the Eiffel Tower",
              "waiting at the train station", "sitting on a rooftop", "playing tennis at the court"]
INSTRUCTION = ("Use the timeline to work out the answer. Think step by step, then give the letter "
               "of the correct option.\n\n")


def hour(h: int) -> str:
    return f"{(h - 1) % 12 + 1}{'am' if h < 12 else 'pm'}"


def temporal_prompt(rng: random.Random) -> str:
    """A BBH Temporal-Sequences-style question (invented here, not from the dataset)."""
    person = rng.choice(NAMES)
    place = rng.choice(PLACES)
    start = rng.randint(5, 9)
    n = rng.randint(3, 6)  # sightings; the free slot is one of the gaps
    hours = list(range(start, start + n + 2))
    free = rng.randrange(1, n + 1)
    lines = [f"{person} woke up at {hour(hours[0])}."]
    for k in range(1, n + 1):
        if k == free:
            continue
        witness = rng.choice([w for w in NAMES if w != person])
        lines.append(f"{witness} saw {person} {rng.choice(ACTIVITIES)} from {hour(hours[k])} "
                     f"to {hour(hours[k + 1])}.")
    lines.append(f"{place.capitalize()} was closed after {hour(hours[-1])}.")
    options = [(hours[k], hours[k + 1]) for k in range(1, n + 1)]
    rng.shuffle(options)
    letters = "ABCD"
    shown = options[:4] if (hours[free], hours[free + 1]) in options[:4] else (
        options[:3] + [(hours[free], hours[free + 1])])
    body = "\n".join(lines)
    choices = "\n".join(f"({letters[k]}) {hour(a)} to {hour(b)}" for k, (a, b) in enumerate(shown))
    return (f"{INSTRUCTION}Today, {person} went to {place}. Between what times could they have "
            f"gone?\nWe know that:\n{body}\nBetween what times could {person} have gone to "
            f"{place}?\nOptions:\n{choices}")


def temporal_prompts(n: int = 64, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [temporal_prompt(rng) for _ in range(n)]


def chat_rendered(tokenizer, prompts: list[str]) -> list[str]:
    """The prompts as chat-template strings, so every backend sees identical tokens."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


def machine() -> dict:
    import torch
    import transformers

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
    }
