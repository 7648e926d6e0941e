"""`crbench probe RUN_DIR`: forced-answer probes of stored traces (s1, arXiv 2501.19393;
Dynasor, arXiv 2412.20993) -- what a variant answers when its thinking is stopped after B tokens.

A probe of a stored generation at budget B is the generation's prompt, the first B tokens of its
thinking, then `</think>` and the answer cue, continued greedily for a few (16-32) new tokens by
the variant's own model; the continuation is graded by the one scoring path
(`crbench.scoring.score_generation`) as a finished answer. Probes are stored beside the
generations (table `probes`, `crbench.probe_store`) and summarised by `crbench.probe_metrics`.

    plan   every stored, scored generation of the run that thinks: its thinking on the variant's
           token axis (`crbench.thinking.token_axis`, the axis of the report's Thinking section);
           one probe per budget below the thinking's length, and one at its full length when the
           trace was truncated (the answer it would have given had it been made to stop there)
    key    sha256 of (generation key, budget, cue, max new tokens, the variant's engine settings)
    run    per variant with probes left: its model as the run made it (`crbench.prepare`, cached),
           its engine made once; probes in chunks, the store re-checked before each chunk; each
           probe stored in its own transaction the moment it finishes (INSERT OR IGNORE)

So a killed probe run resumes where it stopped and a second run makes nothing. Budgets: a
geometric ladder (16, 32, 64, ...) below the task's longest thinking, or `every` K tokens
(Dynasor's probing interval), or given.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from crbench.engines.base import Engine, Generation, SamplingParams
from crbench.engines.budget import ANSWER_CUE, prompt_opens_thinking
from crbench.errors import InputError
from crbench.extract import THINK_CLOSE, THINK_OPEN
from crbench.plan import Plan, PlannedTask, PlannedVariant, canonical_json
from crbench.records import GenerationRecord, ProbeRecord, ScoreRecord
from crbench.store import Store
from crbench.store_read import RunData
from crbench.tasks.base import Item
from crbench.thinking import TokenAxis, Tokenize, token_axis

DEFAULT_NEW_TOKENS = 24  # s1 / Dynasor answer within a few tokens of the cue
LADDER_START = 16
CHUNK_BATCHES = 4  # as the runner: a chunk is this many engine batches


# --- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSettings:
    budgets: tuple[int, ...] = ()  # given budgets; empty: the ladder
    every: int | None = None  # a budget every K tokens (Dynasor's interval)
    cue: str | None = None  # None: the task module's ANSWER_CUE, else budget forcing's cue
    max_new_tokens: int = DEFAULT_NEW_TOKENS

    def __post_init__(self) -> None:
        if self.budgets and self.every is not None:
            raise InputError(None, "give --budgets or --every, not both", "--every")
        if self.every is not None and self.every < 1:
            raise InputError(None, f"must be at least 1, got {self.every}", "--every")
        if not 1 <= self.max_new_tokens <= 256:
            raise InputError(None, f"must be 1..256, got {self.max_new_tokens}", "--tokens")


def parse_budgets(text: str) -> tuple[int, ...]:
    """"32,64,128" -> (32, 64, 128); anything else is one InputError line."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise InputError(None, f"positive token counts separated by commas, e.g. 32,64,128 "
                               f"(got {text!r})", "--budgets")
    return tuple(sorted({int(p) for p in parts}))


def ladder(longest: int, settings: ProbeSettings) -> list[int]:
    """The budgets probed for a task whose longest thinking is `longest` tokens (only those
    below a trace's own length are probed on it)."""
    if settings.budgets:
        return list(settings.budgets)
    if settings.every is not None:
        return list(range(settings.every, longest, settings.every))
    budgets, budget = [], LADDER_START
    while budget < longest:
        budgets.append(budget)
        budget *= 2
    return budgets


