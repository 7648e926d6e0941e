"""Section "Protected modules at equal bits" (issue #14): siblings made from the same parent by
the same method at the same settings, some keeping modules dense (nothing, the last MLP, the
modules `crbench protect` chose), compared on the same questions; the section says which wins.

What a variant kept dense is read from its manifest (compression.json, stored with its
VariantRecord): the module records marked `kept_dense`, else the recipe's `dense` patterns and
dense overrides when the manifest lists no modules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from crbench import analysis as an
from crbench.analysis import Estimate
from crbench.records import DENSE, VariantRecord
from crbench.report.context import ReportContext
from crbench.report.document import Column, Section, Table, col, make_table, shown
from crbench.report.fmt import DASH, estimate_fields, num, pval, raw, scaled, with_ci
from crbench.report.pairs import ScoreComparison, compare_scores
from crbench.report.results import EMPTY, ResultSet, TaskInfo, score_value

TITLE = "Protected modules at equal bits"
INTRO = ("Variants made from the same parent by the same method at the same bits, group size "
         "and sparsity, at least one of them keeping modules dense, compared on the questions "
         "both answered (tasks pooled: {scope}; each task in the tables). Δ accuracy: paired "
         "bootstrap 95% interval; McNemar: exact two-sided test of the questions only one of "
         "the two solved.")
MEMBERS_NOTE = ("kept dense: modules the manifest records as kept in 16 bits, of all it lists; "
                "dense weights: their share of the decoder's linear weights where the manifest "
                "records module sizes. bits/weight: effective, from what is stored (scales "
                "included). Accuracy in % with a 95% bootstrap interval; pooled: every question of "
                "{scope} together.")
PAIRS_NOTE = ("A question is solved when more than half of its repeats are correct (knowledge "
              "tasks: EM). Δ: second − first in percentage points, mean over the questions both "
              "answered, paired bootstrap 95% interval; a pair has a winner when the interval "
              "excludes 0.")


@dataclass(frozen=True)
class KeptDense:
    """What a variant's recipe kept dense, as its manifest records it."""

    modules: int | None  # modules kept dense (None: the manifest lists no modules)
    listed: int | None  # modules the manifest lists, kept or compressed
    patterns: tuple[str, ...]  # the recipe's dense patterns and dense overrides
    share: float | None  # share of the listed weights kept dense, when sizes are recorded

    @property
    def protects(self) -> bool:
        return bool(self.modules) if self.modules is not None else bool(self.patterns)

    def text(self) -> str:
        if self.modules is None:
            return "by recipe" if self.patterns else "none"
        return f"{self.modules} of {self.listed} modules" if self.modules else "none"


NOTHING_KEPT = KeptDense(None, None, (), None)


def dense_patterns(recipe: Any) -> tuple[str, ...]:  # Any: JSON from the store
    if not isinstance(recipe, dict):
        return ()
    dense = recipe.get("dense")
    found = [str(p) for p in dense] if isinstance(dense, list) else []
    for override in recipe.get("overrides") or []:
        if isinstance(override, dict) and override.get("dense") is True:
            match = override.get("match")
            found += [str(m) for m in match] if isinstance(match, list) else [str(match)]
    return tuple(found)


def kept_dense(v: VariantRecord) -> KeptDense:
    """From the manifest stored with the variant; a missing or unreadable one keeps nothing."""
    try:
        manifest = json.loads(v.manifest or "{}")
    except json.JSONDecodeError:
        return NOTHING_KEPT
    if not isinstance(manifest, dict):
        return NOTHING_KEPT
    patterns = dense_patterns(manifest.get("recipe"))
    records = [m for m in manifest.get("modules") or [] if isinstance(m, dict)]
    if not records:
        return KeptDense(None, None, patterns, None)
    kept = [m.get("kept_dense") is True for m in records]
    # Weights per module ("params"), where a manifest records them: the share is exact then.
    sizes = [m["params"] for m in records if isinstance(m.get("params"), int)]
    total = sum(sizes)
    share = (sum(n for n, k in zip(sizes, kept, strict=True) if k) / total
             if len(sizes) == len(records) and total > 0 else None)
    return KeptDense(sum(kept), len(records), patterns, share)


