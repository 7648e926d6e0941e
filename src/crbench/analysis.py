"""Statistics for the report: pure functions from stored rows to numbers (no files, no plots).

Conventions, used everywhere in the report:

* A *question* is one item of one task; a *sample* is one scored generation of it (one repeat).
* Accuracy (and any per-sample value, e.g. tokens) is the mean over questions of the per-question
  mean over repeats, so every question weighs the same even while a run is half done. With the
  same number of repeats for every question this equals the mean over repeats of each repeat's
  accuracy (the paper's protocol).
* 95% intervals come from a two-level bootstrap: resample questions with replacement, then the
  repeats within each drawn question with replacement; percentile interval; seeded.
* Paired comparisons resample the *same* questions for both variants.
* Flips: a question counts as solved by a variant when the majority (strictly more than half) of
  its repeats are correct; McNemar's exact test is the two-sided binomial test on the flips.
* The headline average is the unweighted mean over the reasoning tasks present; knowledge tasks
  (MuSiQue-like, `KNOWLEDGE_TASKS`) are reported separately, as in the paper.

The bootstrap estimates live in `crbench.analysis_bootstrap` (re-exported here); the metrics of
several samples per question (avg@k, pass@k, maj@k) in `crbench.sampling_metrics`.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from crbench.analysis_bootstrap import (  # noqa: F401 (re-exported: the report reads them here)
    Estimate,
    average_estimate,
    bootstrap_means,
    estimate,
    interval,
    paired_difference,
    question_mean,
)
from crbench.records import DENSE, VariantRecord

# Tasks that test recalled knowledge rather than reasoning: kept out of the headline average.
KNOWLEDGE_TASKS = frozenset({"musique", "synth_multihop"})
DENSE_BITS = 16.0  # where a dense model sits on the bits axis


@dataclass(frozen=True)
class Sample:
    """One scored generation, as the report reads it from the store."""

    variant: str
    task: str  # task label from the spec, e.g. "musique_open"
    item: int  # item index: the question within the task
    repeat: int
    correct: bool
    completion_tokens: int
    task_id: str = ""  # registry id, e.g. "musique"
    mode: str = ""  # knowledge tasks: "closed" or "open" book
    no_answer: bool = False
    truncated: bool = False
    thinking_tokens: int = 0
    answer_tokens: int = 0
    wall_s: float = 0.0
    em: float | None = None
    f1: float | None = None
    output: str = field(default="", repr=False)


def is_knowledge(task_id: str) -> bool:
    return task_id in KNOWLEDGE_TASKS


def cell_seed(seed: int, *labels: str) -> int:
    """A stable seed per cell, so cells get independent bootstrap draws and reruns agree."""
    return seed + zlib.crc32("\0".join(labels).encode())


def by_question(
    samples: Iterable[Sample], value: Callable[[Sample], float] = lambda s: float(s.correct)
) -> dict[Hashable, list[float]]:
    """Per question (task, item): the values of its samples, ordered by repeat."""
    groups: dict[Hashable, list[tuple[int, float]]] = defaultdict(list)
    for s in samples:
        groups[(s.task, s.item)].append((s.repeat, value(s)))
    return {q: [v for _, v in sorted(vals)] for q, vals in groups.items()}


def samples_by_question(samples: Iterable[Sample]) -> dict[Hashable, list[Sample]]:
    """Per question (task, item): its samples, ordered by repeat."""
    groups: dict[Hashable, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.task, s.item)].append(s)
    return {q: sorted(ss, key=lambda s: s.repeat) for q, ss in groups.items()}


# --- paired flips ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Flips:
    fixed: int  # parent wrong, child right
    broken: int  # parent right, child wrong
    both_right: int
    both_wrong: int

    @property
    def n(self) -> int:
        return self.fixed + self.broken + self.both_right + self.both_wrong


def solved(values: Sequence[float]) -> bool:
    """A question is solved when strictly more than half of its repeats are correct."""
    return sum(values) > len(values) / 2


def count_flips(
    parent: Mapping[Hashable, Sequence[float]], child: Mapping[Hashable, Sequence[float]]
) -> Flips:
    counts = {"fixed": 0, "broken": 0, "both_right": 0, "both_wrong": 0}
    for q in child:
        if q not in parent:
            continue
        was, now = solved(parent[q]), solved(child[q])
        key = {(False, True): "fixed", (True, False): "broken"}.get((was, now))
        counts[key or ("both_right" if now else "both_wrong")] += 1
    return Flips(**counts)


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of fixed vs broken at p = 1/2."""
    if fixed + broken == 0:
        return 1.0
    return float(stats.binomtest(fixed, fixed + broken, 0.5).pvalue)


