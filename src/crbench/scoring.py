"""The one scoring function: every path that grades an output goes through `score_generation`.

    crbench run                 the runner scores each generation as it is stored
    crbench score --run DIR     rescoring a store's outputs (`crbench.rescore`)
    crbench score --task/--data outputs written elsewhere (`crbench.score`)

An output is read as its prompt made the model write it (`as_written`): when the prompt ended by
opening the thinking (the paper's completion style prefills `<think>`), the output starts inside
a thought and shows only `</think>`, so the opening is put back, and an output that never closes
its thinking is read as unfinished (truncated; explicit answer markers in its tail only). When
the prompt is not known (outputs from files) the prompt style says it: "completion" prefills,
"chat" and "direct" do not. A server's separate `reasoning_content` goes back in tags.
"""

from __future__ import annotations

from types import ModuleType

from crbench import extract
from crbench.records import ScoreRecord
from crbench.tasks.base import Item

PREFILLED_STYLES = ("completion",)  # prompt styles whose prompt ends by opening the thinking
DEFAULT_STYLE = "completion"  # a task module without its own DEFAULT_STYLE: the paper's


def task_default_style(task_module: ModuleType) -> str:
    """The prompt style a task's outputs are read in unless told otherwise."""
    return str(getattr(task_module, "DEFAULT_STYLE", DEFAULT_STYLE))


def as_written(output: str, *, prompt: str | None, style: str | None,
               reasoning: str | None) -> str:
    """The model's whole turn as one text. A given prompt decides whether the thinking was
    prefilled (it ends with `<think>`); with no prompt (chat messages, or outputs from files)
    the style does ("completion" prefills)."""
    if prompt is None and style in PREFILLED_STYLES:
        prompt = extract.THINK_OPEN  # stands for any prompt that opened the thinking
    return extract.as_written(output, prompt, reasoning)


def score_generation(task_module: ModuleType, item: Item, output: str, *,
                     prompt: str | None = None, style: str | None = None,
                     reasoning: str | None = None, finish_reason: str = "stop",
                     key: str = "") -> ScoreRecord:
    """Grade one output of `item` with its task's scorer, read as written (see above).
    `prompt` is the rendered prompt when it was plain text (None for chat messages);
    `finish_reason` "length" means the engine hit its token limit."""
    text = as_written(output, prompt=prompt, style=style, reasoning=reasoning)
    score = task_module.score(item, text, hit_limit=finish_reason == "length")
    return ScoreRecord(key=key, extracted=score.extracted, correct=bool(score.correct),
                       no_answer=bool(score.no_answer), truncated=bool(score.truncated),
                       rule=str(score.rule), em=score.em, f1=score.f1,
                       details=dict(score.details or {}))


def unfinished(output: str, *, prompt: str | None, style: str | None,
               reasoning: str | None) -> bool:
    """Whether the output, read as written, opened its thinking and never closed it."""
    parts = extract.split_thinking(as_written(output, prompt=prompt, style=style,
                                              reasoning=reasoning))
    return parts.opened and not parts.closed
