"""What compression does to thinking, per variant and paired with its parent, from stored traces.

No model calls: every number here comes from the stored outputs, re-read by the tasks'
scorers (`crbench.thinking` says how a trace is read at a budget and where its first correct
statement is, and makes traces of a run's rows). `analyse` computes everything the report's
"Thinking" section and the trace browser show, as one `ThinkingAnalysis`:

    facts        one `TraceFacts` per trace: length, first correct position, markers, loop
    curves       accuracy at each thinking budget, per (variant, task), bootstrap 95% intervals
                 (`crbench.analysis.estimate`: questions, then repeats, resampled)
    first        per (variant, task): how often and where the right answer first appears,
                 overthinking share, abandoned-correct rate
    hesitation   per (variant, task): hesitation markers per 1,000 trace tokens
    loops        per (variant, task): truncated traces that end in a repetition loop
    lengths      per variant with a parent: length growth against accuracy change on the
                 samples both have; Spearman's rho across variants (scipy)
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scipy import stats

from crbench.analysis import cell_seed, estimate, parent_of
from crbench.cues import DEFAULT_CUES, CueSet
from crbench.records import VariantRecord
from crbench.thinking import (
    FirstCorrect,
    Loop,
    TokenAxis,
    Tokenize,
    Trace,
    correct_at_budget,
    default_budgets,
    first_correct,
    load_traces,
    loop_at_end,
    mean,
    per_thousand,
    token_axis,
    variant_tokenizers,
)

if TYPE_CHECKING:
    from crbench.store_read import RunData

Cell = tuple[str, str]  # (variant, task label)


# --- per trace -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceFacts:
    """What one trace shows; `first` is None when the right answer is never stated (or the
    item is unknown: `readable` False)."""

    trace: Trace
    axis: TokenAxis
    readable: bool
    first: FirstCorrect | None
    markers: Counter[str]
    loop: Loop | None  # only for truncated traces

    @property
    def abandoned(self) -> bool:
        return self.readable and not self.trace.correct and self.first is not None


def trace_facts(trace: Trace, tokenize: Tokenize | None, cues: CueSet = DEFAULT_CUES
                ) -> TraceFacts:
    axis = token_axis(trace.trace, trace.trace_tokens, tokenize)
    return TraceFacts(trace, axis, trace.read is not None, first_correct(trace, axis),
                      cues.marker_counts(trace.trace),
                      loop_at_end(trace.trace) if trace.truncated else None)


# --- per cell ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetPoint:
    variant: str
    task: str
    budget: int  # trace tokens
    accuracy: float
    lo: float
    hi: float
    cut: float  # share of the traces longer than the budget (cut there)
    n_questions: int
    n_samples: int


@dataclass(frozen=True)
class FirstCorrectRow:
    variant: str
    task: str
    traces: int  # with item data
    stated: int  # traces that state the right answer somewhere
    wrong: int  # wrong final answers
    abandoned: int  # wrong final answers whose trace had stated the right one
    abandoned_truncated: int  # of those, traces cut off by the token limit (or never closed)
    overthinking: float  # mean share of trace tokens after the first correct statement
    tokens_after: float  # mean tokens after it
    positions: tuple[float, ...]  # first correct position / trace length, per stating trace

    @property
    def abandoned_rate(self) -> float:
        return self.abandoned / self.wrong if self.wrong else math.nan


@dataclass(frozen=True)
class HesitationRow:
    variant: str
    task: str
    traces: int
    tokens: int  # stored trace tokens
    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def per_1k(self) -> float:
        return per_thousand(self.total, self.tokens)


@dataclass(frozen=True)
class LoopRow:
    variant: str
    task: str
    truncated: int
    looping: int
    median_period: float  # words per repeated block, over the looping traces

    @property
    def share(self) -> float:
        return self.looping / self.truncated if self.truncated else math.nan


@dataclass(frozen=True)
class LengthPoint:
    """A variant against its parent on the samples both have."""

    variant: str
    parent: str
    samples: int
    tokens: float  # mean completion tokens of the variant
    parent_tokens: float
    accuracy: float
    parent_accuracy: float

    @property
    def growth(self) -> float:
        """Relative length growth: variant / parent - 1."""
        return self.tokens / self.parent_tokens - 1 if self.parent_tokens else math.nan

    @property
    def accuracy_change(self) -> float:
        return self.accuracy - self.parent_accuracy


@dataclass(frozen=True)
class Correlation:
    rho: float
    p: float
    n: int


@dataclass
class ThinkingAnalysis:
    facts: list[TraceFacts]
    curves: list[BudgetPoint]
    first: list[FirstCorrectRow]
    hesitation: list[HesitationRow]
    loops: list[LoopRow]
    lengths: list[LengthPoint]
    correlation: Correlation
    parents: dict[str, str]  # variant -> the variant it is paired with
    exact_tokens: bool  # every axis came from a tokenizer (else some used the proxy)
    markers: tuple[str, ...] = DEFAULT_CUES.marker_names
    problems: list[str] = field(default_factory=list)


def cells(facts: Iterable[TraceFacts]) -> dict[Cell, list[TraceFacts]]:
    grouped: dict[Cell, list[TraceFacts]] = defaultdict(list)
    for fact in facts:
        grouped[(fact.trace.variant, fact.trace.task)].append(fact)
    return dict(sorted(grouped.items()))


def budget_curves(facts: Sequence[TraceFacts], budgets: Mapping[str, Sequence[int]] | None = None,
                  n_boot: int = 1000, seed: int = 0) -> list[BudgetPoint]:
    """Accuracy at each budget per (variant, task); budgets per task (default: powers of two up
    to the task's longest trace, shared by every variant so their curves line up)."""
    readable = [f for f in facts if f.readable]
    if budgets is None:
        longest: dict[str, int] = defaultdict(int)
        for f in readable:
            longest[f.trace.task] = max(longest[f.trace.task], len(f.axis))
        budgets = {task: default_budgets(n) for task, n in longest.items()}
    points = []
    for (variant, task), group in cells(readable).items():
        for budget in budgets.get(task, ()):
            per_question: dict[Hashable, list[float]] = defaultdict(list)
            for f in sorted(group, key=lambda f: f.trace.repeat):
                per_question[f.trace.question].append(
                    float(bool(correct_at_budget(f.trace, f.axis, budget))))
            est = estimate(per_question, n_boot, cell_seed(seed, variant, task, str(budget)))
            cut = sum(len(f.axis) > budget for f in group) / len(group)
            points.append(BudgetPoint(variant, task, budget, est.mean, est.lo, est.hi, cut,
                                      est.n_questions, est.n_samples))
    return points


def first_correct_rows(facts: Sequence[TraceFacts]) -> list[FirstCorrectRow]:
    rows = []
    for (variant, task), group in cells(f for f in facts if f.readable).items():
        stating = [f.first for f in group if f.first is not None]
        rows.append(FirstCorrectRow(
            variant, task, len(group), len(stating),
            wrong=sum(not f.trace.correct for f in group),
            abandoned=sum(f.abandoned for f in group),
            abandoned_truncated=sum(f.abandoned and f.trace.truncated for f in group),
            overthinking=mean([s.overthinking_share for s in stating]),
            tokens_after=mean([float(s.after) for s in stating]),
            positions=tuple(s.token / s.trace_tokens if s.trace_tokens else 0.0
                            for s in stating),
        ))
    return rows


def hesitation_rows(facts: Sequence[TraceFacts]) -> list[HesitationRow]:
    rows = []
    for (variant, task), group in cells(facts).items():
        counts: Counter[str] = Counter()
        for f in group:
            counts.update(f.markers)
        tokens = sum(f.trace.trace_tokens for f in group)
        rows.append(HesitationRow(variant, task, len(group), tokens, dict(counts)))
    return rows


def loop_rows(facts: Sequence[TraceFacts]) -> list[LoopRow]:
    rows = []
    for (variant, task), group in cells(facts).items():
        truncated = [f for f in group if f.trace.truncated]
        periods = sorted(f.loop.period for f in truncated if f.loop is not None)
        median = float(stats.scoreatpercentile(periods, 50)) if periods else math.nan
        rows.append(LoopRow(variant, task, len(truncated), len(periods), median))
    return rows


def length_points(facts: Sequence[TraceFacts], parents: Mapping[str, str]
                  ) -> list[LengthPoint]:
    """Each variant with a parent against it, over the (task, item, repeat) samples both have."""
    by_sample: dict[str, dict[tuple[str, int, int], Trace]] = defaultdict(dict)
    for f in facts:
        t = f.trace
        by_sample[t.variant][(t.task, t.item_index, t.repeat)] = t
    points = []
    for variant, parent in sorted(parents.items()):
        mine, theirs = by_sample.get(variant, {}), by_sample.get(parent, {})
        shared = sorted(set(mine) & set(theirs))
        if not shared:
            continue
        mine_s, theirs_s = [mine[s] for s in shared], [theirs[s] for s in shared]
        points.append(LengthPoint(
            variant, parent, len(shared),
            mean([float(t.completion_tokens) for t in mine_s]),
            mean([float(t.completion_tokens) for t in theirs_s]),
            mean([float(t.correct) for t in mine_s]), mean([float(t.correct) for t in theirs_s])))
    return points


def spearman(points: Sequence[LengthPoint]) -> Correlation:
    """Spearman's rho of length growth against accuracy change (NaN below 3 usable points or
    when either is constant)."""
    usable = [p for p in points if math.isfinite(p.growth) and math.isfinite(p.accuracy_change)]
    xs, ys = [p.growth for p in usable], [p.accuracy_change for p in usable]
    if len(usable) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return Correlation(math.nan, math.nan, len(usable))
    result = stats.spearmanr(xs, ys)
    return Correlation(float(result.statistic), float(result.pvalue), len(usable))


def pairing(variants: Mapping[str, VariantRecord], present: Iterable[str]) -> dict[str, str]:
    """variant -> its parent, for the variants present whose parent is present too."""
    names = set(present)
    pairs = {}
    for name in sorted(names):
        if name in variants:
            parent = parent_of(variants[name], variants)
            if parent is not None and parent.variant in names and parent.variant != name:
                pairs[name] = parent.variant
    return pairs


def analyse(traces: Sequence[Trace], variants: Mapping[str, VariantRecord],
            tokenizers: Mapping[str, Tokenize | None] | None = None, *,
            budgets: Mapping[str, Sequence[int]] | None = None, cues: CueSet = DEFAULT_CUES,
            n_boot: int = 1000, seed: int = 0) -> ThinkingAnalysis:
    tokenizers = tokenizers or {}
    facts = [trace_facts(t, tokenizers.get(t.variant), cues) for t in traces]
    parents = pairing(variants, {t.variant for t in traces})
    lengths = length_points(facts, parents)
    return ThinkingAnalysis(
        facts=facts, curves=budget_curves(facts, budgets, n_boot, seed),
        first=first_correct_rows(facts), hesitation=hesitation_rows(facts),
        loops=loop_rows(facts), lengths=lengths, correlation=spearman(lengths), parents=parents,
        exact_tokens=all(f.axis.exact for f in facts if f.axis.ends),
        markers=cues.marker_names)


def analyse_run(run: RunData, *, tokenizers: bool = True, cues: CueSet = DEFAULT_CUES,
                budgets: Mapping[str, Sequence[int]] | None = None, n_boot: int = 1000,
                seed: int = 0) -> ThinkingAnalysis:
    """Everything above for a run as `crbench.store.read_run` reads it. `tokenizers` False
    counts positions with the character proxy even where a model folder has a tokenizer;
    `budgets` per task label (None: the default grid; {}: no budget curves)."""
    traces, problems = load_traces(run.rows)
    found = variant_tokenizers(run.variants) if tokenizers else {}
    result = analyse(traces, run.variants, found, budgets=budgets, cues=cues, n_boot=n_boot,
                     seed=seed)
    result.problems = problems
    return result