@dataclass
class SiblingGroup:
    parent: str  # the label the members are compared with elsewhere (or their base model)
    members: list[VariantRecord]
    kept: dict[str, KeptDense]
    tasks: list[TaskInfo]  # tasks every member has samples on
    pooled: list[TaskInfo]  # the tasks pooled: the reasoning ones among them (else all)

    @property
    def title(self) -> str:
        v = self.members[0]
        setting = (f"W{v.bits:g}" if v.bits is not None else
                   f"{100 * v.sparsity:g}% sparse" if v.sparsity is not None else "")
        group = f" g{v.group_size}" if v.group_size else ""
        return " ".join(filter(None, [v.kind, setting])) + f"{group} from {self.parent}"


def sibling_groups(results: ResultSet) -> list[SiblingGroup]:
    """Variants with one parent, method and setting; shown when two or more have samples on a
    common task and at least one keeps modules dense."""
    by_key: dict[tuple, list[VariantRecord]] = {}
    for name in results.with_data:
        v = results.variants[name]
        if v.method in (DENSE, "unknown"):
            continue
        parent = results.parent(name)
        key = (parent.variant if parent else v.parent or v.base_model, v.method, v.bits,
               v.group_size, v.sparsity, v.pattern)
        by_key.setdefault(key, []).append(v)
    groups = []
    for key, variants in by_key.items():
        # A member planned but without samples yet has nothing to compare.
        members = [v for v in variants
                   if any(results.cell(v.variant, t.label) for t in results.tasks)]
        kept = {v.variant: kept_dense(v) for v in members}
        if len(members) < 2 or not any(k.protects for k in kept.values()):
            continue
        tasks = [t for t in results.tasks
                 if all(results.cell(v.variant, t.label) for v in members)]
        if tasks:
            pooled = [t for t in tasks if not t.knowledge] or tasks
            groups.append(SiblingGroup(key[0], members, kept, tasks, pooled))
    return groups


def pooled_samples(results: ResultSet, variant: str, tasks: Sequence[TaskInfo]) -> list[an.Sample]:
    return [s for t in tasks if (c := results.cell(variant, t.label)) for s in c.samples]


def scope(tasks: Sequence[TaskInfo]) -> str:
    return ", ".join(t.title for t in tasks)


# --- members --------------------------------------------------------------------------------


def build_members(results: ResultSet, group: SiblingGroup, index: int) -> Table:
    def task_column(t: TaskInfo) -> Column[VariantRecord]:
        def score(v: VariantRecord) -> Estimate:
            c = results.cell(v.variant, t.label)
            return c.score if c else EMPTY

        return col(f"{t.title} {'EM' if t.knowledge else 'acc'} %",
                   [f"{t.label}_pct", f"{t.label}_lo", f"{t.label}_hi"], score, with_ci,
                   estimate_fields)

    def pooled(v: VariantRecord) -> Estimate:
        seed = an.cell_seed(results.seed, "protection", v.variant, *(t.label for t in group.pooled))
        return an.estimate(an.by_question(pooled_samples(results, v.variant, group.pooled),
                                          score_value), results.n_boot, seed)

    kept = group.kept.__getitem__
    columns: list[Column[VariantRecord]] = [
        col("variant", "variant", lambda v: v.variant),
        col("kept dense", ["dense_modules", "listed_modules"], lambda v: kept(v.variant),
            lambda k: k.text(), lambda k: (raw(k.modules), raw(k.listed))),
        col("dense patterns", "dense_patterns", lambda v: ", ".join(kept(v.variant).patterns)),
        col("dense weights %", "dense_weights_pct", lambda v: kept(v.variant).share,
            lambda s: num(100 * s, 2) if s is not None else DASH, lambda s: (scaled(s),)),
        col("bits/weight", "bits_per_weight", lambda v: v.bits_per_weight,
            lambda b: num(b, 3)),
        *[task_column(t) for t in group.tasks],
        col("pooled acc %", ["pooled_pct", "pooled_lo", "pooled_hi"], pooled, with_ci,
            estimate_fields),
    ]
    return make_table(f"protection_{index}", f"{group.title}: members", columns, group.members,
                      MEMBERS_NOTE.format(scope=scope(group.pooled)))


