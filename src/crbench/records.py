"""The records that cross stage boundaries, defined once.

    runner (writer) ──GenerationRecord + ScoreRecord──► store ──StoredGeneration──► report,
    export, rescoring, thinking analyses
    runner ──VariantRecord──► store ──► report (pairs each variant with its parent)
    runner ──FailureRecord──► store ──► report, `crbench run` summary
    crbench probe ──ProbeRecord──► store ──► report (probe curves, s1 metrics, Dynasor)

Names mean one thing everywhere: `task` is the task's *label* in the spec (e.g.
"musique_open"), `task_id` its registry id (e.g. "musique"); `variant` is a variant's label.
The store's tables are derived from these field lists (`crbench.store_schema`), so a field
added here is a column there, under a new `SCHEMA_VERSION` with its migration.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

JsonDict = dict[str, Any]  # JSON data as Python: only where its shape is the task's own
DENSE = "dense"


@dataclass(frozen=True)
class GenerationRecord:
    """One generation: what was asked, what the model wrote, and what it cost."""

    key: str  # sha256 of the canonical JSON of everything that determines the generation
    variant: str  # variant label, e.g. "sparsegpt-50"
    base_model: str  # label of the model the variant derives from (dense: itself)
    engine: str  # "hf" | "openai" | "vllm" | "llamacpp"
    task: str  # task label from the spec, e.g. "musique_open"
    task_id: str  # task registry id, e.g. "musique"
    task_options: str  # canonical JSON of the task's load options (and prompt style)
    item_index: int  # Item.index
    item_id: str  # Item.id
    repeat: int  # 0-based sample number of this item in its cell
    seed: int
    sampling: str  # canonical JSON of the sampling parameters
    prompt: str  # the rendered prompt (canonical JSON for chat messages)
    output: str  # what the model wrote (for servers that split it out: the answer part)
    reasoning: str | None  # a server's separate reasoning_content, if any
    prompt_tokens: int
    completion_tokens: int
    thinking_tokens: int
    answer_tokens: int
    finish_reason: str  # "stop" | "length"
    truncated: bool  # hit the token limit, or the thinking never closed
    wall_s: float
    created_at: str = ""  # UTC ISO time; the store fills it in when empty
    # What the engine reports beyond the text: budget forcing (`thinking`: forced_close,
    # waits, ...), attempts and latency. JSON in the store.
    extra: JsonDict = field(default_factory=dict)

    @property
    def hit_limit(self) -> bool:
        return self.finish_reason == "length"

    @property
    def prompt_text(self) -> str | None:
        """The prompt when it was plain text (completion style); None for chat messages."""
        return None if self.prompt.startswith("[") and _is_json_list(self.prompt) else self.prompt


@dataclass(frozen=True)
class ScoreRecord:
    """A task's verdict on one generation; derived data, recomputable from the generation."""

    key: str
    extracted: str | None  # the answer as read from the output (None: no answer found)
    correct: bool
    no_answer: bool
    truncated: bool  # read as unfinished: thinking never closed, or the token limit was hit
    rule: str  # which extraction rule fired, e.g. "boxed-after-think", "none"
    em: float | None = None  # knowledge tasks only
    f1: float | None = None  # knowledge tasks only
    details: JsonDict = field(default_factory=dict)


@dataclass(frozen=True)
class VariantRecord:
    """One model of a run, with its lineage: what it is, what it derives from, where it sits
    on the bits and sparsity axes."""

    variant: str  # label
    base_model: str  # the spec's model label the variant was made from (dense: itself)
    method: str = DENSE  # "dense" | "sparsegpt" | "gptq" | "awq" | "distill" | "gguf" | ...
    parent: str | None = None  # the label it is paired with in the report (None: a root)
    sparsity: float | None = None  # fraction of weights that are zero
    pattern: str | None = None  # "2:4" etc.
    bits: float | None = None  # nominal weight bits (None: 16/32-bit)
    group_size: int | None = None
    bits_per_weight: float | None = None  # effective, from what is stored (scales included)
    size_bytes: int | None = None  # the weights stored compactly
    ppl: float | None = None  # perplexity on the run's held-out text, if measured
    model_path: str | None = None
    manifest: str | None = None  # JSON: compression.json / distill manifest, if made by crbench
    teacher: str | None = None  # distilled models: what the student learned from

    @property
    def kind(self) -> str:
        """The method as a curve label: "sparsegpt", "sparsegpt 2:4", "gptq"."""
        return f"{self.method} {self.pattern}" if self.pattern else self.method


@dataclass(frozen=True)
class FailureRecord:
    """A generation that failed after all retries: recorded, reported, never scored."""

    key: str
    variant: str
    task: str  # task label
    item_index: int
    repeat: int
    error: str
    attempts: int
    at: str = ""  # UTC ISO time; the store fills it in when empty


@dataclass(frozen=True)
class ProbeRecord:
    """A forced-answer probe (`crbench.probes`): a stored generation's prompt and the first
    `budget` tokens of its thinking, then `</think>` and the answer cue; what the model then
    wrote (greedy), and the task's verdict on it read as a finished answer."""

    key: str  # sha256 of (generation key, budget, cue, max_new_tokens, engine settings)
    generation_key: str  # the generation whose thinking was cut
    variant: str
    task: str  # task label
    item_index: int
    repeat: int
    budget: int  # thinking tokens asked for
    thinking_used: int  # thinking tokens fed: min(budget, thinking_total)
    thinking_total: int  # tokens of the generation's whole thinking (same tokenizer)
    cue: str  # what followed `</think>`
    max_new_tokens: int
    engine: str
    output: str  # what the model wrote after the cue
    new_tokens: int
    finish_reason: str
    extracted: str | None
    correct: bool
    no_answer: bool
    rule: str
    wall_s: float
    created_at: str = ""  # UTC ISO time; the store fills it in when empty


@dataclass(frozen=True)
class StoredGeneration:
    """A generation as readers get it from the store: with its score (None until scored) and
    whether a newer row or a newer plan has superseded it."""

    generation: GenerationRecord
    score: ScoreRecord | None
    superseded: bool = False


def field_names(record_type: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(record_type))


def as_dict(record: Any) -> JsonDict:  # Any: any of the dataclasses above
    return asdict(record)


def _is_json_list(text: str) -> bool:
    try:
        return isinstance(json.loads(text), list)
    except ValueError:
        return False
