"""`crbench report`: tables, figures and a self-contained HTML page, computed from the store only.

    load_results(run_dir) -> ResultSet       the store's one reader (crbench.store.read_run),
                                             then samples, cells and estimates (results.py)
    build_report(results, out_dir) -> Report  every registered section, in registry order
    write_report(run_dir, out_dir, formats)   renders report.md, report.html, tables.tex, csv/

The package, one job per module:

    results.py     ResultSet, CellStats, TaskInfo: the result model built from read_run's RunData
    pairs.py       each variant against its parent (flips, paired deltas), shared by sections
    document.py    Table (made from Columns: one definition for page and CSV), Plot, Section
    fmt.py         how numbers are written on the page and in CSV
    figures.py     the figure canvas: style, one colour per variant, PNG + SVG
    context.py     ReportContext (what a section is given) and the SectionBuilder type
    sections.py    THE SECTION REGISTRY: the list of sections, in report order
    main_results.py, curves.py, compute.py (+ lengths.py), paired.py, thinking.py,
    knowledge.py, cost.py, failures.py, examples.py: one module per section
    render.py      HTML, Markdown, LaTeX and CSV output; escaping of untrusted text

Adding an analysis (a report section) = one new module + one line in sections.SECTIONS:

    # crbench/report/my_analysis.py
    from crbench.report.context import ReportContext
    from crbench.report.document import Section, col, make_table, shown
    from crbench.report.fmt import pct, scaled

    def build(ctx: ReportContext) -> Section | None:
        r = ctx.results                      # r.cells, r.tasks, r.with_data, r.run.rows ...
        columns = [col("variant", "variant", lambda v: v),
                   col("average %", "average_pct", lambda v: r.average(v).mean, pct,
                       lambda m: (scaled(m),))]
        table = make_table("my_analysis", "My analysis", columns, r.with_data, note="...")
        plot = ctx.figure(lambda figs: None)  # draw on figs (Figures) -> Plot, or None
        return Section("My analysis", "", shown(table, plot))

    # crbench/report/sections.py: add `my_analysis.build,` where it should appear.

`col(title, csv, value, show, to_csv)`: title None = CSV only, csv None = page only; `to_csv`
may give several fields (e.g. a mean and its interval). A table's CSV file (csv/<name>.csv)
and its page/LaTeX form come from the same columns, so they cannot disagree. Raw
stored traces (prompt, output, reasoning, tokens) are in `ctx.results.run.rows`
(crbench.records.StoredGeneration). Sections that give None or nothing to show are left out.

Every label and every piece of model output is untrusted text: it is escaped for the format it
is written into (HTML, Markdown, LaTeX, matplotlib mathtext, rich markup).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from crbench.errors import InputError
from crbench.report import sections
from crbench.report.context import ReportContext
from crbench.report.document import Plot, Report, Section, Table, plots, tables
from crbench.report.figures import Figures
from crbench.report.render import render_html, render_latex, render_md, write_csv, write_text
from crbench.report.results import ResultSet, load_results
from crbench.report.sections import SECTIONS

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "FORMATS", "Plot", "Report", "ResultSet", "SECTIONS", "Section", "Table", "build_report",
    "load_results", "parse_formats", "plots", "print_summary", "tables", "write_report",
]

FORMATS = ("md", "html", "latex", "csv")


def summary_lines(r: ResultSet) -> list[str]:
    n_planned = sum(r.planned.values())
    partial = sum(c.partial for c in r.cells.values())
    unscored = sum(r.unscored.values())
    lines = [
        f"store: {r.path}",
        f"{len(r.samples)} scored generations" + (f" of {n_planned} planned" if n_planned else "")
        + f"; {len(r.with_data)} variants, {len(r.tasks)} tasks",
    ]
    if partial or unscored:
        lines.append(f"in progress: {partial} cells partial, {unscored} generations not scored "
                     "yet")
    if r.failures:
        lines.append(f"{len(r.failures)} generations failed (not scored; see Failures)")
    if r.superseded:
        lines.append(f"{r.superseded} stored rows of an earlier spec version left out")
    if not r.samples:
        lines.append("no scored generations yet: nothing to tabulate")
    return lines


def build_report(results: ResultSet, out_dir: Path, with_figures: bool = True) -> Report:
    """Every section of the registry, in order; figures into out_dir/figures when wanted."""
    figures = Figures(results, out_dir / "figures") if with_figures else None
    ctx = ReportContext(results, figures)
    made = [build(ctx) for build in sections.SECTIONS]  # the registry, read when used
    shown = [s for s in made if s is not None and not s.empty]
    main = next((t for s in shown for t in s.items
                 if isinstance(t, Table) and t.name == "main"), None)
    title = f"crbench report: {results.path.parent.name}"
    return Report(title, summary_lines(results), shown, main)


def parse_formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InputError(None, f"unknown format {', '.join(bad) or repr(text)}; "
                               f"choose from {', '.join(FORMATS)}", "--format")
    return formats


def write_report(run_dir: str | Path, out_dir: str | Path | None = None,
                 formats: Sequence[str] = FORMATS, n_boot: int = 2000,
                 seed: int = 0) -> tuple[Report, dict[str, Path]]:
    """Compute the report from the store and write the chosen formats; returns what it wrote."""
    results = load_results(run_dir, n_boot, seed)
    out = Path(out_dir) if out_dir else results.path.parent / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"cannot create the report folder: {exc.strerror}") from None
    # Figures are for the pages that show them.
    report = build_report(results, out, with_figures=bool({"md", "html"} & {*formats}))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report.summary.append(f"generated {stamp} by `crbench report` from the store alone")
    written: dict[str, Path] = {}
    if "md" in formats:
        written["md"] = out / "report.md"
        write_text(written["md"], render_md(report, out))
    if "html" in formats:
        written["html"] = out / "report.html"
        write_text(written["html"], render_html(report))
    if "latex" in formats:
        written["latex"] = out / "tables.tex"
        write_text(written["latex"], render_latex(report))
    if "csv" in formats:
        (out / "csv").mkdir(exist_ok=True)
        for t in tables(report):
            write_csv(out / "csv" / f"{t.name}.csv", t)
        written["csv"] = out / "csv"
    if plots(report):
        written["figures"] = out / "figures"
    return report, written


LABEL_COLUMNS = ("variant", "method")  # shown whole in the terminal, never cut
SCORE_WIDTH = 7  # room a score needs in the terminal ("100.0", "—", "85.0 n=3/6" wraps)


def print_summary(report: Report, written: dict[str, Path], console: Console | None = None,
                  ) -> None:
    """The headline table and where the report is, on the terminal (labels escaped). Variant
    names are never cut: if the terminal is too narrow for them, the table is printed wider."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RichTable

    console = console or Console()
    for line in report.summary:
        console.print(escape(line))
    main = report.main
    if main and main.rows:
        keep = [i for i, c in enumerate(main.columns)
                if c in LABEL_COLUMNS or c.endswith(("acc %", "EM %", "average %"))]
        table = RichTable(title=escape(main.title))
        needed = 4  # the table's outer border
        for i in keep:
            name = main.columns[i]
            if name in LABEL_COLUMNS:
                longest = max(len(row[i]) for row in main.rows + [main.columns])
                table.add_column(escape(name), justify="left", no_wrap=True, min_width=longest)
                needed += longest + 3
            else:
                # fold: a long task title wraps onto more lines instead of losing its end
                table.add_column(escape(name), justify="right", overflow="fold")
                needed += SCORE_WIDTH + 3
        for row in main.rows:  # scores without their intervals: those are in the report
            table.add_row(*[escape(row[i] if main.columns[i] in LABEL_COLUMNS
                                   else re.sub(r" \[[^\]]*\]", "", row[i])) for i in keep])
        if needed > console.width:
            console = Console(file=console.file, width=needed)  # wider, rather than cut names
        console.print(table)
    for kind, path in written.items():
        console.print(f"{kind}: {escape(str(path))}")
