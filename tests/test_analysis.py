"""The report's statistics on constructed data whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from crbench import analysis as an
from crbench.analysis import Sample
from crbench.records import VariantRecord


def sample(item, correct, tokens=100, *, variant="v", task="t", repeat=0, **kw) -> Sample:
    return Sample(variant=variant, task=task, item=item, repeat=repeat, correct=bool(correct),
                  completion_tokens=tokens, **kw)


def per_question(pattern: list[list[int]]) -> dict:
    return {("t", i): [float(x) for x in reps] for i, reps in enumerate(pattern)}


# --- accuracy and its interval ---------------------------------------------------------------


def test_accuracy_is_mean_over_questions_of_mean_over_repeats():
    # Question means 1, 0, 2/3, 1/3 -> (1 + 0 + 2/3 + 1/3) / 4 = 0.5
    pq = per_question([[1, 1, 1], [0, 0, 0], [1, 0, 1], [0, 0, 1]])
    e = an.estimate(pq, n_boot=500, seed=1)
    assert e.mean == pytest.approx(0.5)
    assert (e.n_questions, e.n_samples) == (4, 12)
    assert e.lo <= e.mean <= e.hi


def test_unbalanced_repeats_weigh_each_question_once():
    # Question 0 has one repeat, question 1 has four: (1 + 0.25) / 2, not 2/5.
    pq = per_question([[1], [1, 0, 0, 0]])
    assert an.estimate(pq, n_boot=100).mean == pytest.approx(0.625)


def test_by_question_groups_by_task_and_item_in_repeat_order():
    samples = [sample(0, 1, repeat=2), sample(0, 0, repeat=0), sample(1, 1),
               sample(0, 1, task="other")]
    groups = an.by_question(samples)
    assert groups == {("t", 0): [0.0, 1.0], ("t", 1): [1.0], ("other", 0): [1.0]}
    assert an.by_question(samples, lambda s: s.completion_tokens)[("t", 1)] == [100]


def test_interval_degenerate_when_every_sample_agrees():
    e = an.estimate(per_question([[1, 1]] * 20), n_boot=200)
    assert (e.mean, e.lo, e.hi) == (1.0, 1.0, 1.0)


def test_repeats_are_resampled_within_questions():
    # Every question has mean 1/2: resampling questions alone would give a zero-width interval;
    # resampling the two repeats within each question must not.
    e = an.estimate(per_question([[0, 1]] * 10), n_boot=1000, seed=3)
    assert e.mean == 0.5
    assert e.lo < 0.5 < e.hi


def test_interval_shrinks_with_more_questions_and_is_seeded():
    rng = np.random.default_rng(0)
    small = per_question(rng.integers(0, 2, size=(20, 3)).tolist())
    large = per_question(rng.integers(0, 2, size=(400, 3)).tolist())
    es, el = an.estimate(small, 1000, 0), an.estimate(large, 1000, 0)
    assert el.hi - el.lo < (es.hi - es.lo) / 2
    assert an.estimate(small, 1000, 0) == es  # same seed, same interval


def test_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    truth, hits, runs = 0.7, 0, 200
    for run in range(runs):
        pq = per_question((rng.random((60, 1)) < truth).astype(int).tolist())
        e = an.estimate(pq, n_boot=400, seed=run)
        hits += e.lo <= truth <= e.hi
    assert 0.88 <= hits / runs <= 0.99


def test_empty_cell_is_nan_not_an_error():
    e = an.estimate({}, n_boot=50)
    assert math.isnan(e.mean) and e.n_questions == 0


def test_average_of_tasks_averages_means_and_draws():
    a = an.estimate(per_question([[1]] * 10), n_boot=100, seed=1)
    b = an.estimate(per_question([[0], [1]] * 5), n_boot=100, seed=2)
    avg = an.average_estimate([a, b])
    assert avg.mean == pytest.approx(0.75)
    assert avg.lo <= 0.75 <= avg.hi and avg.hi <= 1.0
    assert math.isnan(an.average_estimate([]).mean)


# --- paired comparison -------------------------------------------------------------------------


def test_flips_counted_by_majority_of_repeats():
    parent = per_question([[1, 1, 0], [1, 1, 1], [0, 0, 1], [0, 0, 0], [1, 0, 1], [0, 1, 0]])
    child = per_question([[0, 0, 1], [1, 0, 1], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]])
    # q0 broken, q1 both right, q2 fixed, q3 both wrong, q4 broken, q5 fixed
    assert an.count_flips(parent, child) == an.Flips(fixed=2, broken=2, both_right=1,
                                                     both_wrong=1)
    # A tie (1 of 2) is not a majority: not solved.
    assert not an.solved([1.0, 0.0]) and an.solved([1.0, 1.0, 0.0])


def test_flips_only_on_shared_questions():
    parent = per_question([[1], [1]])
    child = {("t", 0): [0.0], ("t", 9): [1.0]}
    assert an.count_flips(parent, child).n == 1


def test_mcnemar_exact_known_values_and_scipy():
    assert an.mcnemar_exact(0, 6) == pytest.approx(2 * 0.5**6)  # 0.03125
    assert an.mcnemar_exact(3, 3) == pytest.approx(1.0)
    assert an.mcnemar_exact(0, 0) == 1.0
    assert an.mcnemar_exact(2, 11) == pytest.approx(stats.binomtest(2, 13, 0.5).pvalue)


def test_paired_difference_exact_and_its_interval():
    parent = per_question([[1, 1]] * 8 + [[0, 0]] * 2)
    same = an.paired_difference(parent, parent, n_boot=300)
    assert (same.mean, same.lo, same.hi) == (0.0, 0.0, 0.0)  # pairing cancels all noise
    child = per_question([[1, 1]] * 4 + [[0, 0]] * 6)  # 4 questions broken
    d = an.paired_difference(parent, child, n_boot=1000, seed=1)
    assert d.mean == pytest.approx(-0.4)
    assert d.lo < -0.4 < d.hi <= 0.0
    assert d.n_questions == 10


# --- lengths -----------------------------------------------------------------------------------


def test_length_comparison_means_medians_and_mann_whitney():
    samples = [sample(i, 1, t) for i, t in enumerate([100, 200, 300])]
    samples += [sample(10 + i, 0, t) for i, t in enumerate([400, 500, 600, 1000])]
    lc = an.length_comparison(samples)
    assert (lc.n_correct, lc.n_incorrect) == (3, 4)
    assert (lc.mean_correct, lc.median_correct) == (200, 200)
    assert (lc.mean_incorrect, lc.median_incorrect) == (625, 550)
    expected = stats.mannwhitneyu([100, 200, 300], [400, 500, 600, 1000]).pvalue
    assert lc.p == pytest.approx(expected)
    assert lc.p < 0.06
    only_right = an.length_comparison(samples[:3])
    assert math.isnan(only_right.p) and math.isnan(only_right.mean_incorrect)


def test_accuracy_by_length_quantile():
    # 8 samples: the 4 shortest are correct, the 4 longest wrong, split into 4 bins of 2.
    samples = [sample(i, i < 4, 100 * (i + 1)) for i in range(8)]
    bins = an.accuracy_by_length(list(reversed(samples)), bins=4)
    assert [b.accuracy for b in bins] == [1.0, 1.0, 0.0, 0.0]
    assert [(b.lo_tokens, b.hi_tokens, b.n) for b in bins][0] == (100, 200, 2)
    assert len(an.accuracy_by_length(samples[:2], bins=4)) == 2
    assert an.accuracy_by_length([], bins=4) == []


def test_shorter_is_correct_within_questions():
    samples = [
        # q0: correct 100 vs wrong 200, 300 -> 2 pairs, shorter correct twice: votes "shorter"
        sample(0, 1, 100), sample(0, 0, 200, repeat=1), sample(0, 0, 300, repeat=2),
        # q1: correct 500 vs wrong 100 -> the longer is correct: votes "longer"
        sample(1, 1, 500), sample(1, 0, 100, repeat=1),
        # q2: all correct -> no pair; q3: equal lengths -> no pair
        sample(2, 1, 50), sample(2, 1, 70, repeat=1),
        sample(3, 1, 80), sample(3, 0, 80, repeat=1),
    ]
    r = an.shorter_is_correct(samples)
    assert (r.pairs, r.pairs_shorter_correct) == (3, 2)
    assert (r.questions_shorter, r.questions_longer) == (1, 1)
    assert r.share == 0.5 and r.p == pytest.approx(1.0)
    assert r.pair_share == pytest.approx(2 / 3)


def test_shorter_is_correct_sign_test_over_questions():
    # Ten questions where the correct answer is the shorter one, two where it is the longer.
    samples = []
    for q in range(12):
        short_ok = q < 10
        samples += [sample(q, short_ok, 100), sample(q, not short_ok, 400, repeat=1),
                    sample(q, not short_ok, 500, repeat=2)]
    r = an.shorter_is_correct(samples)
    test = stats.binomtest(10, 12, 0.5)
    ci = test.proportion_ci(method="exact")
    assert (r.questions_shorter, r.questions_longer) == (10, 2)
    assert r.p == pytest.approx(test.pvalue)  # 0.0386
    assert (r.lo, r.hi) == pytest.approx((ci.low, ci.high))
    assert r.lo < 10 / 12 < r.hi


def test_questions_are_not_mixed_across_tasks():
    # Same item index in two tasks: no pair across them.
    samples = [sample(0, 1, 100, task="a"), sample(0, 0, 900, task="b")]
    assert an.shorter_is_correct(samples).pairs == 0
    assert math.isnan(an.shorter_is_correct(samples).p)


def test_compute_profile_rates_and_cost_per_correct():
    samples = [
        sample(0, 1, 100, thinking_tokens=80, answer_tokens=20, wall_s=1.0),
        sample(1, 0, 300, thinking_tokens=300, answer_tokens=0, truncated=True, no_answer=True,
               wall_s=3.0),
        sample(2, 1, 200, thinking_tokens=150, answer_tokens=50, wall_s=2.0),
        sample(3, 0, 400, thinking_tokens=350, answer_tokens=50, no_answer=True, wall_s=4.0),
    ]
    p = an.compute_profile(samples)
    assert (p.n, p.correct, p.mean_tokens, p.median_tokens) == (4, 2, 250, 250)
    assert (p.mean_thinking, p.mean_answer) == (220, 30)
    assert (p.truncation_rate, p.no_answer_rate) == (0.25, 0.5)
    assert p.tokens_per_correct == 500 and p.seconds_per_correct == 5.0
    assert math.isinf(an.compute_profile(samples[1:2]).tokens_per_correct)
    assert an.compute_profile([]).n == 0


# --- variants ----------------------------------------------------------------------------------


VARIANTS = {v.variant: v for v in [
    VariantRecord("r1", "r1"),
    VariantRecord("s50", "r1", "sparsegpt", sparsity=0.5),
    VariantRecord("s30", "r1", "sparsegpt", sparsity=0.3),
    VariantRecord("s24", "r1", "sparsegpt", sparsity=0.5, pattern="2:4"),
    VariantRecord("w50", "r1", "wanda", sparsity=0.5),
    VariantRecord("q4", "r1", "gptq", bits=4),
    VariantRecord("q3", "r1", "gptq", bits=3),
    VariantRecord("orphan", "other", "rtn", bits=4),
    VariantRecord("q4s50", "r1", "gptq", sparsity=0.5, bits=4),
]}


def test_parent_is_the_dense_model_of_the_same_base():
    assert an.parent_of(VARIANTS["s50"], VARIANTS).variant == "r1"
    assert an.parent_of(VARIANTS["r1"], VARIANTS) is None
    assert an.parent_of(VARIANTS["orphan"], VARIANTS) is None


def test_recorded_lineage_wins_and_sweeps_start_at_the_dense_root():
    # A distilled student paired with its teacher; a quantized student paired with the
    # student: the recorded parent decides, and the student's bit sweep starts at the student.
    lineage = {v.variant: v for v in [
        VariantRecord("teacher", "teacher"),
        VariantRecord("student", "student", "distill", parent="teacher", teacher="teacher"),
        VariantRecord("student-q4", "student", "gptq", bits=4, parent="student"),
        VariantRecord("dense-student", "student"),
    ]}
    assert an.parent_of(lineage["student"], lineage).variant == "teacher"
    assert an.parent_of(lineage["student-q4"], lineage).variant == "student"
    assert an.uncompressed_ancestor(lineage["student-q4"], lineage).variant == "student"
    assert an.sweeps(lineage.values(), "bits") == {
        ("student", "gptq"): [(16.0, "student"), (4.0, "student-q4")]}
    # A parent the run does not hold: back to the dense model of the same base.
    orphan = VariantRecord("q3", "student", "gptq", bits=3, parent="gone")
    assert an.parent_of(orphan, {**lineage, "q3": orphan}).variant == "dense-student"


def test_sweeps_start_at_the_dense_parent():
    sparsity = an.sweeps(VARIANTS.values(), "sparsity")
    assert sparsity[("r1", "sparsegpt")] == [(0.0, "r1"), (30.0, "s30"), (50.0, "s50")]
    assert sparsity[("r1", "sparsegpt 2:4")] == [(0.0, "r1"), (50.0, "s24")]
    assert sparsity[("r1", "wanda")] == [(0.0, "r1"), (50.0, "w50")]
    bits = an.sweeps(VARIANTS.values(), "bits")
    assert bits[("r1", "gptq")] == [(16.0, "r1"), (4.0, "q4"), (3.0, "q3")]
    assert bits[("other", "rtn")] == [(4.0, "orphan")]  # no dense parent in the run
    # Pruned-and-quantized variants belong on neither one-dimensional curve.
    assert all("q4s50" not in [n for _, n in c] for c in [*sparsity.values(), *bits.values()])
