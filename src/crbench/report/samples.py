"""Section "Several samples per item": avg@n, pass@k and maj@k of every cell with several
scored samples per question (sampling n, or repeats, above one). The metrics and how they are
computed: `crbench.sampling_metrics`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from crbench import analysis as an
from crbench.analysis import Estimate
from crbench.report.context import ReportContext
from crbench.report.document import Column, Plot, Section, Table, col, make_table, shown
from crbench.report.figures import Figures, mpl_text
from crbench.report.fmt import CsvValue, estimate_fields, with_ci
from crbench.report.results import EMPTY, ResultSet, TaskInfo
from crbench.sampling_metrics import Attempt, SamplingMetrics, sampling_metrics
from crbench.tasks import get_task, vote_key

TITLE = "Several samples per item"
TEXT = (
    "Cells that hold several samples of each question. avg@n: the mean accuracy over the n "
    "samples (the per-question share of correct samples, averaged over questions: the "
    "'average of n runs'). pass@k: the chance that at least one of k samples is correct, by the "
    "unbiased estimator 1 − C(n−c, k)/C(n, k) from each question's n samples, c correct. "
    "maj@k: the most frequent extracted answer of the first k samples is correct (samples "
    "without an answer do not vote; ties go to the answer given first). "
    "Beware the common mistake: pass@1 computed from n samples per question is avg@n, the mean "
    "over the samples, not pass@n. Counting a question as solved when any of its n samples is "
    "correct gives pass@n, which grows with n and cannot be compared with a single-sample "
    "accuracy."
)
NOTE = (
    "In % with a 95% bootstrap interval: avg@n resamples questions and the samples within "
    "them; pass@k and maj@k resample questions. Correct means the task's verdict on a sample "
    "(knowledge tasks: exact match). While a run is in progress, each k uses the questions "
    "with at least k samples; the CSV counts them."
)


@dataclass(frozen=True)
class SampledCell:
    variant: str
    task: TaskInfo
    metrics: SamplingMetrics


def attempts_by_cell(r: ResultSet) -> dict[tuple[str, str], dict[int, list[Attempt]]]:
    """(variant, task label) -> item -> its scored samples, from the rows the report reads."""
    cells: dict[tuple[str, str], dict[int, list[Attempt]]] = defaultdict(lambda: defaultdict(list))
    for row in r.run.rows:
        g, s = row.generation, row.score
        if s is not None:
            cells[(g.variant, g.task)][g.item_index].append(
                Attempt(g.repeat, s.correct, s.extracted))
    return cells


def sampled_cells(r: ResultSet) -> list[SampledCell]:
    """Every cell in display order whose most-sampled question has more than one sample."""
    attempts = attempts_by_cell(r)
    out = []
    for variant, task, _ in r.cells_in_order():
        questions = attempts.get((variant, task.label), {})
        if max((len(a) for a in questions.values()), default=0) < 2:
            continue
        seed = an.cell_seed(r.seed, variant, task.label, "samples")
        key = vote_key(get_task(task.task_id))  # maj@k: answers the task deems equal are one vote
        out.append(SampledCell(variant, task, sampling_metrics(questions, r.n_boot, seed, key)))
    return out


def samples_text(m: SamplingMetrics) -> str:
    return str(m.n_max) if m.n_min == m.n_max else f"{m.n_min}–{m.n_max}"


def metric_column(name: str, k: int) -> Column[SampledCell]:
    """pass@k or maj@k: '—' in cells with fewer than k samples per question."""

    def value(c: SampledCell) -> Estimate:
        found = c.metrics.pass_at if name == "pass" else c.metrics.maj_at
        return found.get(k, EMPTY)

    def fields(e: Estimate) -> tuple[CsvValue, ...]:
        return (*estimate_fields(e), e.n_questions)

    csv = [f"{name}_at_{k}_{part}" for part in ("pct", "lo", "hi", "questions")]
    return col(f"{name}@{k} %", csv, value, with_ci, fields)


def build_samples(cells: list[SampledCell]) -> Table:
    pass_ks = sorted({k for c in cells for k in c.metrics.pass_at})
    maj_ks = sorted({k for c in cells for k in c.metrics.maj_at})
    columns: list[Column[SampledCell]] = [
        col("variant", "variant", lambda c: c.variant),
        col("task", "task", lambda c: c.task, lambda t: t.title, lambda t: (t.label,)),
        col("samples / question", ["samples_min", "samples_max"], lambda c: c.metrics,
            samples_text, lambda m: (m.n_min, m.n_max)),
        col(None, "questions", lambda c: c.metrics.avg.n_questions),
        col("avg@n %", ["avg_pct", "avg_lo", "avg_hi"], lambda c: c.metrics.avg, with_ci,
            estimate_fields),
    ]
    columns += [metric_column("pass", k) for k in pass_ks]
    columns += [metric_column("maj", k) for k in maj_ks]
    return make_table("samples", "avg@n, pass@k and maj@k", columns, cells, NOTE)


def draw_pass_at_k(figs: Figures, cells: list[SampledCell]) -> Plot:
    """pass@k against k, one panel per task, one line per variant; maj@k as open markers."""
    tasks = list(dict.fromkeys(c.task for c in cells))
    with figs.style():
        fig, axes = figs.new(len(tasks))
        for ax, task in zip(axes, tasks, strict=False):
            ks: set[int] = set()
            for c in (c for c in cells if c.task == task):
                colour = figs.colour[c.variant]
                points = sorted(c.metrics.pass_at.items())
                ks.update(k for k, _ in points)
                x = [k for k, _ in points]
                ax.fill_between(x, [100 * e.lo for _, e in points],
                                [100 * e.hi for _, e in points], color=colour, alpha=0.15,
                                linewidth=0)
                ax.plot(x, [100 * e.mean for _, e in points], color=colour, marker="o",
                        label=mpl_text(c.variant))
                maj = sorted(c.metrics.maj_at.items())
                ax.plot([k for k, _ in maj], [100 * e.mean for _, e in maj], color=colour,
                        marker="s", markerfacecolor="none", linestyle="none")
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(ks), [str(k) for k in sorted(ks)])
            ax.minorticks_off()
            ax.set_ylim(-3, 103)
            ax.set_title(mpl_text(task.title))
            ax.set_xlabel("k (samples)")
        axes[0].set_ylabel("%")
        axes[0].legend(loc="lower right")
    return figs.save(fig, "pass_at_k", "pass@k against k",
                     "Unbiased pass@k (lines; shaded: 95% bootstrap interval over questions) and "
                     "maj@k (open squares), one panel per task. pass@1 is avg@n.")


def build(ctx: ReportContext) -> Section | None:
    cells = sampled_cells(ctx.results)
    if not cells:
        return None
    plot = ctx.figure(lambda figs: draw_pass_at_k(figs, cells))
    return Section(TITLE, TEXT, shown(build_samples(cells), plot))
