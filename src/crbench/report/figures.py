"""The figures' canvas: one style, one colour per variant, PNG and SVG of every figure.

Sections draw their own figures (in their own module) on this canvas. Labels go through
`mpl_text`, since a `$` in a variant or task label would start matplotlib's mathtext.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from crbench.report.document import Plot
from crbench.report.results import ResultSet, TaskInfo

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

Colour = tuple[float, float, float, float]
# Draws one task's panel: (axes, task, variant names top to bottom).
PanelDraw = Callable[["Axes", TaskInfo, list[str]], None]

STYLE: dict[RcKeyType, object] = {
    "font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "legend.fontsize": 8, "legend.frameon": False, "svg.hashsalt": "crbench",
}


def mpl_text(label: str, limit: int = 40) -> str:
    """A label for matplotlib: `$` would start mathtext; very long labels are shortened."""
    if len(label) > limit:
        label = label[: limit - 1] + "…"
    return label.replace("$", r"\$")


class Figures:
    """Writes each figure as PNG and SVG into a folder; one colour per variant throughout."""

    def __init__(self, results: ResultSet, folder: Path):
        import matplotlib as mpl

        self.results, self.folder = results, folder
        folder.mkdir(parents=True, exist_ok=True)
        palette = mpl.colormaps["tab10" if len(results.with_data) <= 10 else "tab20"]
        self.colour: dict[str, Colour] = {
            v: palette(i % palette.N) for i, v in enumerate(results.with_data)
        }

    def style(self) -> AbstractContextManager[None]:
        """`with figures.style():` around all drawing, so every figure looks alike."""
        import matplotlib as mpl

        return mpl.rc_context(STYLE)

    def new(self, n_panels: int, width: float = 3.2, height: float = 2.8, nrows: int = 1,
            sharey: bool = True, labels: Sequence[str] = ()) -> tuple[Figure, list[Axes]]:
        """A grid of panels; `labels`: the y tick labels, so the figure makes room for them."""
        from matplotlib.figure import Figure

        ncols = max(1, math.ceil(n_panels / nrows))
        room = 0.065 * max((len(mpl_text(x)) for x in labels), default=0)
        fig = Figure(figsize=(0.4 + room + width * ncols, 0.6 + height * nrows),
                     layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)
        for ax in axes.flat[n_panels:]:
            ax.set_visible(False)
        return fig, list(axes.flat)

    def save(self, fig: Figure, name: str, title: str, caption: str) -> Plot:
        png, svg = self.folder / f"{name}.png", self.folder / f"{name}.svg"
        fig.savefig(png, dpi=150)
        fig.savefig(svg, metadata={"Date": None})
        return Plot(name, title, caption, png, svg)

    def per_task(self, name: str, title: str, caption: str, draw: PanelDraw, xlabel: str,
                 height_per_variant: float = 0.28) -> Plot | None:
        """One horizontal panel per task, one row per variant (top: first variant)."""
        r = self.results
        if not r.cells:
            return None
        names = r.with_data
        with self.style():
            fig, axes = self.new(len(r.tasks), width=3.0, labels=names,
                                 height=max(1.6, 0.5 + height_per_variant * len(names)))
            for ax, t in zip(axes, r.tasks, strict=False):
                draw(ax, t, names)
                ax.set_title(mpl_text(t.title))
                ax.set_xlabel(xlabel)
                ax.set_yticks(range(len(names)), [mpl_text(n) for n in names])
                ax.set_ylim(len(names) - 0.5, -0.5)
                ax.grid(axis="y", visible=False)
        return self.save(fig, name, title, caption)
