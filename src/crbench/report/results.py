"""The result model: what the report shows, computed once from what the store's reader gives.

`crbench.store.read_run` decides what the run is (the current plan's rows, newest per cell);
this module only turns those rows into samples, cells (one variant on one task) and estimates.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from crbench import analysis as an
from crbench.analysis import Estimate, Sample
from crbench.records import DENSE, FailureRecord, StoredGeneration, VariantRecord
from crbench.store import RunData, read_run

EMPTY = Estimate(math.nan, math.nan, math.nan, 0, 0)


@dataclass(frozen=True)
class TaskInfo:
    label: str  # the task's label in the spec, e.g. "musique_open"
    task_id: str  # its registry id, e.g. "musique"
    mode: str  # knowledge tasks: "closed" | "open"; "" otherwise

    @property
    def knowledge(self) -> bool:
        return an.is_knowledge(self.task_id)

    @property
    def title(self) -> str:
        return f"{self.task_id} ({self.mode}-book)" if self.knowledge else self.label


def book_mode(label: str, task_id: str, task_options: str) -> str:
    """Knowledge tasks: "open" or "closed" book, from the task's options (else its label)."""
    if not an.is_knowledge(task_id):
        return ""
    try:
        options = json.loads(task_options or "{}")
    except json.JSONDecodeError:
        options = {}
    mode = options.get("mode") if isinstance(options, dict) else None
    mode = str(mode or ("open" if "open" in label else "closed"))
    return "open" if mode.startswith("open") else "closed"


def task_order(task_id: str) -> int:
    """Tasks in the order of the task registry (unknown ids last)."""
    from crbench.tasks import TASK_MODULES

    ids = list(TASK_MODULES)
    return ids.index(task_id) if task_id in ids else len(ids)


def sample_of(row: StoredGeneration, mode: str) -> Sample:
    """A scored generation as the statistics see it (the row must have a score)."""
    g, s = row.generation, row.score
    assert s is not None
    text = g.output or ""
    if g.reasoning:
        text = f"{g.reasoning}\n\n[answer]\n{text}"
    return Sample(
        variant=g.variant, task=g.task, task_id=g.task_id, mode=mode, item=g.item_index,
        repeat=g.repeat, correct=s.correct, no_answer=s.no_answer,
        truncated=s.truncated or g.truncated, completion_tokens=g.completion_tokens,
        thinking_tokens=g.thinking_tokens, answer_tokens=g.answer_tokens, wall_s=g.wall_s,
        em=s.em, f1=s.f1, output=text,
    )


def order_variants(variants: Iterable[VariantRecord]) -> dict[str, VariantRecord]:
    """By base model; within it the dense model first, then each method's sweep from the
    least to the most compressed."""

    def key(v: VariantRecord) -> tuple[str, bool, str, float, float, str]:
        return (
            v.base_model,
            v.method != DENSE,
            v.kind,
            v.sparsity if v.sparsity is not None else -1.0,
            -(v.bits if v.bits is not None else an.DENSE_BITS),
            v.variant,
        )

    return {v.variant: v for v in sorted(variants, key=key)}


def score_value(s: Sample) -> float:
    """The per-sample score: exact match for knowledge tasks, correctness otherwise."""
    return float(s.em) if an.is_knowledge(s.task_id) and s.em is not None else float(s.correct)


@dataclass
class CellStats:
    """One variant on one task."""

    samples: list[Sample]
    score: Estimate  # accuracy, or EM for knowledge tasks
    f1: Estimate | None
    tokens: float  # mean completion tokens per question
    planned: int  # samples the run plans for this cell (0: unknown)
    max_n: int  # the most samples any variant has on this task

    @property
    def partial(self) -> bool:
        return self.score.n_samples < (self.planned or self.max_n)

    def n_text(self) -> str:
        return f"n={self.score.n_samples}/{self.planned or self.max_n}" if self.partial else ""


