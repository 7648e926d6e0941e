"""Behaviour labels of stored traces, for `crbench importance`: each sentence of a trace labelled
with what the model is doing there (Venhoff et al.'s taxonomy, as arXiv 2504.02010 v2 uses it).

Two labellers:
    rules   `crbench.cues` (cue phrases such as "Wait," or "Let me verify"): offline,
            deterministic, transparent, wrong in known ways
    model   any model behind an OpenAI-compatible server, asked with `TAXONOMY_PROMPT` (the
            paper used GPT-4o); its answer is parsed leniently, anything unreadable is "other"

The labels are stored beside the traces, not in the store: `RUN_DIR/importance/labels.jsonl`,
one JSON object per generation key (`TraceLabels`); a later labelling of the same key with the
same labeller replaces the earlier one. Offsets are character offsets into `labelled_text(g)`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from crbench.cues import DEFAULT_CUES, OTHER, PRIORITY, CueSet, split_sentences
from crbench.errors import InputError
from crbench.extract import THINK_CLOSE, THINK_OPEN
from crbench.records import GenerationRecord

LABELS_FILE = "labels.jsonl"
CATEGORIES = (*PRIORITY, OTHER)

# The model labeller's prompt: one visible constant. {sentences} is a numbered list.
TAXONOMY_PROMPT = """\
You label the sentences of a model's reasoning trace with the behaviour each one shows.
Categories (Venhoff et al., "Understanding reasoning in thinking language models"):
- initializing: restating the problem, setting up what is asked
- deduction: deriving a consequence, computing, concluding
- adding-knowledge: bringing in a fact, definition, formula or theorem from memory
- example-testing: trying a concrete example, plugging in values, checking a candidate
- uncertainty-estimation: expressing doubt or confidence, weighing whether something holds
- backtracking: abandoning or revising an earlier step ("Wait, that's wrong")
- other: none of these
Answer with one line per sentence, "NUMBER: CATEGORY", nothing else.

Sentences:
{sentences}
"""


@dataclass(frozen=True)
class SentenceLabel:
    start: int  # character offsets into the labelled text
    end: int
    label: str


@dataclass(frozen=True)
class TraceLabels:
    key: str  # the generation's key in the store
    variant: str
    labeller: str  # "rules" or "model:NAME"
    sentences: tuple[SentenceLabel, ...]

    def spans(self, behaviour: str) -> list[tuple[int, int]]:
        return [(s.start, s.end) for s in self.sentences if s.label == behaviour]


def labelled_text(g: GenerationRecord) -> str:
    """What the model wrote after its prompt, as one text (a server's separate reasoning put
    back inside think tags): the text labelled, and continued from the prompt by the model."""
    if g.reasoning is not None:
        return f"{THINK_OPEN}\n{g.reasoning}\n{THINK_CLOSE}\n{g.output}"
    return g.output


def label_with_rules(g: GenerationRecord, cues: CueSet = DEFAULT_CUES) -> TraceLabels:
    sentences = tuple(SentenceLabel(seg.start, seg.end, label)
                      for seg, label in cues.label_trace(labelled_text(g)))
    return TraceLabels(g.key, g.variant, "rules", sentences)


# Asks a model: (prompt) -> its answer text. The CLI builds one over the openai engine.
AskModel = Callable[[str], str]
_ANSWER_LINE = re.compile(r"^\s*\[?(\d+)\]?\s*[:.)-]\s*([A-Za-z-]+)")


def label_with_model(g: GenerationRecord, ask: AskModel, name: str) -> TraceLabels:
    """Labels from a model asked with TAXONOMY_PROMPT; a sentence it did not label (or labelled
    with no known category) is "other"."""
    segments = split_sentences(labelled_text(g))
    numbered = "\n".join(f"{i + 1}. {seg.text}" for i, seg in enumerate(segments))
    answer = ask(TAXONOMY_PROMPT.format(sentences=numbered)) if segments else ""
    chosen: dict[int, str] = {}
    for line in answer.splitlines():
        match = _ANSWER_LINE.match(line)
        if match and match[2].lower() in CATEGORIES:
            chosen.setdefault(int(match[1]) - 1, match[2].lower())
    sentences = tuple(SentenceLabel(seg.start, seg.end, chosen.get(i, OTHER))
                      for i, seg in enumerate(segments))
    return TraceLabels(g.key, g.variant, f"model:{name}", sentences)


def model_asker(base_url: str, model: str, max_new_tokens: int = 2048) -> AskModel:
    """Ask a model behind an OpenAI-compatible server (chat, greedy), one prompt per trace; a
    request that still fails after the engine's retries is one InputError line."""
    from crbench.engines.base import GenerationFailed, SamplingParams
    from crbench.engines.openai import OpenAIEngine

    # tokenizer: only used for token counts a server leaves out, which labelling never reads;
    # the local demo tokenizer avoids fetching one for the labeller's name.
    engine = OpenAIEngine(model, base_url=base_url, chat=True, concurrency=1, tokenizer="demo")
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)

    def ask(prompt: str) -> str:
        for _, result in engine.generate([prompt], params):
            if isinstance(result, GenerationFailed):
                raise InputError(base_url, f"the labeller failed: {result.error}",
                                 "--labeller-url")
            return result.text
        raise InputError(base_url, "the labeller gave no answer", "--labeller-url")

    return ask


