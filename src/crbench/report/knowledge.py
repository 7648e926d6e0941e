"""Section "Knowledge vs reasoning": closed- against open-book scores, and each task's change
against the dense parent."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from crbench.report.context import ReportContext
from crbench.report.document import Column, Plot, Section, Table, col, make_table, shown
from crbench.report.figures import Figures, mpl_text
from crbench.report.fmt import num, pct, scaled
from crbench.report.pairs import Pair, relative_change
from crbench.report.results import CellStats, ResultSet, TaskInfo

TITLE = "Knowledge vs reasoning"
NOTE = ("Closed-book: the question alone (recall); open-book: with its paragraphs (reading). "
        "vs parent: relative change of EM against the dense parent, in %.")


def knowledge_pairs(r: ResultSet) -> list[tuple[str, TaskInfo | None, TaskInfo | None]]:
    """(task id, closed-book task, open-book task) for each knowledge task of the run."""
    found: dict[str, dict[str, TaskInfo]] = defaultdict(dict)
    for t in r.tasks:
        if t.knowledge:
            found[t.task_id].setdefault(t.mode, t)
    return [(task_id, modes.get("closed"), modes.get("open")) for task_id, modes in found.items()]


@dataclass(frozen=True)
class BookRow:
    variant: str
    task_id: str
    em: tuple[float, float]  # closed, open
    f1: tuple[float, float]
    vs_parent: tuple[float, float]  # relative change against the parent, %

    @property
    def gap(self) -> float:
        return self.em[1] - self.em[0]


def book_rows(r: ResultSet) -> list[BookRow]:
    def score(c: CellStats | None) -> float:
        return c.score.mean if c else math.nan

    def f1(c: CellStats | None) -> float:
        return c.f1.mean if c and c.f1 else math.nan

    out = []
    for name in r.with_data:
        for task_id, closed, opened in knowledge_pairs(r):
            cc = r.cell(name, closed.label) if closed else None
            oc = r.cell(name, opened.label) if opened else None
            if cc is None and oc is None:
                continue
            rel = [relative_change(r, name, t.label) if t else math.nan for t in (closed, opened)]
            out.append(BookRow(name, task_id, (score(cc), score(oc)), (f1(cc), f1(oc)),
                               (rel[0], rel[1])))
    return out


def share(title: str, csv: str, value: Callable[[BookRow], float]) -> Column[BookRow]:
    return col(title, csv, value, pct, lambda v: (scaled(v),))


def build_knowledge(r: ResultSet) -> Table | None:
    if not knowledge_pairs(r):
        return None
    columns: list[Column[BookRow]] = [
        col("variant", "variant", lambda x: x.variant),
        col("task", "task", lambda x: x.task_id),
        share("closed EM %", "closed_em_pct", lambda x: x.em[0]),
        share("closed F1 %", "closed_f1_pct", lambda x: x.f1[0]),
        share("open EM %", "open_em_pct", lambda x: x.em[1]),
        share("open F1 %", "open_f1_pct", lambda x: x.f1[1]),
        share("open − closed EM pp", "open_minus_closed_pp", lambda x: x.gap),
        col("closed vs parent %", "closed_rel_change_pct", lambda x: x.vs_parent[0],
            lambda v: num(v, 1)),
        col("open vs parent %", "open_rel_change_pct", lambda x: x.vs_parent[1],
            lambda v: num(v, 1)),
    ]
    return make_table("knowledge", TITLE, columns, book_rows(r), NOTE)


def draw_knowledge(figs: Figures, pairs: list[Pair]) -> Plot | None:
    import matplotlib as mpl

    r = figs.results
    children = list(dict.fromkeys(p.child.variant for p in pairs))
    if not children or not any(t.knowledge for t in r.tasks):
        return None
    families = r.tasks
    cmap = {"reasoning": mpl.colormaps["Blues"], "closed": mpl.colormaps["Oranges"],
            "open": mpl.colormaps["Greens"]}
    with figs.style():
        fig, axes = figs.new(1, width=max(4.5, 0.9 * len(children) * len(families) ** 0.5),
                             height=3.2)
        ax = axes[0]
        width = 0.8 / len(families)
        counts = Counter(t.mode or "reasoning" for t in families)
        seen: Counter[str] = Counter()
        for i, t in enumerate(families):
            group = t.mode or "reasoning"
            seen[group] += 1
            colour = cmap[group](0.35 + 0.5 * seen[group] / (counts[group] + 1))
            ys = [relative_change(r, c, t.label) for c in children]
            xs = [j + (i - (len(families) - 1) / 2) * width for j in range(len(children))]
            bars = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
            ax.bar([x for x, _ in bars], [y for _, y in bars], width, color=colour,
                   label=mpl_text(t.title))
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(children)), [mpl_text(c) for c in children],
                      rotation=30, ha="right")
        ax.set_ylabel("score change vs dense parent (%)")
        ax.set_xlabel("compressed variant")
        ax.legend(loc="best")
    return figs.save(fig, "knowledge", "Knowledge vs reasoning under compression",
                     "Relative change of each task's score against the dense parent (%): "
                     "reasoning tasks (blue), closed-book (orange) and open-book (green) "
                     "knowledge.")


def build(ctx: ReportContext) -> Section:
    return Section(TITLE, "", shown(build_knowledge(ctx.results),
                                    ctx.figure(lambda f: draw_knowledge(f, ctx.pairs))))
