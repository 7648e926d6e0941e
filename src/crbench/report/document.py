"""What a report is made of: tables (defined by their columns), plots, examples, sections.

A table is defined once, as a list of `Column`s: each column says how to get its value from a
row, how the page shows it and which CSV fields it fills. `make_table` applies the columns to
the rows and gives both the page's text and the CSV's raw values, so the two cannot drift apart.
Renderers (crbench.report.render) only ever see the finished `Table`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from crbench.report.fmt import CsvValue, raw

R = TypeVar("R")  # a row of a table, whatever its builder iterates over
V = TypeVar("V")  # the value one column takes from a row


@dataclass(frozen=True)
class Column(Generic[R]):
    """One column: its header on the page (None: CSV only), its CSV field names (empty: page
    only), and how a row gives its page text and its CSV values."""

    title: str | None
    csv_names: tuple[str, ...]
    cells: Callable[[R], tuple[str, tuple[CsvValue, ...]]]


def col(
    title: str | None,
    csv: str | Sequence[str] | None,
    value: Callable[[R], V],
    show: Callable[[V], str] = str,
    to_csv: Callable[[V], Sequence[CsvValue]] | None = None,
) -> Column[R]:
    """A column from the row's value: `show` writes it for the page, `to_csv` for CSV (default:
    the value itself, NaN as an empty cell). `csv` names the CSV field(s); None: page only."""
    names = (csv,) if isinstance(csv, str) else tuple(csv or ())

    def csv_values(v: V) -> tuple[CsvValue, ...]:
        if not names:
            return ()
        if to_csv is not None:
            return tuple(to_csv(v))
        if v is None or isinstance(v, (str, int, float)):
            return (raw(v),)
        raise TypeError(f"column {names[0]!r}: a {type(v).__name__} needs to_csv")

    def cells(row: R) -> tuple[str, tuple[CsvValue, ...]]:
        v = value(row)
        return (show(v) if title is not None else ""), csv_values(v)

    return Column(title, names, cells)


@dataclass
class Table:
    name: str  # file stem of its CSV and LaTeX label
    title: str
    columns: list[str]
    rows: list[list[str]]  # formatted for reading
    csv_columns: list[str]
    csv_rows: list[list[CsvValue]]  # raw numbers for analysis
    note: str = ""


def make_table(
    name: str,
    title: str,
    columns: Sequence[Column[R]],
    rows: Sequence[R],
    note: str = "",
    page_rows: int | None = None,
) -> Table:
    """Apply the columns to every row. `page_rows`: show only that many rows on the page (the
    CSV keeps all of them)."""
    shown = [c for c in columns if c.title is not None]
    page, data = [], []
    for row in rows:
        cells = [c.cells(row) for c in columns]
        page.append([text for c, (text, _) in zip(columns, cells, strict=True)
                     if c.title is not None])
        data.append([v for _, values in cells for v in values])
    csv_names = [n for c in columns for n in c.csv_names]
    for values in data:  # a column whose to_csv disagrees with its names is a bug, caught here
        if len(values) != len(csv_names):
            raise ValueError(f"table {name!r}: {len(values)} CSV values for {len(csv_names)} "
                             "CSV columns")
    if page_rows is not None and len(page) > page_rows:
        page = page[:page_rows]
    return Table(name, title, [c.title or "" for c in shown], page, csv_names, data, note)


@dataclass
class Plot:
    name: str
    title: str
    caption: str
    png: Path
    svg: Path


@dataclass
class Example:
    title: str
    outputs: list[tuple[str, str]]  # (heading, clipped output)


@dataclass
class Section:
    title: str
    text: str = ""
    items: list[Table | Plot] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.items and not self.examples


@dataclass
class Report:
    title: str
    summary: list[str]  # one line each
    sections: list[Section]
    main: Table | None = None


def shown(*items: Table | Plot | None) -> list[Table | Plot]:
    """The items worth showing: made, and (tables) with at least one row."""
    return [i for i in items if i is not None and (not isinstance(i, Table) or i.rows)]


def tables(report: Report) -> list[Table]:
    return [i for s in report.sections for i in s.items if isinstance(i, Table)]


def plots(report: Report) -> list[Plot]:
    return [i for s in report.sections for i in s.items if isinstance(i, Plot)]
