"""Section "Probes": forced-answer probes of the stored traces (`crbench probe`), summarised by
`crbench.probe_metrics`: probe accuracy at each thinking budget, s1's Control / Scaling /
Performance, and Dynasor's stop rule simulated on the probes. Left out when the store has none."""

from __future__ import annotations

import math

from crbench.analysis import parent_of
from crbench.probe_metrics import DynasorRow, ProbeAnalysis, ProbePoint, S1Row, analyse_probes
from crbench.report.context import ReportContext
from crbench.report.document import Column, Plot, Section, Table, col, make_table, shown
from crbench.report.figures import Figures, mpl_text
from crbench.report.fmt import CsvValue, num, pct, scaled
from crbench.report.render import slug
from crbench.report.results import ResultSet

TITLE = "Probes"
INTRO = ("Forced-answer probes (`crbench probe`): each stored trace cut after B thinking tokens, "
         "then `</think>` and the answer cue, and a few greedy new tokens by the variant's own "
         "model, graded by the task's scorer as a finished answer (s1, arXiv 2501.19393; "
         "Dynasor, arXiv 2412.20993). A trace whose thinking is no longer than B counts its "
         "own answer (a truncated one: its probe at its full length). See docs/probes.md.")


def ordered(r: ResultSet, variant: str, task: str) -> tuple[int, int]:
    rank = {v: i for i, v in enumerate(r.with_data)}
    order = {t.label: i for i, t in enumerate(r.tasks)}
    return rank.get(variant, len(rank)), order.get(task, len(order))


# --- accuracy at budgets -------------------------------------------------------------------


def budget_column(budget: int, *, last: bool) -> Column[list[ProbePoint]]:
    def at(row: list[ProbePoint]) -> ProbePoint | None:
        return next((p for p in row if p.budget == budget), None)

    def csv(p: ProbePoint | None) -> tuple[CsvValue, ...]:
        if p is None:
            return ("", "", "", "", "")
        return (scaled(p.accuracy), scaled(p.lo), scaled(p.hi), p.mean_tokens, p.n_samples)

    return col(f"{budget}" + (" (all)" if last else ""),
               [f"acc_{budget}", f"lo_{budget}", f"hi_{budget}", f"tokens_{budget}",
                f"n_{budget}"], at, lambda p: pct(p.accuracy) if p else "", csv)


def curve_tables(a: ProbeAnalysis, r: ResultSet, parents: dict[str, str]) -> list[Table]:
    tables = []
    task_labels = sorted({p.task for p in a.curves}, key=lambda t: ordered(r, "", t))
    for i, task in enumerate(task_labels):
        points = [p for p in a.curves if p.task == task]
        budgets = sorted({p.budget for p in points})
        variants = sorted({p.variant for p in points}, key=lambda v: ordered(r, v, task))
        rows = [sorted((p for p in points if p.variant == v), key=lambda p: p.budget)
                for v in variants]
        columns: list[Column[list[ProbePoint]]] = [
            col("variant", "variant", lambda row: row[0].variant),
            col("parent", "parent", lambda row: parents.get(row[0].variant, "")),
            col("questions", "questions", lambda row: row[0].n_questions),
        ]
        columns += [budget_column(b, last=k == len(budgets) - 1) for k, b in enumerate(budgets)]
        note = ("Probe accuracy (%) at each thinking budget (tokens). The last column reads "
                "every trace whole. 95% bootstrap intervals, mean thinking tokens used and "
                "traces counted per budget are in the CSV.")
        title = next((t.title for t in r.tasks if t.label == task), task)
        tables.append(make_table(f"probes_budget_{i + 1}_{slug(task)}",
                                 f"Probe accuracy at thinking budgets: {title}", columns, rows,
                                 note))
    return tables


def draw_curves(figs: Figures, a: ProbeAnalysis) -> Plot | None:
    tasks = sorted({p.task for p in a.curves}, key=lambda t: ordered(figs.results, "", t))
    if not tasks:
        return None
    with figs.style():
        fig, axes = figs.new(len(tasks), width=3.4, sharey=True)
        for ax, task in zip(axes, tasks, strict=False):
            variants = sorted({p.variant for p in a.curves if p.task == task},
                              key=lambda v: ordered(figs.results, v, task))
            for name in variants:
                pts = sorted((p for p in a.curves if p.task == task and p.variant == name),
                             key=lambda p: p.budget)
                x = [max(p.budget, 1) for p in pts]
                colour = figs.colour.get(name, (0.3, 0.3, 0.3, 1.0))
                ax.fill_between(x, [100 * p.lo for p in pts], [100 * p.hi for p in pts],
                                color=colour, alpha=0.12, linewidth=0)
                ax.plot(x, [100 * p.accuracy for p in pts], color=colour, marker="o",
                        markersize=3, label=mpl_text(name))
            ax.set_xscale("log", base=2)
            ax.set_ylim(-3, 103)
            ax.set_title(mpl_text(task))
            ax.set_xlabel("thinking budget (tokens)")
        axes[0].set_ylabel("probe accuracy (%)")
        axes[0].legend(loc="upper left", fontsize=7)
    return figs.save(fig, "probes_budget", "Probe accuracy against thinking budget",
                     "Each trace cut after B thinking tokens and made to answer; the last point "
                     "of each task reads every trace whole. Shaded: 95% bootstrap interval.")


