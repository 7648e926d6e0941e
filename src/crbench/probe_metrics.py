"""What the stored forced-answer probes say, per (variant, task): pure functions of stored
generations and probes (`crbench.probes` makes them), no model calls.

    curves   probe accuracy at each budget B: a trace whose thinking is longer than B counts
             its probe at B; one no longer than B counts its own answer (the budget did not
             bind), or, when it was truncated, its probe at its full length. The last point,
             the task's longest thinking, reads every trace whole. Mean over questions with a
             two-level bootstrap 95% interval (`crbench.analysis.estimate`).
    s1       the three measures of s1 (arXiv 2501.19393, sec. 3.1) over a curve's points:
             Control = share of (trace, budget) evaluations whose thinking stayed within the
             budget (by construction 100% for probes; below it only if a tokenizer disagreed);
             Scaling = mean slope of accuracy against mean thinking tokens over all pairs of
             points (accuracy per 1,000 thinking tokens); Performance = best accuracy.
    dynasor  Dynasor's certainty stop (arXiv 2412.20993), simulated on the stored probes: walk
             each trace's probes in budget order and stop at the first one where the last m
             probes give the same (non-empty) answer; that answer and its budget stand for the
             trace. A trace that never stops keeps its own answer and length. Reported: accuracy
             of the full traces and with the stop rule (paired difference with its interval),
             thinking tokens saved, and saved once the probes' own new tokens are paid for.
             Faithful to Dynasor when the probes are evenly spaced (`crbench probe --every K`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from crbench.analysis import cell_seed, estimate, paired_difference, question_mean
from crbench.records import ProbeRecord, StoredGeneration

Cell = tuple[str, str]  # (variant, task label)


@dataclass(frozen=True)
class Outcome:
    """A stored generation as the probe metrics see it."""

    key: str
    variant: str
    task: str
    item_index: int
    repeat: int
    correct: bool
    truncated: bool
    thinking_tokens: int  # as stored (used only when the trace has no probes)

    @property
    def question(self) -> tuple[str, int]:
        return (self.task, self.item_index)


def outcomes_of(rows: Iterable[StoredGeneration]) -> list[Outcome]:
    """The scored, current generations of a run."""
    out = []
    for stored in rows:
        g, s = stored.generation, stored.score
        if stored.superseded or s is None:
            continue
        out.append(Outcome(g.key, g.variant, g.task, g.item_index, g.repeat, s.correct,
                           s.truncated or g.truncated, g.thinking_tokens))
    return out


@dataclass(frozen=True)
class Probed:
    """One trace with its probes: `at` maps a budget below the trace's length to its probe;
    `full` is the probe at its full length (truncated traces)."""

    outcome: Outcome
    length: int  # thinking tokens (the probes' tokenizer; else the stored count)
    at: dict[int, ProbeRecord]
    full: ProbeRecord | None

    def reading(self, budget: int) -> tuple[bool, int] | None:
        """(correct, thinking tokens used) at `budget`; None: not probed there (yet)."""
        if budget < self.length:
            probe = self.at.get(budget)
            return None if probe is None else (probe.correct, probe.thinking_used)
        if self.outcome.truncated:
            return None if self.full is None else (self.full.correct, self.length)
        return self.outcome.correct, self.length


def probed_traces(outcomes: Iterable[Outcome], probes: Iterable[ProbeRecord]) -> list[Probed]:
    """The traces of every (variant, task) cell that has probes, each with its probes."""
    by_generation: dict[str, list[ProbeRecord]] = defaultdict(list)
    for p in probes:
        by_generation[p.generation_key].append(p)
    cells = {(p.variant, p.task) for ps in by_generation.values() for p in ps}
    out = []
    for o in outcomes:
        if (o.variant, o.task) not in cells:
            continue
        mine = by_generation.get(o.key, [])
        length = mine[0].thinking_total if mine else o.thinking_tokens
        at = {p.budget: p for p in mine if p.budget < p.thinking_total}
        full = next((p for p in mine if p.thinking_used >= p.thinking_total), None)
        out.append(Probed(o, length, at, full))
    return out


def cells(traces: Iterable[Probed]) -> dict[Cell, list[Probed]]:
    grouped: dict[Cell, list[Probed]] = defaultdict(list)
    for t in traces:
        grouped[(t.outcome.variant, t.outcome.task)].append(t)
    return dict(sorted(grouped.items()))


# --- curves ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbePoint:
    variant: str
    task: str
    budget: int
    accuracy: float
    lo: float
    hi: float
    mean_tokens: float  # thinking tokens used, mean over the traces read here
    within: int  # evaluations whose thinking stayed within the budget
    n_questions: int
    n_samples: int
    last: bool = False  # the task's longest thinking: every trace read whole


def task_budgets(traces: Sequence[Probed]) -> dict[str, list[int]]:
    """Per task: every probed budget below a trace's length, then the longest thinking (shared
    by every variant, so their curves line up)."""
    budgets: dict[str, set[int]] = defaultdict(set)
    longest: dict[str, int] = defaultdict(int)
    for t in traces:
        budgets[t.outcome.task].update(t.at)
        longest[t.outcome.task] = max(longest[t.outcome.task], t.length)
    return {task: sorted(b for b in budgets[task] if b < n) + [n] for task, n in longest.items()}


def probe_curves(traces: Sequence[Probed], n_boot: int = 1000, seed: int = 0
                 ) -> list[ProbePoint]:
    ladders = task_budgets(traces)
    points = []
    for (variant, task), group in cells(traces).items():
        ladder = ladders[task]
        for budget in ladder:
            per_question: dict[Hashable, list[float]] = defaultdict(list)
            used, within = [], 0
            for t in sorted(group, key=lambda t: t.outcome.repeat):
                reading = t.reading(budget)
                if reading is None:
                    continue
                per_question[t.outcome.question].append(float(reading[0]))
                used.append(reading[1])
                within += reading[1] <= budget
            if not used:
                continue
            est = estimate(per_question, n_boot, cell_seed(seed, variant, task, str(budget)))
            points.append(ProbePoint(variant, task, budget, est.mean, est.lo, est.hi,
                                     sum(used) / len(used), within, est.n_questions,
                                     est.n_samples, last=budget == ladder[-1]))
    return points


# --- s1: Control, Scaling, Performance ------------------------------------------------------


@dataclass(frozen=True)
class S1Row:
    variant: str
    task: str
    control: float  # share of evaluations within budget
    scaling: float  # accuracy (fraction) per 1,000 thinking tokens; NaN with < 2 points
    performance: float  # best accuracy
    points: int


def s1_metrics(points: Sequence[ProbePoint]) -> S1Row:
    """s1's measures over one curve (all points of one variant on one task)."""
    if not points:
        raise ValueError("no points")
    evaluations = sum(p.n_samples for p in points)
    control = sum(p.within for p in points) / evaluations if evaluations else math.nan
    ordered = sorted(points, key=lambda p: p.mean_tokens)
    slopes = [(b.accuracy - a.accuracy) / (b.mean_tokens - a.mean_tokens)
              for a, b in combinations(ordered, 2) if b.mean_tokens > a.mean_tokens]
    scaling = 1000 * sum(slopes) / len(slopes) if slopes else math.nan
    return S1Row(points[0].variant, points[0].task, control, scaling,
                 max(p.accuracy for p in points), len(points))


