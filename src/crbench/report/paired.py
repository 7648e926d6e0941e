"""Section "Paired comparison with the parent": flips, McNemar, paired score and token deltas."""

from __future__ import annotations

from crbench.report.context import ReportContext
from crbench.report.document import Column, Plot, Section, Table, col, make_table, shown
from crbench.report.figures import Figures, mpl_text
from crbench.report.fmt import pval, raw, scaled, with_ci
from crbench.report.pairs import Pair

TITLE = "Paired comparison with the parent"
NOTE = ("Each compressed variant against its dense parent on the questions both answered. "
        "A question is solved when more than half of its repeats are correct (knowledge "
        "tasks: EM); fixed = parent wrong, variant right; broken = the reverse. McNemar: "
        "exact two-sided binomial test of fixed vs broken. Δ: variant − parent, mean over "
        "questions, with a paired bootstrap 95% interval.")


def build_paired(pairs: list[Pair]) -> Table:
    columns: list[Column[Pair]] = [
        col("variant", "variant", lambda p: p.child.variant),
        col("parent", "parent", lambda p: p.parent.variant),
        col("task", "task", lambda p: p.task, lambda t: t.title, lambda t: (t.label,)),
        col("questions", "questions", lambda p: p.flips.n),
        col("fixed", "fixed", lambda p: p.flips.fixed),
        col("broken", "broken", lambda p: p.flips.broken),
        col("both right", "both_right", lambda p: p.flips.both_right),
        col("both wrong", "both_wrong", lambda p: p.flips.both_wrong),
        col("McNemar p", "mcnemar_p", lambda p: p.p, pval),
        col("Δ acc pp [95% CI]", ["diff_pp", "diff_lo", "diff_hi"], lambda p: p.diff, with_ci,
            lambda e: (scaled(e.mean), scaled(e.lo), scaled(e.hi))),
        col("Δ tokens [95% CI]", ["diff_tokens", "diff_tokens_lo", "diff_tokens_hi"],
            lambda p: p.tokens, lambda e: with_ci(e, 1, 0),
            lambda e: (raw(e.mean), raw(e.lo), raw(e.hi))),
    ]
    return make_table("paired", "Paired comparison with the parent model", columns, pairs, NOTE)


def draw_paired(figs: Figures, pairs: list[Pair]) -> Plot | None:
    if not pairs:
        return None
    tasks = [t for t in figs.results.tasks if any(p.task == t for p in pairs)]
    children = list(dict.fromkeys(p.child.variant for p in pairs))
    with figs.style():
        fig, axes = figs.new(len(tasks), width=3.0, labels=children,
                             height=max(1.6, 0.5 + 0.28 * len(children)))
        for ax, t in zip(axes, tasks, strict=False):
            for p in pairs:
                if p.task != t:
                    continue
                d = p.diff
                ax.errorbar(100 * d.mean, children.index(p.child.variant),
                            xerr=[[100 * (d.mean - d.lo)], [100 * (d.hi - d.mean)]],
                            fmt="o", color=figs.colour[p.child.variant], capsize=3)
            ax.axvline(0, color="black", lw=0.8)
            ax.set_title(mpl_text(t.title))
            ax.set_xlabel("Δ EM vs parent (pp)" if t.knowledge else "Δ accuracy vs parent (pp)")
            ax.set_yticks(range(len(children)), [mpl_text(c) for c in children])
            ax.set_ylim(len(children) - 0.5, -0.5)
            ax.grid(axis="y", visible=False)
    return figs.save(fig, "paired", "Accuracy change against the parent",
                     "Variant − dense parent, on the same questions; bars: paired bootstrap "
                     "95% interval.")


def build(ctx: ReportContext) -> Section:
    return Section(TITLE, "", shown(build_paired(ctx.pairs),
                                    ctx.figure(lambda f: draw_paired(f, ctx.pairs))))
