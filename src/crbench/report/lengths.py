"""Output length against correctness: across samples, by length quartile, within questions.
Part of the "Test-time compute" section (crbench.report.compute)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from crbench import analysis as an
from crbench.analysis import Sample
from crbench.report.document import Column, Plot, Table, col, make_table
from crbench.report.figures import Figures, mpl_text
from crbench.report.fmt import DASH, CsvValue, num, pct, pval, scaled
from crbench.report.results import ResultSet, TaskInfo

BINS = 4


@dataclass
class CellRow:
    variant: str
    task: TaskInfo
    samples: list[Sample]

    @cached_property
    def lengths(self) -> an.LengthComparison:
        return an.length_comparison(self.samples)

    @cached_property
    def bins(self) -> list[an.LengthBin]:
        return an.accuracy_by_length(self.samples, BINS)


def cell_rows(r: ResultSet) -> list[CellRow]:
    return [CellRow(v, t, c.samples) for v, t, c in r.cells_in_order()]


def cell_columns() -> list[Column[CellRow]]:
    return [col("variant", "variant", lambda x: x.variant),
            col("task", "task", lambda x: x.task, lambda t: t.title, lambda t: (t.label,))]


def build_lengths(r: ResultSet) -> Table:
    def of(x: CellRow) -> an.LengthComparison:
        return x.lengths

    columns = cell_columns() + [
        col("n correct", "n_correct", lambda x: of(x).n_correct),
        col("n incorrect", "n_incorrect", lambda x: of(x).n_incorrect),
        col("mean correct", "mean_correct", lambda x: of(x).mean_correct, num),
        col("mean incorrect", "mean_incorrect", lambda x: of(x).mean_incorrect, num),
        col("median correct", "median_correct", lambda x: of(x).median_correct, num),
        col("median incorrect", "median_incorrect", lambda x: of(x).median_incorrect, num),
        col("Mann-Whitney p", "mannwhitney_p", lambda x: of(x).p, pval),
    ]
    note = ("Completion tokens of correct vs incorrect outputs; two-sided Mann-Whitney U test. "
            "Across questions this mixes length with difficulty: see the within-question table.")
    return make_table("lengths", "Length of correct vs incorrect outputs", columns,
                      cell_rows(r), note)


def bin_column(i: int) -> Column[CellRow]:
    """Quartile i+1: accuracy and token range on the page; its four numbers in CSV."""

    def found(x: CellRow) -> an.LengthBin | None:
        return x.bins[i] if i < len(x.bins) else None

    def show(b: an.LengthBin | None) -> str:
        return DASH if b is None else f"{pct(b.accuracy)} ({b.lo_tokens}–{b.hi_tokens})"

    def to_csv(b: an.LengthBin | None) -> tuple[CsvValue, ...]:
        if b is None:
            return "", "", "", ""
        return b.lo_tokens, b.hi_tokens, b.n, scaled(b.accuracy)

    names = [f"q{i + 1}_{k}" for k in ("lo_tokens", "hi_tokens", "n", "acc_pct")]
    return col(f"Q{i + 1} acc % (tokens)", names, found, show, to_csv)


def build_length_bins(r: ResultSet) -> Table:
    columns = cell_columns() + [bin_column(i) for i in range(BINS)]
    note = (f"Samples of each cell split into {BINS} equal-count bins by completion tokens "
            "(Q1 shortest); accuracy in each, with its token range.")
    return make_table("length_bins", "Accuracy by output length", columns, cell_rows(r), note)


@dataclass(frozen=True)
class Scope:
    scope: str
    task: str
    result: an.ShorterCorrect


def within_scopes(r: ResultSet) -> list[Scope]:
    scopes = [("all variants", t.title, [s for s in r.samples if s.task == t.label])
              for t in r.tasks]
    scopes += [(f"{name} (repeats)", "all tasks", [s for s in r.samples if s.variant == name])
               for name in r.with_data]
    found = [Scope(scope, task, an.shorter_is_correct(ss)) for scope, task, ss in scopes]
    return [s for s in found if s.result.pairs]


def share_text(x: an.ShorterCorrect) -> str:
    return f"{pct(x.share)} [{pct(x.lo)}, {pct(x.hi)}]" if math.isfinite(x.share) else DASH


def build_within(r: ResultSet) -> Table:
    columns: list[Column[Scope]] = [
        col("scope", "scope", lambda x: x.scope),
        col("task", "task", lambda x: x.task),
        col("pairs", "pairs", lambda x: x.result.pairs),
        col("shorter correct % (pairs)", "pairs_shorter_correct", lambda x: x.result,
            lambda v: pct(v.pair_share), lambda v: (v.pairs_shorter_correct,)),
        col("questions shorter/longer", ["questions_shorter", "questions_longer"],
            lambda x: x.result, lambda v: f"{v.questions_shorter}/{v.questions_longer}",
            lambda v: (v.questions_shorter, v.questions_longer)),
        col("share shorter % [95% CI]", ["share_pct", "share_lo", "share_hi"],
            lambda x: x.result, share_text,
            lambda v: (scaled(v.share), scaled(v.lo), scaled(v.hi))),
        col("sign test p", "sign_test_p", lambda x: x.result.p, pval),
    ]
    note = ("Among pairs of outputs to the same question where one is correct and the other "
            "is not, how often is the shorter one correct? Comparing within a question removes "
            "question difficulty. Each question votes for shorter or longer by its majority of "
            "pairs; the share, its exact 95% interval and the sign test are over questions. "
            "'(repeats)': pairs among one variant's repeats only.")
    return make_table("within_question", "Within-question comparison: is the shorter output "
                      "the correct one?", columns, within_scopes(r), note)


def draw_length_bins(figs: Figures) -> Plot | None:
    r = figs.results
    if not r.cells:
        return None
    with figs.style():
        fig, axes = figs.new(len(r.tasks), labels=r.with_data)  # room for the legend
        for ax, t in zip(axes, r.tasks, strict=False):
            for n in r.with_data:
                c = r.cell(n, t.label)
                if c is None:
                    continue
                found = an.accuracy_by_length(c.samples, BINS)
                ax.plot(range(1, len(found) + 1), [100 * b.accuracy for b in found],
                        marker="o", color=figs.colour[n], label=mpl_text(n))
            ax.set_title(mpl_text(t.title))
            ax.set_xticks(range(1, BINS + 1), [f"Q{i}" for i in range(1, BINS + 1)])
            ax.set_xlabel("length quartile (Q1 shortest)")
            ax.set_ylim(-3, 103)
        axes[0].set_ylabel("accuracy (%)")
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper")
    return figs.save(fig, "length_bins", "Accuracy by output length",
                     "Accuracy within equal-count bins of completion tokens, per variant.")