def answer_cue(task_module: object, settings: ProbeSettings) -> str:
    """What follows `</think>`: the given cue, the task's own (`ANSWER_CUE`), or the cue budget
    forcing appends (`crbench.engines.budget.ANSWER_CUE`)."""
    if settings.cue is not None:
        return settings.cue
    return str(getattr(task_module, "ANSWER_CUE", ANSWER_CUE))


# --- planning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thinking:
    """Where a generation's thinking is, in the text the model continued from its prompt."""

    head: str  # continuation before the thinking ("<think>\n" when the model opened it)
    text: str  # the thinking, up to its last `</think>` (or the end: never closed)
    closed: bool


def thinking_of(g: GenerationRecord) -> Thinking | None:
    """The thinking of a stored generation, or None when it has none (nothing to probe)."""
    if g.reasoning is not None:  # a server split it out: put it back inside tags
        return Thinking(f"{THINK_OPEN}\n", g.reasoning, True) if g.reasoning.strip() else None
    prompt = g.prompt_text
    if prompt is not None and prompt_opens_thinking(prompt):
        start = 0
    else:
        opened = g.output.find(THINK_OPEN)
        if opened < 0:
            return None
        start = opened + len(THINK_OPEN)
    end = g.output.rfind(THINK_CLOSE)
    closed = end >= start
    text = g.output[start:end] if closed else g.output[start:]
    return Thinking(g.output[:start], text, closed) if text.strip() else None


@dataclass(frozen=True, eq=False)
class Target:
    """One stored generation to probe."""

    generation: GenerationRecord
    variant: PlannedVariant
    task: PlannedTask
    item: Item
    thinking: Thinking
    axis: TokenAxis
    truncated: bool

    @property
    def length(self) -> int:
        return len(self.axis)


@dataclass(frozen=True, eq=False)
class ProbeWork:
    key: str
    target: Target
    budget: int
    cue: str

    @property
    def used(self) -> int:
        return min(self.budget, self.target.length)

    @property
    def continuation(self) -> str:
        """What follows the prompt: the thinking cut after `used` tokens, closed, then the cue."""
        t = self.target
        prefix = t.thinking.text[: t.axis.chars_in(self.used)]
        return f"{t.thinking.head}{prefix}{THINK_CLOSE}{self.cue}"


def probe_key(generation_key: str, budget: int, cue: str, max_new_tokens: int,
              variant: PlannedVariant) -> str:
    identity = {"generation": generation_key, "budget": budget, "cue": cue,
                "max_new_tokens": max_new_tokens, "engine": variant.identity()}
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()


@dataclass
class ProbePlan:
    work: list[ProbeWork]
    traces: int = 0  # generations with thinking to probe
    without_thinking: int = 0
    without_item: int = 0  # generations whose item the spec no longer has
    budgets: dict[str, list[int]] = field(default_factory=dict)  # task label -> ladder


def targets_of(run: RunData, plan: Plan, tokenizers: Mapping[str, Tokenize | None],
               out: ProbePlan) -> list[Target]:
    variants = {v.label: v for v in plan.variants}
    tasks = {t.label: t for t in plan.tasks}
    items = {(t.label, i.index): i for t in plan.tasks for i in t.items}
    targets = []
    for stored in run.rows:
        g = stored.generation
        if stored.superseded or stored.score is None:
            continue
        variant, task = variants.get(g.variant), tasks.get(g.task)
        item = items.get((g.task, g.item_index))
        if variant is None or task is None or item is None or str(item.id) != g.item_id:
            out.without_item += 1
            continue
        thinking = thinking_of(g)
        if thinking is None:
            out.without_thinking += 1
            continue
        axis = token_axis(thinking.text, g.thinking_tokens, tokenizers.get(g.variant))
        truncated = g.truncated or not thinking.closed
        targets.append(Target(g, variant, task, item, thinking, axis, truncated))
    out.traces = len(targets)
    return targets


