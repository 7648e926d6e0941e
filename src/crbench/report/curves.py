"""Section "Compression curves": accuracy along each sparsity and bit-width sweep."""

from __future__ import annotations

import math

from crbench import analysis as an
from crbench.report.context import ReportContext
from crbench.report.document import Column, Plot, Section, Table, col, make_table, shown
from crbench.report.figures import Figures, mpl_text
from crbench.report.fmt import pct, scaled
from crbench.report.results import ResultSet

TITLE = "Compression curves"
Point = tuple[str, str, float, str]  # (base model, method kind, x, variant)


def curves(r: ResultSet, axis: str) -> dict[tuple[str, str], an.Curve]:
    return an.sweeps((r.variants[v] for v in r.with_data), axis)


def build_sweep(r: ResultSet, axis: str) -> Table | None:
    found = curves(r, axis)
    if not found:
        return None
    points: list[Point] = [(base, kind, x, name) for (base, kind), pts in found.items()
                           for x, name in pts]

    def score(t_label: str) -> Column[Point]:
        def mean(p: Point) -> float:
            c = r.cell(p[3], t_label)
            return c.score.mean if c else math.nan

        return col(title_of[t_label], f"{t_label}_pct", mean, pct, lambda m: (scaled(m),))

    title_of = {t.label: t.title for t in r.tasks}
    columns: list[Column[Point]] = [
        col("base model", "base_model", lambda p: p[0]),
        col("method", "method", lambda p: p[1]),
        col("sparsity %" if axis == "sparsity" else "bits", axis, lambda p: p[2],
            lambda x: f"{x:g}"),
        col("variant", "variant", lambda p: p[3]),
        *[score(t.label) for t in r.tasks],
    ]
    if r.reasoning:
        columns.append(col("average %", "average_pct", lambda p: r.average(p[3]).mean, pct,
                           lambda m: (scaled(m),)))
    title = "Sparsity sweep" if axis == "sparsity" else "Bit-width sweep"
    note = ("Accuracy % (knowledge tasks: EM %) along each compression curve; the dense model "
            + ("is sparsity 0." if axis == "sparsity" else "is 16 bits."))
    return make_table(f"sweep_{axis}", title, columns, points, note)


def draw_sweep(figs: Figures, axis: str) -> Plot | None:
    import matplotlib as mpl

    r = figs.results
    found = curves(r, axis)
    if not found:
        return None
    bases = sorted({b for b, _ in found})
    kinds = sorted({k for _, k in found})
    markers = dict(zip(kinds, "osD^v<>ph*", strict=False))
    colours = {k: mpl.colormaps["tab10"](i % 10) for i, k in enumerate(kinds)}
    with figs.style():
        fig, axes = figs.new(len(bases) * len(r.tasks), nrows=len(bases))
        for bi, base in enumerate(bases):
            legend_done = False
            for ti, t in enumerate(r.tasks):
                ax = axes[bi * len(r.tasks) + ti]
                xs: set[float] = set()
                for (b, kind), curve in found.items():
                    cells = [(x, r.cell(n, t.label)) for x, n in curve if b == base]
                    pts = [(x, c.score) for x, c in cells if c is not None]
                    if not pts:
                        continue
                    x = [p[0] for p in pts]
                    xs.update(x)
                    ax.fill_between(x, [100 * e.lo for _, e in pts],
                                    [100 * e.hi for _, e in pts], color=colours[kind],
                                    alpha=0.15, linewidth=0)
                    ax.plot(x, [100 * e.mean for _, e in pts], color=colours[kind],
                            marker=markers[kind], label=mpl_text(kind))
                if not xs:  # this base model was not run on this task
                    ax.set_visible(False)
                    continue
                metric = "EM" if t.knowledge else "accuracy"
                ax.set_title(mpl_text(f"{t.title} — {base}" if len(bases) > 1 else t.title))
                ax.set_ylim(-3, 103)
                if ti == 0 or not axes[bi * len(r.tasks)].get_visible():
                    ax.set_ylabel(f"{metric} (%)")
                if axis == "bits":
                    # Log scale: 16 -> 8 -> 4 -> 2 evenly spaced; more compression right.
                    ax.set_xscale("log", base=2)
                    ax.set_xticks(sorted(xs), [f"{x:g}" for x in sorted(xs)])
                    ax.minorticks_off()
                    ax.invert_xaxis()
                    ax.set_xlabel("bits per weight")
                else:
                    ax.set_xlabel("sparsity (%)")
                if not legend_done:
                    ax.legend(loc="lower left")
                    legend_done = True
    what = "sparsity" if axis == "sparsity" else "bit width"
    return figs.save(
        fig, f"sweep_{axis}", f"Accuracy vs {what}",
        f"Accuracy (knowledge tasks: EM) against {what}, one panel per task"
        + (" and base model" if len(bases) > 1 else "")
        + "; shaded: 95% bootstrap interval. Dense = "
        + ("0% sparsity." if axis == "sparsity" else "16 bits."),
    )


def build(ctx: ReportContext) -> Section:
    r = ctx.results
    return Section(TITLE, "", shown(
        build_sweep(r, "sparsity"), ctx.figure(lambda f: draw_sweep(f, "sparsity")),
        build_sweep(r, "bits"), ctx.figure(lambda f: draw_sweep(f, "bits"))))
