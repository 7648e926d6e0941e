"""Task registry: name -> module. Each module follows the contract in `crbench.tasks.base`."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from crbench.errors import InputError
from crbench.tasks.base import Item

# Filled as task modules land; keep imports cheap (no torch at import time).
TASK_MODULES = {
    "aime24": "crbench.tasks.aime24",
    "folio": "crbench.tasks.folio",
    "temporal_sequences": "crbench.tasks.temporal_sequences",
    "musique": "crbench.tasks.musique",
    "synth_arith": "crbench.tasks.synth_arith",
    "synth_logic": "crbench.tasks.synth_logic",
    "synth_temporal": "crbench.tasks.synth_temporal",
    "synth_multihop": "crbench.tasks.synth_multihop",
    "math500": "crbench.tasks.math500",
    "gpqa_diamond": "crbench.tasks.gpqa_diamond",
    "aime25": "crbench.tasks.aime25",
    "gsm8k": "crbench.tasks.gsm8k",
}


def answer_text(module: ModuleType, item: Item) -> str:
    """An item's reference answer as a model should write it; generated families borrow the
    rule of the real task whose format they share."""
    if hasattr(module, "answer_text"):
        return module.answer_text(item)
    return get_task(module.REAL_TASK).answer_text(item)


def reference_text(module: ModuleType, item: Item) -> str:
    """The gold answer as the task compares it (the integer, the label, the option letter
    after shuffling, the expression), for per-item records. Generated families borrow the
    rule of the real task whose format they share."""
    if hasattr(module, "reference_text"):
        return str(module.reference_text(item))
    if hasattr(module, "REAL_TASK"):
        return reference_text(get_task(module.REAL_TASK), item)
    return str(item.reference)


def vote_key(module: ModuleType) -> Callable[[str], str] | None:
    """The task's key for maj@k votes (answers with one key are one vote), or None for the
    default (the extracted text without white space). Generated families borrow the key of
    the real task whose format they share."""
    if hasattr(module, "vote_key"):
        return module.vote_key
    if hasattr(module, "REAL_TASK"):
        return vote_key(get_task(module.REAL_TASK))
    return None


def few_shot_examples(module: ModuleType, shots: int, seed: int, difficulty: int = 1
                      ) -> list[Item]:
    """Solved examples for few-shot prompts: fresh items of a generated family, drawn with a
    seed of their own so they never coincide with the evaluated items. Real datasets have no
    spare items to show, so only generated families take `shots`."""
    if not hasattr(module, "generate"):
        raise InputError(None, f"`shots` needs a generated task family, not {module.NAME!r}")
    return module.generate(shots, difficulty, seed + 1_000_003)


def with_examples(module: ModuleType, item: Item, style: str, examples: list[Item]
                  ) -> str | list[dict[str, str]]:
    """The prompt for `item`, preceded by each example's prompt and its answer as earlier
    chat turns (few-shot)."""
    prompt = module.prompt(item, style)
    if not examples:
        return prompt
    if isinstance(prompt, str):
        raise InputError(None, "`shots` needs a chat prompt style (chat or direct)", "style")
    turns: list[dict[str, str]] = []
    for example in examples:
        turns += [*module.prompt(example, style),
                  {"role": "assistant", "content": answer_text(module, example)}]
    return turns + prompt


def get_task(name: str) -> ModuleType:
    import importlib

    if name not in TASK_MODULES:
        raise InputError(None, f"unknown task {name!r}; known: {', '.join(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[name])
