"""Section "Accuracy by level and subject": each variant's accuracy within groups of questions,
for every task that records what groups its questions fall in.

A task names the fields in its `BREAKDOWN` (math500: subject, level; gpqa_diamond: domain,
subdomain) and its scorer copies them into every score's `details`; this section reads them from
the stored scores alone, so any task that does the same gets its breakdown with no change here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass

from crbench import analysis as an
from crbench.analysis import Estimate
from crbench.errors import InputError
from crbench.records import StoredGeneration
from crbench.report.context import ReportContext
from crbench.report.document import Column, Plot, Section, Table, col, make_table, shown
from crbench.report.figures import Figures, mpl_text
from crbench.report.fmt import estimate_fields, with_ci
from crbench.report.render import slug
from crbench.report.results import EMPTY, ResultSet, TaskInfo

TITLE = "Accuracy by level and subject"
TEXT = (
    "Accuracy of each variant within the groups of questions a task records (MATH-500: level "
    "and subject; GPQA-Diamond: domain and subdomain), in % with a 95% bootstrap interval "
    "(questions, and samples within them, resampled inside the group). Groups are smaller "
    "than the task: their intervals are wider than in the main table."
)
GroupValue = str | int | float  # a level, a subject, ...


@dataclass(frozen=True)
class Group:
    value: GroupValue
    n_questions: int  # questions of the group that any variant answered
    accuracy: dict[str, Estimate]  # variant -> accuracy within the group


@dataclass(frozen=True)
class Breakdown:
    task: TaskInfo
    field: str
    groups: list[Group]


def breakdown_fields(task_id: str) -> tuple[str, ...]:
    """The fields a task breaks its accuracy down by (none for a task the registry lacks)."""
    from crbench.tasks import get_task

    try:
        module = get_task(task_id)
    except InputError:
        return ()
    return tuple(str(name) for name in getattr(module, "BREAKDOWN", ()))


def group_value(row: StoredGeneration, name: str) -> GroupValue | None:
    """The group a scored row falls in (None: not recorded, or not a single value)."""
    value = row.score.details.get(name) if row.score is not None else None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
        return None
    return value


def order(value: GroupValue) -> tuple[int, float, str]:
    """Numbers (levels) in numeric order, then texts (subjects) alphabetically."""
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    return (1, 0.0, value)


def score_value(row: StoredGeneration) -> float:
    """Exact match for knowledge tasks, correctness otherwise (as the main table counts)."""
    s = row.score
    assert s is not None
    knowledge = an.is_knowledge(row.generation.task_id)
    return float(s.em) if knowledge and s.em is not None else float(s.correct)


def breakdown(r: ResultSet, task: TaskInfo, name: str) -> Breakdown:
    # group -> variant -> item -> [(sample number, score)]
    found: dict[GroupValue, dict[str, dict[int, list[tuple[int, float]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for row in r.run.rows:
        g = row.generation
        value = group_value(row, name) if g.task == task.label else None
        if value is not None:
            found[value][g.variant][g.item_index].append((g.repeat, score_value(row)))
    groups = []
    for value in sorted(found, key=order):
        accuracy = {}
        for variant, items in found[value].items():
            per_question: dict[Hashable, list[float]] = {
                i: [v for _, v in sorted(vals)] for i, vals in items.items()}
            seed = an.cell_seed(r.seed, variant, task.label, name, str(value))
            accuracy[variant] = an.estimate(per_question, r.n_boot, seed)
        n_questions = len({i for items in found[value].values() for i in items})
        groups.append(Group(value, n_questions, accuracy))
    return Breakdown(task, name, groups)


def breakdowns(r: ResultSet) -> list[Breakdown]:
    """Every (task, field) with at least one scored row that records the field."""
    out = []
    for task in r.tasks:
        for name in breakdown_fields(task.task_id):
            b = breakdown(r, task, name)
            if b.groups:
                out.append(b)
    return out


def variant_column(variant: str) -> Column[Group]:
    return col(f"{variant} %", [f"{variant}_{part}" for part in ("pct", "lo", "hi")],
               lambda g: g.accuracy.get(variant, EMPTY), with_ci, estimate_fields)


def build_breakdown(r: ResultSet, b: Breakdown, number: int) -> Table:
    variants = [v for v in r.with_data if any(v in g.accuracy for g in b.groups)]
    columns: list[Column[Group]] = [
        col(b.field, b.field, lambda g: g.value),
        col("questions", "questions", lambda g: g.n_questions),
    ]
    columns += [variant_column(v) for v in variants]
    name = f"breakdown_{number}_{slug(b.task.label)}_{slug(b.field)}"
    return make_table(name, f"{b.task.title}: accuracy by {b.field}", columns, b.groups)


def draw_levels(figs: Figures, found: list[Breakdown]) -> Plot | None:
    """Accuracy against each numeric group field (MATH-500's level), one panel per task and
    field, one line per variant with its 95% interval shaded."""
    numeric = [b for b in found if all(order(g.value)[0] == 0 for g in b.groups)]
    if not numeric:
        return None
    with figs.style():
        fig, axes = figs.new(len(numeric))
        for ax, b in zip(axes, numeric, strict=False):
            for variant in figs.results.with_data:
                points = [(float(g.value), g.accuracy[variant]) for g in b.groups
                          if variant in g.accuracy]
                if not points:
                    continue
                x = [p[0] for p in points]
                colour = figs.colour[variant]
                ax.fill_between(x, [100 * e.lo for _, e in points],
                                [100 * e.hi for _, e in points], color=colour, alpha=0.12,
                                linewidth=0)
                ax.plot(x, [100 * e.mean for _, e in points], color=colour, marker="o",
                        label=mpl_text(variant))
            ax.set_xticks([float(g.value) for g in b.groups], [str(g.value) for g in b.groups])
            ax.set_ylim(-3, 103)
            ax.set_title(mpl_text(b.task.title))
            ax.set_xlabel(mpl_text(b.field))
        axes[0].set_ylabel("accuracy (%)")
        axes[0].legend(loc="lower left")
    return figs.save(fig, "breakdown_levels", "Accuracy by level",
                     "Accuracy within each level (or other numeric group) of a task; shaded: "
                     "95% bootstrap interval.")


def build(ctx: ReportContext) -> Section | None:
    found = breakdowns(ctx.results)
    if not found:
        return None
    tables = [build_breakdown(ctx.results, b, i + 1) for i, b in enumerate(found)]
    return Section(TITLE, TEXT, shown(*tables, ctx.figure(lambda f: draw_levels(f, found))))