# --- s1 and Dynasor ------------------------------------------------------------------------


def s1_table(a: ProbeAnalysis, r: ResultSet, parents: dict[str, str]) -> Table:
    rows = sorted(a.s1, key=lambda x: ordered(r, x.variant, x.task))
    columns: list[Column[S1Row]] = [
        col("variant", "variant", lambda x: x.variant),
        col("parent", "parent", lambda x: parents.get(x.variant, "")),
        col("task", "task", lambda x: x.task),
        col("points", "points", lambda x: x.points),
        col("Control %", "control_pct", lambda x: x.control, pct, lambda v: (scaled(v),)),
        col("Scaling pp/1k tokens", "scaling_pp_per_1k", lambda x: x.scaling,
            lambda v: num(100 * v, 2), lambda v: (scaled(v),)),
        col("Performance %", "performance_pct", lambda x: x.performance, pct,
            lambda v: (scaled(v),)),
    ]
    note = ("s1's measures over each probe curve: Control = share of evaluations whose "
            "thinking stayed within the budget; Scaling = mean slope of accuracy against mean "
            "thinking tokens over all pairs of budgets, in percentage points per 1,000 tokens; "
            "Performance = best accuracy on the curve.")
    return make_table("probes_s1", "s1 metrics of the probe curves", columns, rows, note)


def change_text(x: DynasorRow) -> str:
    if not math.isfinite(x.change):
        return "—"
    return f"{100 * x.change:+.1f} [{100 * x.change_lo:+.1f}, {100 * x.change_hi:+.1f}]"


def dynasor_table(a: ProbeAnalysis, r: ResultSet) -> Table:
    rows = sorted(a.dynasor, key=lambda x: (*ordered(r, x.variant, x.task), x.m))
    columns: list[Column[DynasorRow]] = [
        col("variant", "variant", lambda x: x.variant),
        col("task", "task", lambda x: x.task),
        col("m", "m", lambda x: x.m),
        col("traces", "traces", lambda x: x.traces),
        col("stopped early", "stopped", lambda x: x.stopped),
        col("full acc %", "accuracy_full_pct", lambda x: x.accuracy_full, pct,
            lambda v: (scaled(v),)),
        col("stop acc %", "accuracy_stop_pct", lambda x: x.accuracy_stop, pct,
            lambda v: (scaled(v),)),
        col("Δ pp [95% CI]", ["change_pp", "change_lo_pp", "change_hi_pp"], lambda x: x,
            change_text, lambda x: (scaled(x.change), scaled(x.change_lo),
                                    scaled(x.change_hi))),
        col("thinking tokens", "tokens_full", lambda x: x.tokens_full, num),
        col("at stop", "tokens_stop", lambda x: x.tokens_stop, num),
        col("saved %", "saved_pct", lambda x: x.saved, pct, lambda v: (scaled(v),)),
        col("saved % incl. probes", "saved_with_probes_pct", lambda x: x.saved_with_probes,
            pct, lambda v: (scaled(v),)),
        col(None, "probe_tokens", lambda x: x.probe_tokens),
    ]
    note = ("Dynasor's stop rule simulated on the stored probes: each trace stops at the first "
            "probe where the last m probes give the same answer, and that answer counts; a "
            "trace that never stops keeps its own answer and length. Δ: stop-rule accuracy "
            "minus the full traces', paired over questions. Saved: share of the full traces' "
            "thinking tokens not spent; incl. probes also pays the probes' new tokens. Evenly "
            "spaced probes (`crbench probe --every K`) simulate Dynasor faithfully.")
    return make_table("probes_dynasor", "Dynasor-style early stop, simulated from the probes",
                      columns, rows, note)


def build(ctx: ReportContext) -> Section | None:
    from crbench.probe_store import read_probes

    r = ctx.results
    probes = read_probes(r.path)
    if not probes:
        return None
    a = analyse_probes(r.run.rows, probes, n_boot=r.n_boot, seed=r.seed)
    if not a.curves:
        return None
    variants = r.run.variants
    parents = {name: p.variant for name, v in variants.items()
               if (p := parent_of(v, variants)) is not None}
    return Section(TITLE, INTRO, shown(
        *curve_tables(a, r, parents), ctx.figure(lambda f: draw_curves(f, a)),
        s1_table(a, r, parents), dynasor_table(a, r),
    ))
