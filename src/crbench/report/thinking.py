"""Section "Thinking": what compression does to thinking, from the stored traces alone
(`crbench.thinking_summary`; docs/thinking.md explains each measure and its source)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

from crbench.report.context import ReportContext
from crbench.report.document import Column, Plot, Section, Table, col, make_table, shown
from crbench.report.figures import Figures, mpl_text
from crbench.report.fmt import CsvValue, num, pct, scaled
from crbench.report.render import slug
from crbench.report.results import ResultSet
from crbench.thinking_summary import (
    BudgetPoint,
    FirstCorrectRow,
    HesitationRow,
    LengthPoint,
    LoopRow,
    ThinkingAnalysis,
    analyse_run,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

TITLE = "Thinking"
BINS = 10  # first-correct histogram: tenths of the trace


def intro(a: ThinkingAnalysis) -> str:
    unit = ("tokens of each model's tokenizer" if a.exact_tokens else
            "tokens (where no tokenizer was found: the stored token count spread evenly over "
            "the characters)")
    text = ("From the stored traces, no new generations. The trace is the thinking, or the "
            "whole output of a generation that does not think. Positions and budgets count "
            f"{unit}. See docs/thinking.md for each measure and its source. The trace browser "
            "(`crbench browse RUN_DIR`) shows every trace with these marks.")
    if a.problems:
        text += (" Budget and first-correct readings are left out where a task's items could not "
                 "be loaded: " + "; ".join(a.problems) + ".")
    return text


# --- accuracy at thinking budgets ----------------------------------------------------------


def budget_column(budget: int, *, last: bool) -> Column[list[BudgetPoint]]:
    def at(row: list[BudgetPoint]) -> BudgetPoint | None:
        return next((p for p in row if p.budget == budget), None)

    def csv(p: BudgetPoint | None) -> tuple[CsvValue, ...]:
        if p is None:
            return ("", "", "", "")
        return scaled(p.accuracy), scaled(p.lo), scaled(p.hi), scaled(p.cut)

    return col(f"≤{budget}" + (" (all)" if last else ""),
               [f"acc_{budget}", f"lo_{budget}", f"hi_{budget}", f"cut_{budget}"], at,
               lambda p: pct(p.accuracy) if p else "", csv)


def budget_tables(a: ThinkingAnalysis, r: ResultSet) -> list[Table]:
    tables = []
    for i, task in enumerate(r.tasks):
        points = [p for p in a.curves if p.task == task.label]
        if not points:
            continue
        budgets = sorted({p.budget for p in points})
        rows = [[p for p in points if p.variant == v] for v in r.with_data]
        rows = [sorted(row, key=lambda p: p.budget) for row in rows if row]
        columns: list[Column[list[BudgetPoint]]] = [
            col("variant", "variant", lambda row: row[0].variant),
            col("parent", "parent", lambda row: a.parents.get(row[0].variant, "")),
            col("questions", "questions", lambda row: row[0].n_questions),
        ]
        columns += [budget_column(b, last=k == len(budgets) - 1) for k, b in enumerate(budgets)]
        note = ("Accuracy (%) when each trace is cut after B tokens and read as an unfinished "
                "output by the task's scorer (only an explicit answer in the tail counts); "
                "traces no longer than B are read whole. 95% bootstrap intervals and the share "
                "of traces cut at each B are in the CSV.")
        tables.append(make_table(f"thinking_budget_{i + 1}_{slug(task.label)}",
                                 f"Accuracy at thinking budgets: {task.title}", columns, rows,
                                 note))
    return tables


def draw_budgets(figs: Figures, a: ThinkingAnalysis) -> Plot | None:
    r = figs.results
    tasks = [t for t in r.tasks if any(p.task == t.label for p in a.curves)]
    if not tasks:
        return None
    with figs.style():
        fig, axes = figs.new(len(tasks), width=3.4, sharey=True)
        for ax, task in zip(axes, tasks, strict=False):
            for name in r.with_data:
                pts = sorted((p for p in a.curves if p.task == task.label and p.variant == name),
                             key=lambda p: p.budget)
                if not pts:
                    continue
                x = [max(p.budget, 1) for p in pts]
                colour = figs.colour[name]
                ax.fill_between(x, [100 * p.lo for p in pts], [100 * p.hi for p in pts],
                                color=colour, alpha=0.12, linewidth=0)
                ax.plot(x, [100 * p.accuracy for p in pts], color=colour, marker="o",
                        markersize=3, label=mpl_text(name))
            ax.set_xscale("log", base=2)
            ax.set_ylim(-3, 103)
            ax.set_title(mpl_text(task.title))
            ax.set_xlabel("thinking budget (tokens)")
        axes[0].set_ylabel("accuracy (%)")
        axes[0].legend(loc="upper left", fontsize=7)
    return figs.save(fig, "thinking_budget", "Accuracy against thinking budget",
                     "Each trace cut after B tokens and read as unfinished; the last point of "
                     "each task reads every trace whole. Shaded: 95% bootstrap interval.")


# --- first correct answer, abandoned-correct -----------------------------------------------


def histogram(positions: Sequence[float]) -> tuple[int, ...]:
    counts = [0] * BINS
    for x in positions:
        counts[min(int(x * BINS), BINS - 1)] += 1
    return tuple(counts)


def first_table(a: ThinkingAnalysis, r: ResultSet) -> Table:
    order = {t.label: i for i, t in enumerate(r.tasks)}
    rank = {v: i for i, v in enumerate(r.with_data)}
    rows = sorted(a.first, key=lambda x: (rank.get(x.variant, len(rank)), order.get(x.task, 0)))
    bins = [f"first_at_{10 * k}_{10 * (k + 1)}pct" for k in range(BINS)]
    columns: list[Column[FirstCorrectRow]] = [
        col("variant", "variant", lambda x: x.variant),
        col("parent", "parent", lambda x: a.parents.get(x.variant, "")),
        col("task", "task", lambda x: x.task),
        col("traces", "traces", lambda x: x.traces),
        col("states answer %", "states_answer_pct",
            lambda x: x.stated / x.traces if x.traces else math.nan, pct, lambda v: (scaled(v),)),
        col("median first at %", "median_first_pct",
            lambda x: statistics.median(x.positions) if x.positions else math.nan, pct,
            lambda v: (scaled(v),)),
        col("overthinking %", "overthinking_pct", lambda x: x.overthinking, pct,
            lambda v: (scaled(v),)),
        col("tokens after", "tokens_after", lambda x: x.tokens_after, num),
        col("wrong", "wrong", lambda x: x.wrong),
        col("abandoned", "abandoned", lambda x: x.abandoned),
        col("of them truncated", "abandoned_truncated", lambda x: x.abandoned_truncated),
        col("abandoned % of wrong", "abandoned_pct_of_wrong", lambda x: x.abandoned_rate, pct,
            lambda v: (scaled(v),)),
        col(None, bins, lambda x: histogram(x.positions), str, lambda h: h),
    ]
    note = ("First correct: the first sentence or line of the trace that the task's scorer, "
            "reading it alone, takes for the reference answer; its position is in % of the "
            "trace's tokens. Overthinking: share of the trace after it (traces that state it). "
            "Abandoned: wrong final answers whose trace had stated the right one (truncated: of "
            "those, the ones the token limit cut off rather than finished). The CSV "
            "holds the histogram of first-correct positions in tenths of the trace.")
    return make_table("thinking_first_correct", "First correct answer and abandoned answers",
                      columns, rows, note)


def draw_first(figs: Figures, a: ThinkingAnalysis) -> Plot | None:
    r = figs.results
    tasks = [t for t in r.tasks if any(x.task == t.label and x.positions for x in a.first)]
    names = [v for v in r.with_data if any(x.variant == v and x.positions for x in a.first)]
    if not tasks:
        return None
    by_cell = {(x.variant, x.task): x for x in a.first}
    from matplotlib.ticker import MaxNLocator

    with figs.style():
        fig, axes = figs.new(len(tasks) * len(names), width=2.2, height=1.2, nrows=len(names),
                             sharey=False)
        for i, name in enumerate(names):
            for j, task in enumerate(tasks):
                ax: Axes = axes[i * len(tasks) + j]
                row = by_cell.get((name, task.label))
                counts = histogram(row.positions) if row else (0,) * BINS
                ax.bar([10 * k + 5 for k in range(BINS)], counts, width=9,
                       color=figs.colour[name])
                ax.set_xlim(0, 100)
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
                if i == 0:
                    ax.set_title(mpl_text(task.title))
                if j == 0:
                    ax.set_ylabel(mpl_text(name, 18), fontsize=7)
                if i == len(names) - 1:
                    ax.set_xlabel("first correct at (% of trace)")
    return figs.save(fig, "thinking_first_correct", "Where the right answer first appears",
                     "Histogram of the first-correct position (in % of the trace's tokens), "
                     "one row per variant, one column per task; traces that never state the "
                     "reference answer are not counted.")


# --- hesitation and loops ------------------------------------------------------------------


def marker_column(marker: str) -> Column[HesitationRow]:
    def rate(x: HesitationRow) -> float:
        return 1000 * x.counts.get(marker, 0) / x.tokens if x.tokens else math.nan

    return col(f"{marker} /1k", f"{slug(marker).replace('-', '_')}_per_1k", rate,
               lambda v: num(v, 1))


def hesitation_table(a: ThinkingAnalysis, r: ResultSet) -> Table:
    loops = {(x.variant, x.task): x for x in a.loops}
    order = {t.label: i for i, t in enumerate(r.tasks)}
    rank = {v: i for i, v in enumerate(r.with_data)}
    rows = sorted(a.hesitation,
                  key=lambda x: (rank.get(x.variant, len(rank)), order.get(x.task, 0)))

    def loop(x: HesitationRow) -> LoopRow:
        return loops.get((x.variant, x.task), LoopRow(x.variant, x.task, 0, 0, math.nan))

    columns: list[Column[HesitationRow]] = [
        col("variant", "variant", lambda x: x.variant),
        col("task", "task", lambda x: x.task),
        col("traces", "traces", lambda x: x.traces),
        col("trace tokens", "trace_tokens", lambda x: x.tokens),
        col("markers /1k", "markers_per_1k", lambda x: x.per_1k, lambda v: num(v, 1)),
        *[marker_column(marker) for marker in a.markers],
        col("truncated", "truncated", lambda x: loop(x).truncated),
        col("ending in a loop %", "loop_pct", lambda x: loop(x).share, pct,
            lambda v: (scaled(v),)),
        col("loop period (words)", "loop_period_median", lambda x: loop(x).median_period, num),
    ]
    note = ("Hesitation markers (whole words, case-insensitive) per 1,000 stored trace tokens. "
            "Loops: truncated traces whose last words repeat with a fixed period (at least 3 "
            "repeats and 20 words); period: median words per repeated block.")
    return make_table("thinking_hesitation", "Hesitation markers and repetition loops",
                      columns, rows, note)


# --- length growth against accuracy change -------------------------------------------------


def length_table(a: ThinkingAnalysis) -> Table:
    columns: list[Column[LengthPoint]] = [
        col("variant", "variant", lambda p: p.variant),
        col("parent", "parent", lambda p: p.parent),
        col("samples", "samples", lambda p: p.samples),
        col("tokens", "tokens", lambda p: p.tokens, num),
        col("parent tokens", "parent_tokens", lambda p: p.parent_tokens, num),
        col("length growth %", "growth_pct", lambda p: p.growth, pct, lambda v: (scaled(v),)),
        col("Δ acc pp", "accuracy_change_pp", lambda p: p.accuracy_change,
            lambda v: num(100 * v, 1), lambda v: (scaled(v),)),
    ]
    c = a.correlation
    rho = (f"Spearman ρ = {c.rho:.2f} (p = {c.p:.3g}, {c.n} variants)" if math.isfinite(c.rho)
           else f"Spearman ρ: not defined ({c.n} variants with a parent; needs 3 and some "
           "spread)")
    note = ("Each variant against its parent on the samples both have: mean completion "
            "tokens, relative growth, and accuracy change (all tasks pooled). " + rho + ".")
    return make_table("thinking_length", "Length growth against accuracy change", columns,
                      a.lengths, note)


def draw_length(figs: Figures, a: ThinkingAnalysis) -> Plot | None:
    points = [p for p in a.lengths if math.isfinite(p.growth)]
    if not points:
        return None
    with figs.style():
        fig, axes = figs.new(1, width=4.2, height=3.2)
        ax = axes[0]
        at: dict[tuple[float, float], list[str]] = {}  # variants on the same spot: one label
        for p in points:
            x, y = 100 * p.growth, 100 * p.accuracy_change
            ax.scatter(x, y, color=figs.colour[p.variant], s=24, zorder=3)
            at.setdefault((round(x, 6), round(y, 6)), []).append(mpl_text(p.variant, 20))
        for (x, y), names in at.items():
            ax.annotate(", ".join(names), (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.axhline(0, color="black", lw=0.6)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_xlabel("length growth vs parent (%)")
        ax.set_ylabel("accuracy change vs parent (pp)")
        c = a.correlation
        if math.isfinite(c.rho):
            ax.set_title(f"Spearman ρ = {c.rho:.2f} (n = {c.n})")
    return figs.save(fig, "thinking_length", "Length growth against accuracy change",
                     "One point per compressed variant, against its parent on the same "
                     "samples.")


def build(ctx: ReportContext) -> Section | None:
    r = ctx.results
    if not r.samples:
        return None
    a = analyse_run(r.run, n_boot=r.n_boot, seed=r.seed)
    if not a.facts:
        return None
    return Section(TITLE, intro(a), shown(
        *budget_tables(a, r), ctx.figure(lambda f: draw_budgets(f, a)),
        first_table(a, r), ctx.figure(lambda f: draw_first(f, a)),
        hesitation_table(a, r),
        length_table(a), ctx.figure(lambda f: draw_length(f, a)),
    ))