def s1_rows(points: Sequence[ProbePoint]) -> list[S1Row]:
    grouped: dict[Cell, list[ProbePoint]] = defaultdict(list)
    for p in points:
        grouped[(p.variant, p.task)].append(p)
    return [s1_metrics(group) for _, group in sorted(grouped.items())]


# --- Dynasor: stop once the last m probes agree ---------------------------------------------


@dataclass(frozen=True)
class Stop:
    """Where the stop rule left one trace."""

    correct: bool
    tokens: int  # thinking tokens spent
    probe_tokens: int  # new tokens the probes consulted generated
    stopped: bool  # False: never certain, the whole trace was used


def stop_rule(trace: Probed, m: int) -> Stop:
    """Walk the trace's probes by budget; stop at the first whose last `m` answers agree."""
    probes = [trace.at[b] for b in sorted(trace.at)]
    paid = 0
    for i, probe in enumerate(probes):
        paid += probe.new_tokens
        recent = [p.extracted for p in probes[max(0, i - m + 1) : i + 1]]
        if len(recent) == m and recent[0] is not None and len(set(recent)) == 1:
            return Stop(probe.correct, probe.budget, paid, True)
    return Stop(trace.outcome.correct, trace.length, paid, False)


@dataclass(frozen=True)
class DynasorRow:
    variant: str
    task: str
    m: int
    traces: int
    stopped: int  # traces the rule stopped early
    accuracy_full: float
    accuracy_stop: float
    change: float  # stop - full, paired over questions
    change_lo: float
    change_hi: float
    tokens_full: int  # thinking tokens of the whole traces
    tokens_stop: int  # thinking tokens spent up to the stop
    probe_tokens: int  # new tokens the consulted probes generated

    @property
    def saved(self) -> float:
        return 1 - self.tokens_stop / self.tokens_full if self.tokens_full else math.nan

    @property
    def saved_with_probes(self) -> float:
        if not self.tokens_full:
            return math.nan
        return 1 - (self.tokens_stop + self.probe_tokens) / self.tokens_full


def dynasor_rows(traces: Sequence[Probed], ms: Sequence[int] = (2, 3), n_boot: int = 1000,
                 seed: int = 0) -> list[DynasorRow]:
    rows = []
    for (variant, task), group in cells(traces).items():
        for m in ms:
            full: dict[Hashable, list[float]] = defaultdict(list)
            stop: dict[Hashable, list[float]] = defaultdict(list)
            tokens_stop = probe_tokens = stopped = 0
            for t in sorted(group, key=lambda t: t.outcome.repeat):
                s = stop_rule(t, m)
                full[t.outcome.question].append(float(t.outcome.correct))
                stop[t.outcome.question].append(float(s.correct))
                tokens_stop += s.tokens
                probe_tokens += s.probe_tokens
                stopped += s.stopped
            diff = paired_difference(full, stop, n_boot, cell_seed(seed, variant, task, str(m)))
            rows.append(DynasorRow(variant, task, m, len(group), stopped, question_mean(full),
                                   question_mean(stop),
                                   diff.mean, diff.lo, diff.hi, sum(t.length for t in group),
                                   tokens_stop, probe_tokens))
    return rows


@dataclass
class ProbeAnalysis:
    traces: list[Probed]
    curves: list[ProbePoint]
    s1: list[S1Row]
    dynasor: list[DynasorRow]


def analyse_probes(rows: Iterable[StoredGeneration], probes: Iterable[ProbeRecord],
                   n_boot: int = 1000, seed: int = 0) -> ProbeAnalysis:
    traces = probed_traces(outcomes_of(rows), probes)
    curves = probe_curves(traces, n_boot, seed)
    return ProbeAnalysis(traces, curves, s1_rows(curves), dynasor_rows(traces, n_boot=n_boot,
                                                                        seed=seed))