# --- length and test-time compute ------------------------------------------------------------


@dataclass(frozen=True)
class LengthComparison:
    n_correct: int
    n_incorrect: int
    mean_correct: float
    median_correct: float
    mean_incorrect: float
    median_incorrect: float
    p: float  # two-sided Mann-Whitney U test (NaN when a group is empty)


def length_comparison(samples: Sequence[Sample]) -> LengthComparison:
    """Completion tokens of correct vs incorrect samples, with a Mann-Whitney U test."""
    right = np.array([s.completion_tokens for s in samples if s.correct], dtype=float)
    wrong = np.array([s.completion_tokens for s in samples if not s.correct], dtype=float)

    def mean_median(x: np.ndarray) -> tuple[float, float]:
        return (float(x.mean()), float(np.median(x))) if len(x) else (math.nan, math.nan)

    p = math.nan
    if len(right) and len(wrong):
        p = float(stats.mannwhitneyu(right, wrong, alternative="two-sided").pvalue)
    return LengthComparison(len(right), len(wrong), *mean_median(right), *mean_median(wrong), p)


@dataclass(frozen=True)
class LengthBin:
    lo_tokens: int
    hi_tokens: int
    n: int
    accuracy: float


def accuracy_by_length(samples: Sequence[Sample], bins: int = 4) -> list[LengthBin]:
    """Accuracy within equal-count length bins (by rank of completion tokens, shortest first)."""
    ordered = sorted(samples, key=lambda s: s.completion_tokens)
    if not ordered:
        return []
    out = []
    for part in np.array_split(np.arange(len(ordered)), min(bins, len(ordered))):
        group = [ordered[i] for i in part]
        acc = float(np.mean([s.correct for s in group]))
        out.append(
            LengthBin(group[0].completion_tokens, group[-1].completion_tokens, len(group), acc)
        )
    return out


@dataclass(frozen=True)
class ShorterCorrect:
    """Within-question comparison: among pairs of outputs to the same question where one is
    correct and one is not, is the shorter one the correct one?"""

    pairs: int  # discordant pairs with different lengths
    pairs_shorter_correct: int
    questions_shorter: int  # questions where most discordant pairs have the shorter correct
    questions_longer: int  # ... the longer correct (ties between the two left out)
    share: float  # questions_shorter / (questions_shorter + questions_longer)
    lo: float  # exact (Clopper-Pearson) 95% interval of that share
    hi: float
    p: float  # two-sided sign test over questions

    @property
    def pair_share(self) -> float:
        return self.pairs_shorter_correct / self.pairs if self.pairs else math.nan


def shorter_is_correct(samples: Iterable[Sample]) -> ShorterCorrect:
    """Pairs are counted within each question, so question difficulty cannot confound the
    result. Pairs of one question are not independent, so the test and interval are over
    questions: each question votes for "shorter" or "longer" by its majority of pairs."""
    groups: dict[Hashable, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.task, s.item)].append(s)
    pairs = shorter = q_short = q_long = 0
    for group in groups.values():
        right = np.array([s.completion_tokens for s in group if s.correct])
        wrong = np.array([s.completion_tokens for s in group if not s.correct])
        if not len(right) or not len(wrong):
            continue
        sign = np.sign(right[:, None] - wrong[None, :])  # -1: the correct one is shorter
        n_short, n_long = int((sign < 0).sum()), int((sign > 0).sum())
        pairs += n_short + n_long
        shorter += n_short
        q_short += n_short > n_long
        q_long += n_long > n_short
    n = q_short + q_long
    if n == 0:
        return ShorterCorrect(pairs, shorter, 0, 0, math.nan, math.nan, math.nan, math.nan)
    test = stats.binomtest(q_short, n, 0.5)
    ci = test.proportion_ci(confidence_level=0.95, method="exact")
    return ShorterCorrect(
        pairs, shorter, q_short, q_long, q_short / n, ci.low, ci.high, float(test.pvalue)
    )