# --- pairs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiblingPair:
    first: str
    second: str
    task: TaskInfo | None  # None: the group's pooled tasks
    comparison: ScoreComparison  # second against first

    @property
    def winner(self) -> str:
        d = self.comparison.diff
        return self.second if d.lo > 0 else self.first if d.hi < 0 else ""

    def sentence(self) -> str:
        d, p = self.comparison.diff, p_text(self.comparison.p)
        if not self.winner:
            return (f"{self.first} and {self.second} are not distinguishable on these "
                    f"questions: Δ {self.second} − {self.first} = {100 * d.mean:+.1f} pp "
                    f"[{100 * d.lo:+.1f}, {100 * d.hi:+.1f}] (McNemar p = {p})")
        sign = 1 if self.winner == self.second else -1
        lo, hi = sorted((sign * d.lo, sign * d.hi))
        loser = self.first if sign == 1 else self.second
        return (f"{self.winner} beats {loser} by {100 * sign * d.mean:.1f} pp "
                f"[{100 * lo:.1f}, {100 * hi:.1f}] (McNemar p = {p})")


def p_text(p: float) -> str:
    return pval(p) if math.isnan(p) or p >= 0.001 else f"{p:.1e}"


def compare_pairs(results: ResultSet, group: SiblingGroup) -> list[SiblingPair]:
    """Every pair of members: pooled first, then on each task."""
    out = []
    for a, b in combinations([v.variant for v in group.members], 2):
        for task, tasks in [(None, group.pooled), *[(t, [t]) for t in group.tasks]]:
            seed = an.cell_seed(results.seed, "protection", a, b, *(t.label for t in tasks))
            out.append(SiblingPair(a, b, task, compare_scores(
                pooled_samples(results, a, tasks), pooled_samples(results, b, tasks),
                results.n_boot, seed)))
    return out


def build_pairs(pairs: list[SiblingPair], group: SiblingGroup, index: int) -> Table:
    flips = lambda s: s.comparison.flips  # noqa: E731 - a column getter
    columns: list[Column[SiblingPair]] = [
        col("first", "first", lambda s: s.first),
        col("second", "second", lambda s: s.second),
        col("task", "task", lambda s: s.task, lambda t: t.title if t else "pooled",
            lambda t: (t.label if t else "",)),
        col("questions", "questions", lambda s: flips(s).n),
        col("only first right", "only_first_right", lambda s: flips(s).broken),
        col("only second right", "only_second_right", lambda s: flips(s).fixed),
        col(None, "both_right", lambda s: flips(s).both_right),
        col(None, "both_wrong", lambda s: flips(s).both_wrong),
        col("McNemar p", "mcnemar_p", lambda s: s.comparison.p, pval),
        col("Δ acc pp [95% CI]", ["diff_pp", "diff_lo", "diff_hi"], lambda s: s.comparison.diff,
            with_ci, estimate_fields),
        col("winner", "winner", lambda s: s.winner, lambda w: w or "not distinguishable"),
        col(None, "verdict", lambda s: s.sentence()),
    ]
    return make_table(f"protection_{index}_pairs", f"{group.title}: every pair",
                      columns, pairs, PAIRS_NOTE)


def build(ctx: ReportContext) -> Section | None:
    r = ctx.results
    groups = sibling_groups(r)
    if not groups:
        return None
    items: list[Table] = []
    verdicts = []
    for index, group in enumerate(groups, 1):
        pairs = compare_pairs(r, group)
        items += [build_members(r, group, index), build_pairs(pairs, group, index)]
        verdicts.append(f"{group.title}: " + " ".join(f"{p.sentence()}." for p in pairs
                                                        if p.task is None))
    scopes = "; ".join(dict.fromkeys(scope(g.pooled) for g in groups))
    return Section(TITLE, " ".join([INTRO.format(scope=scopes), *verdicts]), shown(*items))
