"""Section "Main results": one row per variant, every task's score with its interval."""

from __future__ import annotations

import math

from crbench.analysis import Estimate, parent_of
from crbench.records import VariantRecord
from crbench.report.context import ReportContext
from crbench.report.document import Column, Section, Table, col, make_table, shown
from crbench.report.fmt import DASH, CsvValue, estimate_fields, num, with_ci
from crbench.report.results import EMPTY, ResultSet, TaskInfo

TITLE = "Main results"
NOTE = (
    "Accuracy in % with a 95% bootstrap interval (questions, and repeats within them, "
    "resampled). Knowledge tasks: exact match (EM) and token F1. tokens: mean completion "
    "tokens per question. average: unweighted mean over the reasoning tasks ({reasoning}); "
    "knowledge tasks are left out, as in the paper; shown once a variant has all of them. "
    "n=done/planned marks cells still in progress. parent: the model a variant is compared "
    "with. bits: nominal weight bits (16: not quantized); bits/weight: effective, from what is "
    "stored (group scales and unquantized tensors included)."
)
Scored = tuple[Estimate, str]  # an estimate and its "n=done/planned" while in progress


def size_gb(v: VariantRecord) -> float:
    return v.size_bytes / 1e9 if v.size_bytes else math.nan


def show_scored(value: Scored) -> str:
    return " ".join(filter(None, [with_ci(value[0]), value[1]]))


def variant_columns(r: ResultSet) -> list[Column[str]]:
    has_ppl = any(r.variants[v].ppl is not None for v in r.with_data)
    var = r.variants.__getitem__
    def parent(n: str) -> str:
        found = parent_of(var(n), r.variants)
        return found.variant if found else ""  # a root

    return [  # the base model in CSV only: rows are grouped by it, and `parent` says more
        col(None, "base_model", lambda n: var(n).base_model),
        col("variant", "variant", lambda n: n),
        col("parent", "parent", parent, lambda p: p or DASH),
        col("method", "method", var, lambda v: v.kind, lambda v: (v.method,)),
        col("sparsity %", "sparsity", lambda n: var(n).sparsity,
            lambda s: f"{100 * s:g}" if s is not None else DASH),
        col(None, "pattern", lambda n: var(n).pattern or ""),
        col("bits", "bits", lambda n: var(n).bits, lambda b: f"{b:g}" if b is not None else "16"),
        col("bits/weight", "bits_per_weight", lambda n: var(n).bits_per_weight,
            lambda b: num(b, 2)),
        col("size GB", "size_gb", lambda n: size_gb(var(n)), lambda x: num(x, 2)),
        col("ppl" if has_ppl else None, "ppl", lambda n: var(n).ppl, lambda x: num(x, 2)),
    ]


def task_columns(r: ResultSet, t: TaskInfo) -> list[Column[str]]:
    def estimate(n: str) -> Estimate:
        c = r.cell(n, t.label)
        return c.score if c else EMPTY

    def progress(n: str) -> str:
        c = r.cell(n, t.label)
        planned = r.planned.get((n, t.label), 0)
        return c.n_text() if c else (f"n=0/{planned}" if planned else "")

    def score(n: str) -> Scored:
        return estimate(n), progress(n)

    def f1(n: str) -> Scored:
        c = r.cell(n, t.label)
        return (c.f1 if c and c.f1 else EMPTY), progress(n)

    def fields(prefix: str) -> list[str]:
        return [f"{t.label}_{prefix}_{k}" for k in ("pct", "lo", "hi")]

    def estimate_csv(value: Scored) -> tuple[CsvValue, ...]:
        return estimate_fields(value[0])

    if t.knowledge:
        columns = [col(f"{t.title} EM %", fields("em"), score, show_scored, estimate_csv),
                   col(f"{t.title} F1 %", fields("f1"), f1, show_scored, estimate_csv)]
    else:
        columns = [col(f"{t.title} acc %", fields("acc"), score, show_scored, estimate_csv)]
    return columns + [
        col(f"{t.title} tokens", f"{t.label}_tokens",
            lambda n: c.tokens if (c := r.cell(n, t.label)) else math.nan, num),
        col(None, f"{t.label}_n_questions", lambda n: estimate(n).n_questions),
        col(None, f"{t.label}_n_samples", lambda n: estimate(n).n_samples),
        col(None, f"{t.label}_planned", lambda n: r.planned.get((n, t.label), 0) or ""),
    ]


def build_main(r: ResultSet) -> Table:
    columns = variant_columns(r)
    for t in r.tasks:
        columns += task_columns(r, t)
    if r.reasoning:
        columns.append(col("average %", ["average_pct", "average_lo", "average_hi"],
                           r.average, with_ci, estimate_fields))
    reasoning = ", ".join(t.label for t in r.reasoning) or "none"
    return make_table("main", TITLE, columns, r.with_data, NOTE.format(reasoning=reasoning))


def build(ctx: ReportContext) -> Section:
    return Section(TITLE, "", shown(build_main(ctx.results)))
