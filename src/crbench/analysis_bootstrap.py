"""Bootstrap estimates: a mean over questions with its 95% interval (see crbench.analysis for
the conventions: two-level bootstrap, questions then repeats, percentile interval, seeded).

Split out of crbench.analysis, which re-exports every name here.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Estimate:
    mean: float
    lo: float
    hi: float
    n_questions: int
    n_samples: int
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)



def question_mean(per_question: Mapping[Hashable, Sequence[float]]) -> float:
    """Mean over questions of the per-question mean (NaN when there are none)."""
    if not per_question:
        return math.nan
    return float(np.mean([np.mean(v) for v in per_question.values()]))


def bootstrap_means(
    arms: Sequence[Mapping[Hashable, Sequence[float]]], n_boot: int = 2000, seed: int = 0
) -> np.ndarray:
    """Two-level bootstrap of question means for one or more paired arms.

    Questions are drawn once per replicate and shared by all arms (only questions every arm has
    are used), then each arm's repeats are redrawn within each drawn question. Returns an array
    (n_boot, len(arms)) of means over questions of per-question means.
    """
    questions = sorted(set.intersection(*(set(a) for a in arms)), key=repr)
    out = np.full((n_boot, len(arms)), math.nan)
    if not questions:
        return out
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(questions), size=(n_boot, len(questions)))
    for k, arm in enumerate(arms):
        counts = np.array([len(arm[q]) for q in questions])
        values = np.zeros((len(questions), counts.max()))
        for i, q in enumerate(questions):
            values[i, : counts[i]] = arm[q]
        # In chunks of replicates: the (replicates, questions, repeats) array can be large.
        for start in range(0, n_boot, 256):
            p = picks[start : start + 256]
            c = counts[p]
            j = (rng.random((*p.shape, values.shape[1])) * c[..., None]).astype(int)
            used = np.arange(values.shape[1]) < c[..., None]
            drawn = np.where(used, values[p[..., None], j], 0.0)
            out[start : start + 256, k] = (drawn.sum(-1) / c).mean(-1)
    return out


def interval(mean: float, draws: np.ndarray, n_q: int, n_s: int) -> Estimate:
    """`mean` with the 2.5 and 97.5 percentiles of its bootstrap draws (NaN: no questions)."""
    if n_q == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, 0, draws)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return Estimate(mean, float(lo), float(hi), n_q, n_s, draws)


def estimate(
    per_question: Mapping[Hashable, Sequence[float]], n_boot: int = 2000, seed: int = 0
) -> Estimate:
    """Mean over questions (of the mean over repeats) with a two-level bootstrap 95% interval."""
    draws = bootstrap_means([per_question], n_boot, seed)[:, 0]
    n_samples = sum(len(v) for v in per_question.values())
    return interval(question_mean(per_question), draws, len(per_question), n_samples)


def average_estimate(estimates: Sequence[Estimate]) -> Estimate:
    """Unweighted mean of several task estimates; the interval averages their (independent)
    bootstrap draws, so it reflects each task's own uncertainty."""
    arms = [e.draws for e in estimates if e.draws is not None and e.n_questions]
    if not estimates or len(arms) < len(estimates):
        return Estimate(math.nan, math.nan, math.nan, 0, 0)
    draws = np.mean(arms, axis=0)
    mean = float(np.mean([e.mean for e in estimates]))
    n_q = sum(e.n_questions for e in estimates)
    return interval(mean, draws, n_q, sum(e.n_samples for e in estimates))


def paired_difference(
    parent: Mapping[Hashable, Sequence[float]],
    child: Mapping[Hashable, Sequence[float]],
    n_boot: int = 2000,
    seed: int = 0,
) -> Estimate:
    """child − parent over the questions both have, with a paired two-level bootstrap interval."""
    shared = [q for q in child if q in parent]
    p = {q: parent[q] for q in shared}
    c = {q: child[q] for q in shared}
    draws = bootstrap_means([c, p], n_boot, seed)
    diff = question_mean(c) - question_mean(p) if shared else math.nan
    n_s = sum(len(v) for v in c.values()) + sum(len(v) for v in p.values())
    return interval(diff, draws[:, 0] - draws[:, 1], len(shared), n_s)