def read_labels(path: Path) -> dict[str, TraceLabels]:
    """labels.jsonl as {generation key: labels}; a malformed line is one InputError."""
    if not path.is_file():
        return {}
    out: dict[str, TraceLabels] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text") from None
    for number, line in enumerate(lines, 1):
        if line.strip():
            labels = _parse_line(line, path, number)
            out[labels.key] = labels
    return out


def _parse_line(line: str, path: Path, number: int) -> TraceLabels:
    try:
        row = json.loads(line)
        sentences = tuple(SentenceLabel(int(s["start"]), int(s["end"]), str(s["label"]))
                          for s in row["sentences"])
        labels = TraceLabels(str(row["key"]), str(row["variant"]), str(row["labeller"]),
                             sentences)
    except (ValueError, KeyError, TypeError):
        raise InputError(path, "not a labels row (key, variant, labeller, sentences with "
                               "start, end, label)", f"line {number}") from None
    bad = next((s for s in sentences if s.label not in CATEGORIES or not 0 <= s.start <= s.end),
               None)
    if bad is not None:
        raise InputError(path, f"bad sentence {bad.start}..{bad.end} {bad.label!r}",
                         f"line {number}")
    return labels


def write_labels(path: Path, labels: Iterable[TraceLabels]) -> None:
    """Merge into labels.jsonl (same key: the new labels win), written whole, then renamed."""
    merged = read_labels(path)
    merged.update({lab.key: lab for lab in labels})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as f:
        for key in sorted(merged):
            f.write(json.dumps(asdict(merged[key]), ensure_ascii=False) + "\n")
    partial.replace(path)


def label_traces(generations: Sequence[GenerationRecord], labels_path: Path, *,
                 ask: AskModel | None = None, model_name: str = "",
                 cues: CueSet = DEFAULT_CUES) -> dict[str, TraceLabels]:
    """Labels of every generation: stored ones from this labeller reused, the rest made and
    stored (rules: always remade, they are cheap and the cue lists may have changed)."""
    labeller = f"model:{model_name}" if ask is not None else "rules"
    stored = read_labels(labels_path)
    out: dict[str, TraceLabels] = {}
    for g in generations:
        known = stored.get(g.key)
        if ask is not None and known is not None and known.labeller == labeller:
            out[g.key] = known
        elif ask is not None:
            out[g.key] = label_with_model(g, ask, model_name)
        else:
            out[g.key] = label_with_rules(g, cues)
    write_labels(labels_path, out.values())
    return out