def plan_probes(run: RunData, plan: Plan, settings: ProbeSettings,
                tokenizers: Mapping[str, Tokenize | None]) -> ProbePlan:
    """Every probe the run's stored traces ask for (see the module docstring)."""
    out = ProbePlan([])
    targets = targets_of(run, plan, tokenizers, out)
    longest: dict[str, int] = defaultdict(int)
    for t in targets:
        longest[t.task.label] = max(longest[t.task.label], t.length)
    out.budgets = {task: ladder(n, settings) for task, n in longest.items()}
    for t in targets:
        cue = answer_cue(t.task.module, settings)
        budgets = [b for b in out.budgets[t.task.label] if b < t.length]
        if t.truncated and t.length > 0:
            budgets.append(t.length)  # the answer at the end of a trace that never finished
        for budget in budgets:
            key = probe_key(t.generation.key, budget, cue, settings.max_new_tokens, t.variant)
            out.work.append(ProbeWork(key, t, budget, cue))
    return out


# --- prompts, scores, records ---------------------------------------------------------------


def chat_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:  # Any: a HF tokenizer
    """Chat messages rendered by the template with the assistant's turn opened, as text the
    engine's tokenizer encodes back to the same ids (a BOS it adds itself is not doubled)."""
    text = str(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                             tokenize=False))
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        added = tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
        text = text[len(bos):] if added else text
    return text


def engine_prompt(work: ProbeWork, tokenizer: Any) -> str:  # Any: a HF tokenizer, or None
    g = work.target.generation
    prompt = g.prompt_text
    if prompt is None:
        if tokenizer is None:
            raise InputError(None, f"{g.variant}: probing a chat prompt needs the engine's "
                                   "tokenizer (use the hf engine)")
        prompt = chat_text(tokenizer, json.loads(g.prompt))
    return prompt + work.continuation


def score_probe(work: ProbeWork, output: str) -> ScoreRecord:
    """The one scoring path, on the probe read as a finished turn."""
    from crbench.scoring import score_generation

    t = work.target
    style = json.loads(t.generation.task_options or "{}").get("style")
    return score_generation(t.task.module, t.item, work.continuation + output,
                            prompt=t.generation.prompt_text, style=style, reasoning=None,
                            finish_reason="stop", key=work.key)


def probe_record(work: ProbeWork, gen: Generation, score: ScoreRecord, engine: str,
                 max_new_tokens: int) -> ProbeRecord:
    g = work.target.generation
    return ProbeRecord(
        key=work.key, generation_key=g.key, variant=g.variant, task=g.task,
        item_index=g.item_index, repeat=g.repeat, budget=work.budget, thinking_used=work.used,
        thinking_total=work.target.length, cue=work.cue, max_new_tokens=max_new_tokens,
        engine=engine, output=gen.text, new_tokens=int(gen.completion_tokens),
        finish_reason=gen.finish_reason, extracted=score.extracted, correct=score.correct,
        no_answer=score.no_answer, rule=score.rule, wall_s=float(gen.wall_s))


# --- running --------------------------------------------------------------------------------


@dataclass
class ProbeSummary:
    run_dir: Path
    planned: int = 0
    stored_before: int = 0
    made: int = 0
    raced: int = 0  # made here but stored first by another process
    failed: list[str] = field(default_factory=list)
    plan: ProbePlan | None = None

    def lines(self) -> list[str]:
        p = self.plan
        out = [f"run dir: {self.run_dir}"]
        if p is not None:
            out.append(f"traces: {p.traces} with thinking to probe"
                       + (f", {p.without_thinking} without thinking" if p.without_thinking
                          else "")
                       + (f", {p.without_item} not in the spec's items" if p.without_item
                          else ""))
            out += [f"budgets {task}: {', '.join(map(str, b)) or 'none'}"
                    for task, b in sorted(p.budgets.items())]
        out.append(f"probes: {self.planned} planned, {self.stored_before} already stored, "
                   f"{self.made} made now"
                   + (f", {self.raced} stored first by another process" if self.raced else ""))
        if self.failed:
            out.append(f"FAILED: {len(self.failed)} probes (re-run to retry them):")
            out += [f"  {line}" for line in self.failed[:20]]
        return out