@dataclass(frozen=True)
class ComputeProfile:
    n: int
    correct: int
    mean_tokens: float
    median_tokens: float
    mean_thinking: float
    mean_answer: float
    truncation_rate: float
    no_answer_rate: float
    tokens_per_correct: float  # all tokens spent / correct answers (inf when none is correct)
    seconds_per_correct: float


def compute_profile(samples: Sequence[Sample]) -> ComputeProfile:
    if not samples:
        nan = math.nan
        return ComputeProfile(0, 0, nan, nan, nan, nan, nan, nan, nan, nan)
    tokens = np.array([s.completion_tokens for s in samples], dtype=float)
    correct = sum(s.correct for s in samples)
    per_correct = (lambda total: total / correct) if correct else (lambda total: math.inf)
    return ComputeProfile(
        n=len(samples),
        correct=correct,
        mean_tokens=float(tokens.mean()),
        median_tokens=float(np.median(tokens)),
        mean_thinking=float(np.mean([s.thinking_tokens for s in samples])),
        mean_answer=float(np.mean([s.answer_tokens for s in samples])),
        truncation_rate=float(np.mean([s.truncated for s in samples])),
        no_answer_rate=float(np.mean([s.no_answer for s in samples])),
        tokens_per_correct=per_correct(float(tokens.sum())),
        seconds_per_correct=per_correct(float(sum(s.wall_s for s in samples))),
    )


# --- variants: parents and compression sweeps -----------------------------------------------


def parent_of(
    variant: VariantRecord, variants: Mapping[str, VariantRecord]
) -> VariantRecord | None:
    """The model a variant is compared with: its recorded `parent` when the run knows it, else
    the dense model it derives from (None for dense or orphan variants)."""
    if variant.parent is not None and variant.parent in variants:
        return variants[variant.parent]
    if variant.method == DENSE:
        return None
    base = variant.base_model
    dense = [v for v in variants.values() if v.method == DENSE and v.base_model == base]
    # Prefer the dense variant named like the base model when several are dense.
    dense.sort(key=lambda v: (v.variant != variant.base_model, v.variant))
    return dense[0] if dense else None


def uncompressed_ancestor(
    variant: VariantRecord, variants: Mapping[str, VariantRecord]
) -> VariantRecord | None:
    """The nearest ancestor with neither pruning nor quantization (a dense or distilled model):
    where a sparsity or bit-width curve of the variant starts. None when there is none."""
    seen = {variant.variant}
    parent = parent_of(variant, variants)
    while parent is not None and parent.variant not in seen:
        if parent.sparsity is None and parent.bits is None:
            return parent
        seen.add(parent.variant)
        parent = parent_of(parent, variants)
    return None


Curve = list[tuple[float, str]]  # (x, variant name), in plotting order


def sweeps(variants: Iterable[VariantRecord], axis: str) -> dict[tuple[str, str], Curve]:
    """Compression curves: (base model, method kind) -> sorted [(x, variant name)].

    axis "sparsity": pruned-only variants, x = sparsity in %, dense at 0.
    axis "bits": quantized-only variants, x = bits, dense at 16.
    Each curve starts from its uncompressed ancestor (the dense parent, or e.g. the distilled
    student a quantized student derives from); curves without a compressed point are dropped.
    """
    variants = list(variants)
    curves: dict[tuple[str, str], Curve] = defaultdict(list)
    for v in variants:
        if axis == "sparsity" and v.sparsity is not None and v.bits is None:
            curves[(v.base_model, v.kind)].append((100 * v.sparsity, v.variant))
        elif axis == "bits" and v.bits is not None and v.sparsity is None:
            curves[(v.base_model, v.kind)].append((v.bits, v.variant))
    dense_x = 0.0 if axis == "sparsity" else DENSE_BITS
    lookup = {v.variant: v for v in variants}
    for points in curves.values():
        parent = uncompressed_ancestor(lookup[points[0][1]], lookup)
        if parent is not None:
            points.append((dense_x, parent.variant))
        points.sort(reverse=axis == "bits")
    return dict(sorted(curves.items()))
