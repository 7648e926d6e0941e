"""Section "Failures": generations that failed after all retries (never scored as wrong)."""

from __future__ import annotations

from crbench.records import FailureRecord
from crbench.report.context import ReportContext
from crbench.report.document import Column, Section, Table, col, make_table, shown
from crbench.report.fmt import clip

TITLE = "Failures"
PAGE_ROWS = 50


def build_failures(failures: list[FailureRecord]) -> Table | None:
    if not failures:
        return None
    columns: list[Column[FailureRecord]] = [
        col("variant", "variant", lambda f: f.variant),
        col("task", "task", lambda f: f.task),
        col("item", "item", lambda f: f.item_index),
        col("repeat", "repeat", lambda f: f.repeat),
        col("attempts", "attempts", lambda f: f.attempts),
        col("error", "error", lambda f: f.error, lambda e: clip(e, 160, 40)),
    ]
    note = "Generations that failed after all retries and were never scored (re-run to retry)."
    if len(failures) > PAGE_ROWS:
        note += f" First {PAGE_ROWS} of {len(failures)}; all in failures.csv."
    return make_table("failures", TITLE, columns, failures, note, page_rows=PAGE_ROWS)


def build(ctx: ReportContext) -> Section:
    return Section(TITLE, "", shown(build_failures(ctx.results.failures)))
