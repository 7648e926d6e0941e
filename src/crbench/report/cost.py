"""Section "Cost per correct answer": tokens and seconds spent per correct answer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crbench import analysis as an
from crbench.report.context import ReportContext
from crbench.report.document import Column, Plot, Section, Table, col, make_table, shown
from crbench.report.figures import Figures
from crbench.report.fmt import num
from crbench.report.results import ResultSet, TaskInfo

if TYPE_CHECKING:
    from matplotlib.axes import Axes

TITLE = "Cost per correct answer"
NOTE = ("All completion tokens (and generation seconds, as the engine reported them) spent "
        "on a task, divided by the number of correct answers; ∞ when none is correct.")


@dataclass(frozen=True)
class CostRow:
    variant: str
    title: str  # the task's title, or "all tasks"
    label: str  # the task's label, or "all"
    profile: an.ComputeProfile


def cost_rows(r: ResultSet) -> list[CostRow]:
    out = []
    for name in r.with_data:
        groups = [(t.title, t.label, r.cells[(name, t.label)].samples) for t in r.tasks
                  if (name, t.label) in r.cells]
        groups.append(("all tasks", "all", [s for _, _, ss in groups for s in ss]))
        out += [CostRow(name, title, label, an.compute_profile(ss))
                for title, label, ss in groups]
    return out


def build_cost(r: ResultSet) -> Table:
    columns: list[Column[CostRow]] = [
        col("variant", "variant", lambda x: x.variant),
        col("task", "task", lambda x: x, lambda x: x.title, lambda x: (x.label,)),
        col("samples", "samples", lambda x: x.profile.n),
        col("correct", "correct", lambda x: x.profile.correct),
        col("tokens per correct", "tokens_per_correct", lambda x: x.profile.tokens_per_correct,
            num),
        col("seconds per correct", "seconds_per_correct",
            lambda x: x.profile.seconds_per_correct, lambda v: num(v, 2)),
    ]
    return make_table("cost", TITLE, columns, cost_rows(r), NOTE)


def draw_cost(figs: Figures) -> Plot | None:
    r = figs.results

    def draw(ax: Axes, t: TaskInfo, names: list[str]) -> None:
        vals = [an.compute_profile(c.samples).tokens_per_correct
                if (c := r.cell(n, t.label)) else math.nan for n in names]
        finite = [v for v in vals if math.isfinite(v)]
        for i, v in enumerate(vals):
            if math.isinf(v):
                ax.text(0, i, " none correct", va="center", fontsize=7, color="grey")
            elif not math.isnan(v):
                ax.barh(i, v, color=figs.colour[names[i]])
        ax.set_xlim(0, max(finite) * 1.1 if finite else 1.0)

    return figs.per_task("cost", "Tokens per correct answer",
                         "All completion tokens spent on a task divided by its correct "
                         "answers.", draw, "tokens per correct answer")


def build(ctx: ReportContext) -> Section:
    return Section(TITLE, "", shown(build_cost(ctx.results), ctx.figure(draw_cost)))
