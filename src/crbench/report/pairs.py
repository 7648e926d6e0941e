"""Each variant against its parent on the questions both answered: flips and paired deltas."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from crbench import analysis as an
from crbench.analysis import Estimate, Sample
from crbench.records import VariantRecord
from crbench.report.results import ResultSet, TaskInfo, score_value


@dataclass
class Pair:
    parent: VariantRecord
    child: VariantRecord
    task: TaskInfo
    parent_samples: list[Sample]
    child_samples: list[Sample]
    flips: an.Flips
    p: float  # McNemar's exact test of fixed vs broken
    diff: Estimate  # score difference (child − parent)
    tokens: Estimate  # completion-token difference (child − parent)


@dataclass(frozen=True)
class ScoreComparison:
    """One model's scores against another's on the questions both answered."""

    flips: an.Flips  # "fixed": the first wrong, the second right; "broken": the reverse
    p: float  # McNemar's exact test of fixed vs broken
    diff: Estimate  # score difference (second − first), paired bootstrap interval


def compare_scores(first: Sequence[Sample], second: Sequence[Sample], n_boot: int,
                   seed: int) -> ScoreComparison:
    """Flips, McNemar and the paired score difference of `second` against `first`: the one
    comparison the parent pairing and the sibling comparison (report/protection.py) share."""
    fq, sq = an.by_question(first, score_value), an.by_question(second, score_value)
    flips = an.count_flips(fq, sq)
    return ScoreComparison(flips, an.mcnemar_exact(flips.fixed, flips.broken),
                           an.paired_difference(fq, sq, n_boot, seed))


def completion_tokens(s: Sample) -> float:
    return float(s.completion_tokens)


def paired(results: ResultSet) -> list[Pair]:
    out = []
    for parent, child, t in results.pairs():
        pc, cc = results.cell(parent.variant, t.label), results.cell(child.variant, t.label)
        assert pc is not None and cc is not None  # results.pairs() gives only pairs with both
        seed = an.cell_seed(results.seed, parent.variant, child.variant, t.label)
        scores = compare_scores(pc.samples, cc.samples, results.n_boot, seed)
        tokens = an.paired_difference(an.by_question(pc.samples, completion_tokens),
                                      an.by_question(cc.samples, completion_tokens),
                                      results.n_boot, seed + 1)
        out.append(Pair(parent, child, t, pc.samples, cc.samples, scores.flips, scores.p,
                        scores.diff, tokens))
    return out


def relative_change(results: ResultSet, variant: str, task: str) -> float:
    """Score of a variant relative to its parent's on one task, in % (−100: lost everything)."""
    parent = results.parent(variant)
    c = results.cell(variant, task)
    p = results.cell(parent.variant, task) if parent else None
    if c is None or p is None or not p.score.mean > 0:
        return math.nan
    return 100 * (c.score.mean / p.score.mean - 1)
