"""What every report section is given: the result set, the figure canvas, shared pairings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from crbench.report.document import Plot, Section
from crbench.report.figures import Figures
from crbench.report.pairs import Pair, paired
from crbench.report.results import ResultSet


@dataclass
class ReportContext:
    results: ResultSet
    figures: Figures | None  # None: no figures wanted (only LaTeX and CSV are written)

    @cached_property
    def pairs(self) -> list[Pair]:
        """Every variant against its parent, per task (computed once, shared by sections)."""
        return paired(self.results)

    def figure(self, draw: Callable[[Figures], Plot | None]) -> Plot | None:
        """Draw a figure when figures are wanted; `draw` gets the canvas."""
        return draw(self.figures) if self.figures is not None else None


# A report section: builds its Section from the context (None or an empty Section: left out).
SectionBuilder = Callable[[ReportContext], Section | None]
