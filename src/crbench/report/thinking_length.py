"""Section "Does it think longer?": one verdict per compressed variant against its parent, on
the thinking tokens of the questions both answered (issue #13).

Built on the report's one pairing (`ctx.pairs`, report/pairs.py): a variant's tasks are pooled
(a question is one item of one task), each question's value is its mean thinking tokens over
repeats, and the variant's questions are compared with its parent's on the same questions.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from scipy import stats

from crbench import analysis as an
from crbench.analysis import Estimate, Sample
from crbench.report.context import ReportContext
from crbench.report.document import Column, Section, Table, col, make_table, shown
from crbench.report.fmt import DASH, CsvValue, num, pval, raw
from crbench.report.pairs import Pair
from crbench.report.results import ResultSet, TaskInfo

TITLE = "Does it think longer?"
LONGER, SHORTER, SAME = "thinks longer", "thinks shorter", "no detectable difference"
NOTE = ("Thinking tokens (Sample.thinking_tokens: the tokens before the end of thinking) per "
        "question, the mean over its repeats, on the questions both the variant and its parent "
        "answered. Δ: variant − parent, mean over questions, with a paired bootstrap 95% "
        "interval (questions, and repeats within them, resampled). Wilcoxon: two-sided "
        "signed-rank test of the per-question differences (1 when every difference is 0). "
        "Verdict: thinks longer when the interval lies above 0, thinks shorter when below, no "
        "detectable difference otherwise.")
SUMMARY = {  # verdict -> how the summary paragraph opens its group
    LONGER: "Think longer than their parent (paired bootstrap 95% interval above 0)",
    SHORTER: "Think shorter than their parent (paired bootstrap 95% interval below 0)",
    SAME: "No detectable difference",
}


@dataclass(frozen=True)
class LengthVerdict:
    """A variant against its parent on thinking tokens, over some of their shared tasks."""

    variant: str
    parent: str
    task: TaskInfo | None  # None: the variant's tasks pooled
    n_tasks: int
    parent_mean: float  # mean thinking tokens per question, shared questions only
    variant_mean: float
    diff: Estimate  # variant − parent
    p: float  # Wilcoxon signed-rank, two-sided

    @property
    def verdict(self) -> str:
        if self.diff.lo > 0:
            return LONGER
        if self.diff.hi < 0:
            return SHORTER
        return SAME  # an interval across 0 (or none at all)


def thinking_tokens(s: Sample) -> float:
    return float(s.thinking_tokens)


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided signed-rank p; scipy cannot rank differences that are all zero: p = 1."""
    if not any(differences):
        return 1.0
    return float(stats.wilcoxon(differences).pvalue)


def compare(results: ResultSet, pairs: Sequence[Pair], task: TaskInfo | None,
            ) -> LengthVerdict | None:
    """The pairs (one variant, one parent, one or more tasks) pooled into one comparison;
    None when they share no question."""
    parent_q = an.by_question([s for p in pairs for s in p.parent_samples], thinking_tokens)
    child_q = an.by_question([s for p in pairs for s in p.child_samples], thinking_tokens)
    shared: list[Hashable] = [q for q in child_q if q in parent_q]
    if not shared:
        return None
    parent_q = {q: parent_q[q] for q in shared}
    child_q = {q: child_q[q] for q in shared}
    first = pairs[0]
    labels = [p.task.label for p in pairs]
    seed = an.cell_seed(results.seed, first.parent.variant, first.child.variant,
                        "thinking tokens", *labels)
    diff = an.paired_difference(parent_q, child_q, results.n_boot, seed)
    differences = [statistics.fmean(child_q[q]) - statistics.fmean(parent_q[q]) for q in shared]
    return LengthVerdict(first.child.variant, first.parent.variant, task, len(pairs),
                         an.question_mean(parent_q), an.question_mean(child_q), diff,
                         wilcoxon_p(differences))


def verdicts(results: ResultSet, pairs: Sequence[Pair]) -> tuple[list[LengthVerdict],
                                                                   list[LengthVerdict]]:
    """(pooled: one per variant, per task: one per variant and task), in the pairing's order."""
    by_child: dict[str, list[Pair]] = {}
    for p in pairs:
        by_child.setdefault(p.child.variant, []).append(p)
    pooled = [v for ps in by_child.values() if (v := compare(results, ps, None))]
    per_task = [v for p in pairs if (v := compare(results, [p], p.task))]
    return pooled, per_task


def columns(per_task: bool) -> list[Column[LengthVerdict]]:
    def diff_csv(e: Estimate) -> tuple[CsvValue, ...]:
        return tuple(raw(x) for x in (e.mean, e.lo, e.hi))

    def diff_text(e: Estimate) -> str:
        if e.n_questions == 0 or not math.isfinite(e.mean):
            return DASH
        return f"{e.mean:+.1f} [{e.lo:+.1f}, {e.hi:+.1f}]"

    scope: Column[LengthVerdict] = (
        col("task", "task", lambda v: v.task, lambda t: t.title if t else "",
            lambda t: (t.label if t else "",)) if per_task
        else col("tasks", "tasks", lambda v: v.n_tasks))
    return [
        col("variant", "variant", lambda v: v.variant),
        col("parent", "parent", lambda v: v.parent),
        scope,
        col("questions", "questions", lambda v: v.diff.n_questions),
        col("parent thinking tokens", "parent_thinking_tokens", lambda v: v.parent_mean,
            lambda x: num(x, 1)),
        col("variant thinking tokens", "variant_thinking_tokens", lambda v: v.variant_mean,
            lambda x: num(x, 1)),
        col("Δ thinking tokens [95% CI]", ["diff_tokens", "diff_lo", "diff_hi"],
            lambda v: v.diff, diff_text, diff_csv),
        col("Wilcoxon p", "wilcoxon_p", lambda v: v.p, pval),
        col("verdict", "verdict", lambda v: v.verdict),
    ]


def summary(pooled: Sequence[LengthVerdict]) -> str:
    """One sentence per verdict group, naming its variants (escaped by the renderers)."""
    parts = []
    for verdict, opening in SUMMARY.items():
        names = [v.variant for v in pooled if v.verdict == verdict]
        if names:
            parts.append(f"{opening}: {', '.join(names)}.")
    return " ".join(parts)


def build_tables(results: ResultSet, pairs: Sequence[Pair]) -> tuple[str, Table, Table]:
    pooled, per_task = verdicts(results, pairs)
    overall = make_table("thinks_longer", "Thinking tokens against the parent, tasks pooled",
                         columns(per_task=False), pooled, NOTE)
    by_task = make_table("thinks_longer_by_task", "Thinking tokens against the parent, per "
                         "task", columns(per_task=True), per_task)
    return summary(pooled), overall, by_task


def build(ctx: ReportContext) -> Section | None:
    pairs = ctx.pairs
    if not any(s.thinking_tokens for p in pairs for s in (*p.parent_samples, *p.child_samples)):
        return None  # no variant has a parent, or nothing recorded thinking tokens
    text, overall, by_task = build_tables(ctx.results, pairs)
    return Section(TITLE, text, shown(overall, by_task))