class ResultSet:
    """Everything the tables and figures show, computed once from one read of the store."""

    def __init__(self, run: RunData, n_boot: int = 2000, seed: int = 0):
        self.run, self.n_boot, self.seed = run, n_boot, seed
        self.path: Path = run.path
        self.planned: Counter[tuple[str, str]] = run.planned
        self.failures: list[FailureRecord] = run.failures
        self.unscored: Counter[tuple[str, str]] = Counter()
        self.samples: list[Sample] = []
        tasks: dict[str, TaskInfo] = {}
        described = dict(run.variants)
        for row in run.rows:
            g = row.generation
            if g.task not in tasks:
                tasks[g.task] = TaskInfo(g.task, g.task_id,
                                         book_mode(g.task, g.task_id, g.task_options))
            if g.variant not in described:  # generated before (or without) its variants row
                method = DENSE if g.variant == g.base_model else "unknown"
                described[g.variant] = VariantRecord(g.variant, g.base_model, method)
            if row.score is None:
                self.unscored[(g.variant, g.task)] += 1
            else:
                self.samples.append(sample_of(row, tasks[g.task].mode))
        self.variants = order_variants(described.values())
        self.tasks = sorted(tasks.values(), key=lambda t: (t.knowledge, task_order(t.task_id),
                                                           t.mode, t.label))
        self.reasoning = [t for t in self.tasks if not t.knowledge]
        self.cells = self._cells()
        # Variants with a sample or a planned cell, in display order.
        self.with_data = [v for v in self.variants
                          if any((v, t.label) in self.cells or self.planned[(v, t.label)]
                                 for t in self.tasks)]

    def _cells(self) -> dict[tuple[str, str], CellStats]:
        groups: dict[tuple[str, str], list[Sample]] = defaultdict(list)
        for s in self.samples:
            groups[(s.variant, s.task)].append(s)
        max_n: Counter[str] = Counter()
        for (_, task), ss in groups.items():
            max_n[task] = max(max_n[task], len(ss))
        cells = {}
        for (variant, task), ss in groups.items():
            seed = an.cell_seed(self.seed, variant, task)
            f1 = None
            if an.is_knowledge(ss[0].task_id) and any(s.f1 is not None for s in ss):
                f1 = an.estimate(an.by_question(ss, lambda s: float(s.f1 or 0.0)), self.n_boot,
                                 seed + 1)
            cells[(variant, task)] = CellStats(
                samples=ss,
                score=an.estimate(an.by_question(ss, score_value), self.n_boot, seed),
                f1=f1,
                tokens=an.question_mean(an.by_question(ss, lambda s: s.completion_tokens)),
                planned=self.planned.get((variant, task), 0),
                max_n=max_n[task],
            )
        return cells

    @property
    def superseded(self) -> int:
        return self.run.superseded

    def cell(self, variant: str, task: str) -> CellStats | None:
        return self.cells.get((variant, task))

    def cells_in_order(self) -> list[tuple[str, TaskInfo, CellStats]]:
        """(variant, task, cell) for every cell with samples, in display order."""
        return [(v, t, self.cells[(v, t.label)]) for v in self.with_data for t in self.tasks
                if (v, t.label) in self.cells]

    def average(self, variant: str) -> Estimate:
        """The headline average: over every reasoning task of the run; needs all of them."""
        cells = [self.cell(variant, t.label) for t in self.reasoning]
        scores = [c.score for c in cells if c is not None]
        if not cells or len(scores) < len(cells):
            return EMPTY
        return an.average_estimate(scores)

    def parent(self, variant: str) -> VariantRecord | None:
        return an.parent_of(self.variants[variant], self.variants)

    def pairs(self) -> list[tuple[VariantRecord, VariantRecord, TaskInfo]]:
        """(parent, child, task) for every variant with a parent and a task both have
        samples on."""
        out = []
        for name in self.with_data:
            parent = self.parent(name)
            if parent is None:
                continue
            for t in self.tasks:
                if self.cell(name, t.label) and self.cell(parent.variant, t.label):
                    out.append((parent, self.variants[name], t))
        return out


def load_results(run_dir: str | Path, n_boot: int = 2000, seed: int = 0) -> ResultSet:
    """Read the run through the store's one reader (read-only) and compute the result set."""
    return ResultSet(read_run(run_dir), n_boot, seed)