def spec_of(run_dir: Path) -> Path:
    """The spec the run was made from (recorded in the store's meta by `crbench run`)."""
    from crbench.store import connect, get_meta

    conn = connect(run_dir, readonly=True)
    try:
        recorded = get_meta(conn, "spec_path")
    finally:
        conn.close()
    if not recorded:
        raise InputError(run_dir, "the store does not record its spec; pass --spec", "--spec")
    path = Path(recorded)
    if not path.is_file():
        raise InputError(path, "the run's spec file is not there any more; pass --spec",
                         "--spec")
    return path


def run_probes(run_dir: str | Path, settings: ProbeSettings, *, spec: str | Path | None = None,
               stream: TextIO | None = None) -> ProbeSummary:
    """Plan the run's probes and make the ones not stored yet (see the module docstring)."""
    from crbench.plan import build_plan
    from crbench.probe_store import stored_probe_keys
    from crbench.store import connect
    from crbench.store_read import read_run
    from crbench.thinking import variant_tokenizers

    run_dir = Path(run_dir)
    stream = stream or sys.stdout
    run = read_run(run_dir)
    plan = build_plan(Path(spec) if spec is not None else spec_of(run_dir), run_dir)
    probes = plan_probes(run, plan, settings, variant_tokenizers(run.variants))
    summary = ProbeSummary(run_dir, planned=len(probes.work), plan=probes)
    conn = connect(run_dir)  # for writing: an older store gets its probes table here
    try:
        stored = stored_probe_keys(conn, [w.key for w in probes.work])
        summary.stored_before = len(stored)
        for variant in plan.variants:
            pending = sorted((w for w in probes.work
                              if w.target.variant is variant and w.key not in stored),
                             key=lambda w: (w.target.generation.key, w.budget))
            if pending:
                print(f"probing {variant.label}: {len(pending)} probes", file=stream,
                      flush=True)
                probe_variant(plan, conn, variant, pending, settings, summary)
    finally:
        conn.close()
    return summary


def probe_variant(plan: Plan, conn: Store, variant: PlannedVariant, pending: Sequence[ProbeWork],
                  settings: ProbeSettings, summary: ProbeSummary) -> None:
    """The variant's model as the run made it, its engine made once, every pending probe."""
    from crbench.prepare import make_variant_engine, prepare_variant

    prepared = prepare_variant(plan, variant)
    engine = make_variant_engine(plan, variant, prepared.model_path)
    try:
        chunk_size = max(1, int(variant.model.options.get("batch_size", 8))) * CHUNK_BATCHES
        for start in range(0, len(pending), chunk_size):
            probe_chunk(conn, engine, variant, list(pending[start : start + chunk_size]),
                        settings, summary)
    finally:
        engine.close()


def probe_chunk(conn: Store, engine: Engine, variant: PlannedVariant, chunk: list[ProbeWork],
                settings: ProbeSettings, summary: ProbeSummary) -> None:
    from crbench.probe_store import insert_probe, stored_probe_keys
    from crbench.runner import engine_results

    done_elsewhere = stored_probe_keys(conn, [w.key for w in chunk])
    summary.raced += len(done_elsewhere)
    chunk = [w for w in chunk if w.key not in done_elsewhere]
    tokenizer = getattr(engine, "tokenizer", None)
    prompts: list[str | list[dict[str, str]]] = [engine_prompt(w, tokenizer) for w in chunk]
    params = SamplingParams(temperature=0.0, max_new_tokens=settings.max_new_tokens)
    for index, result in engine_results(engine, prompts, params):
        work = chunk[index]
        if isinstance(result, BaseException):
            g = work.target.generation
            summary.failed.append(f"{g.variant} / {g.task} item {g.item_index} repeat "
                                  f"{g.repeat} at {work.budget}: {type(result).__name__}: "
                                  f"{result}"[:500])
            continue
        score = score_probe(work, result.text)
        record = probe_record(work, result, score, variant.model.engine, settings.max_new_tokens)
        if insert_probe(conn, record):
            summary.made += 1
        else:
            summary.raced += 1
