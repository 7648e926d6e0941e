"""Metrics of several samples per question: avg@k, pass@k and maj@k (pure functions).

A question with n scored samples, c of them correct:

* avg@n: the share of its samples that are correct, c / n; over questions, the mean of the
  per-question shares (the paper's "average of three runs"), with the two-level bootstrap
  interval of `crbench.analysis_bootstrap` (questions, then samples within each question).
* pass@k (k <= n): the chance that at least one of k samples drawn without replacement from the
  n is correct, the unbiased estimator 1 - C(n-c, k) / C(n, k). Computed as the product
  prod_{i=n-c+1..n} (1 - k / i), which never forms the binomials (they overflow a float for
  n in the hundreds). Interval: bootstrap over questions.
* maj@k (k <= n): the majority answer of the first k samples (by sample number) is correct.
  Samples vote with their extracted answer, compared after removing white space (`vote_key`),
  or by the task's own key where it gives one (`crbench.tasks.vote_key`: math tasks compare
  the value an answer states, so "\\frac{1}{2}" and "0.5" are one vote); samples without an
  answer do not vote, and a question with no vote counts as wrong. A vote's
  answer is correct when any sample that gave it was scored correct (the task's own comparison
  decided that). Ties go to the answer that appeared first, i.e. whose earliest sample has the
  lowest sample number: deterministic, and what one would answer reading the samples in order.
  Interval: bootstrap over questions.

The trap these names avoid: pass@1 estimated from n samples per question is avg@n (the mean
over samples), not pass@n. Counting a question as solved when any of its n samples is correct
gives pass@n, which grows with n and is not comparable with a single-sample accuracy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from crbench.analysis_bootstrap import Estimate, estimate

# maj@1 and maj@2 are (nearly) the first sample's accuracy: two different answers tie and the
# first one wins. Majority voting starts to mean something at three samples.
MAJ_MIN_K = 3
Q = TypeVar("Q", bound=Hashable)  # whatever names a question: an item index, (task, item) ...
TaskKey = Callable[[str], str]  # a task's vote key: extracted answer -> what votes compare


@dataclass(frozen=True)
class Attempt:
    """One scored sample of a question, as the sampling metrics read it."""

    sample: int  # its sample number within the question (repeat)
    correct: bool
    extracted: str | None  # the answer read from the output (None: no answer)


@dataclass(frozen=True)
class SamplingMetrics:
    """avg@n, pass@k and maj@k of one cell (one variant on one task)."""

    n_min: int  # fewest samples any question has
    n_max: int  # most samples any question has
    avg: Estimate  # avg@n over every sample
    pass_at: dict[int, Estimate] = field(default_factory=dict)  # k -> pass@k
    maj_at: dict[int, Estimate] = field(default_factory=dict)  # k -> maj@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of a question with n samples, c of them correct (1 <= k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k samples holds a correct one
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def ks_for(n: int) -> list[int]:
    """The k reported for n samples: every power of two up to n, and n itself."""
    ks = [2**p for p in range(n.bit_length()) if 2**p <= n]
    return ks + ([n] if n >= 1 and n not in ks else [])


def vote_key(extracted: str | None, task_key: TaskKey | None = None) -> str | None:
    """The answer a sample votes for: its extracted text, read by the task's key when there is
    one, without white space (None: no vote)."""
    if extracted is None:
        return None
    key = "".join((task_key(extracted) if task_key else extracted).split())
    return key or None


def majority_correct(attempts: Sequence[Attempt], task_key: TaskKey | None = None) -> bool:
    """Whether the majority answer of these samples is correct (see the module docstring for
    who votes, what a vote's answer is worth and how ties are broken)."""
    votes: dict[str, list[Attempt]] = {}  # in order of first appearance
    for a in sorted(attempts, key=lambda a: a.sample):
        key = vote_key(a.extracted, task_key)
        if key is not None:
            votes.setdefault(key, []).append(a)
    if not votes:
        return False
    top = max(len(group) for group in votes.values())
    winner = next(group for group in votes.values() if len(group) == top)  # earliest wins
    return any(a.correct for a in winner)


def maj_at_k(attempts: Sequence[Attempt], k: int, task_key: TaskKey | None = None) -> bool:
    """maj@k of one question: the majority over its first k samples by sample number."""
    if not 1 <= k <= len(attempts):
        raise ValueError(f"maj@{k} needs at least {k} samples; got {len(attempts)}")
    return majority_correct(sorted(attempts, key=lambda a: a.sample)[:k], task_key)


def sampling_metrics(given: Mapping[Q, Sequence[Attempt]], n_boot: int = 2000,
                     seed: int = 0, task_key: TaskKey | None = None) -> SamplingMetrics:
    """avg@n, pass@k and maj@k (every k of `ks_for` the most samples a question has) with 95%
    bootstrap intervals. While a run is in progress questions have different numbers of
    samples: each k uses the questions with at least k of them (its Estimate counts them).
    `task_key`: the task's vote key (`crbench.tasks.vote_key(module)`); None: the default."""
    if task_key is not None:  # each answer is read once for every k (math keys call sympy)
        task_key = functools.lru_cache(maxsize=None)(task_key)
    questions: dict[Hashable, list[Attempt]] = {q: list(a) for q, a in given.items() if a}
    if not questions:
        empty = Estimate(math.nan, math.nan, math.nan, 0, 0)
        return SamplingMetrics(0, 0, empty)
    sizes = [len(a) for a in questions.values()]
    avg = estimate({q: [float(a.correct) for a in att] for q, att in questions.items()},
                   n_boot, seed)
    pass_at, maj_at = {}, {}
    for k in ks_for(max(sizes)):
        enough = {q: att for q, att in questions.items() if len(att) >= k}
        pass_at[k] = estimate({q: [pass_at_k(len(att), sum(a.correct for a in att), k)]
                               for q, att in enough.items()}, n_boot, seed)
        if k >= MAJ_MIN_K:
            maj_at[k] = estimate({q: [float(maj_at_k(att, k, task_key))]
                                  for q, att in enough.items()}, n_boot, seed)
    return SamplingMetrics(min(sizes), max(sizes), avg, pass_at, maj_at)
