"""Section "Test-time compute": tokens per sample, thinking vs answer, and (crbench.report.
lengths) whether longer outputs are more often wrong."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crbench import analysis as an
from crbench.report import lengths
from crbench.report.context import ReportContext
from crbench.report.document import Column, Plot, Section, Table, col, make_table, shown
from crbench.report.figures import Figures
from crbench.report.fmt import num, pct, scaled
from crbench.report.results import ResultSet, TaskInfo

if TYPE_CHECKING:
    from matplotlib.axes import Axes

TITLE = "Test-time compute"
NOTE = ("Completion tokens per sample, split into thinking (before the end of thinking) and "
        "answer tokens. truncated: hit the token limit or never closed its thinking. "
        "failures: generations that failed after all retries (never scored as wrong). "
        "unscored: generated, not scored yet.")


@dataclass(frozen=True)
class ComputeRow:
    variant: str
    task: TaskInfo
    profile: an.ComputeProfile
    failures: int
    unscored: int


def compute_rows(r: ResultSet) -> list[ComputeRow]:
    failures = Counter((f.variant, f.task) for f in r.failures)
    out = []
    for name in r.variants:
        for t in r.tasks:
            key = (name, t.label)
            c = r.cells.get(key)
            if c is None and not failures[key] and not r.unscored[key]:
                continue
            out.append(ComputeRow(name, t, an.compute_profile(c.samples if c else []),
                                  failures[key], r.unscored[key]))
    return out


def build_compute(r: ResultSet) -> Table:
    columns: list[Column[ComputeRow]] = [
        col("variant", "variant", lambda x: x.variant),
        col("task", "task", lambda x: x.task, lambda t: t.title, lambda t: (t.label,)),
        col("n", "n", lambda x: x.profile.n),
        col("mean tokens", "mean_tokens", lambda x: x.profile.mean_tokens, num),
        col("median tokens", "median_tokens", lambda x: x.profile.median_tokens, num),
        col("thinking", "mean_thinking_tokens", lambda x: x.profile.mean_thinking, num),
        col("answer", "mean_answer_tokens", lambda x: x.profile.mean_answer, num),
        col("truncated %", "truncated_pct", lambda x: x.profile.truncation_rate, pct,
            lambda v: (scaled(v),)),
        col("no answer %", "no_answer_pct", lambda x: x.profile.no_answer_rate, pct,
            lambda v: (scaled(v),)),
        col("failures", "failures", lambda x: x.failures),
        col("unscored", "unscored", lambda x: x.unscored),
    ]
    return make_table("compute", TITLE, columns, compute_rows(r), NOTE)


def samples_of(r: ResultSet, variant: str, task: TaskInfo) -> list[an.Sample]:
    c = r.cell(variant, task.label)
    return c.samples if c else []


def draw_tokens(figs: Figures) -> Plot | None:
    r = figs.results

    def draw(ax: Axes, t: TaskInfo, names: list[str]) -> None:
        data = [[s.completion_tokens for s in samples_of(r, n, t)] for n in names]
        pos = [i for i, d in enumerate(data) if d]
        if pos:
            box = ax.boxplot([data[i] for i in pos], positions=pos, orientation="horizontal",
                             widths=0.6, patch_artist=True, showfliers=True,
                             flierprops={"markersize": 2})
            for patch, i in zip(box["boxes"], pos, strict=True):
                patch.set_facecolor(figs.colour[names[i]])
                patch.set_alpha(0.6)

    return figs.per_task("tokens", "Tokens per question",
                         "Distribution of completion tokens per sample (box: quartiles; "
                         "whiskers: 1.5 IQR).", draw, "completion tokens")


def draw_token_split(figs: Figures) -> Plot | None:
    r = figs.results

    def draw(ax: Axes, t: TaskInfo, names: list[str]) -> None:
        profiles = [an.compute_profile(samples_of(r, n, t)) for n in names]
        think = [0 if math.isnan(p.mean_thinking) else p.mean_thinking for p in profiles]
        answer = [0 if math.isnan(p.mean_answer) else p.mean_answer for p in profiles]
        y = range(len(names))
        ax.barh(y, think, color="#4c72b0", label="thinking")
        ax.barh(y, answer, left=think, color="#dd8452", label="answer")
        if t == r.tasks[0]:
            ax.legend(loc="lower right")

    return figs.per_task("token_split", "Thinking vs answer tokens",
                         "Mean thinking and answer tokens per sample.", draw,
                         "mean tokens per sample")


def build(ctx: ReportContext) -> Section:
    r = ctx.results
    return Section(TITLE, "", shown(
        build_compute(r), ctx.figure(draw_tokens), ctx.figure(draw_token_split),
        lengths.build_lengths(r), lengths.build_length_bins(r),
        ctx.figure(lengths.draw_length_bins), lengths.build_within(r)))
