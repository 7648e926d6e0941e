"""Section "Examples of flipped questions": outputs of questions a variant fixed or broke."""

from __future__ import annotations

from collections import defaultdict

from crbench import analysis as an
from crbench.analysis import Sample
from crbench.report.context import ReportContext
from crbench.report.document import Example, Section
from crbench.report.fmt import clip
from crbench.report.pairs import Pair
from crbench.report.results import score_value

TITLE = "Examples of flipped questions"
MAX_EXAMPLES = 12
EXAMPLES_PER_PAIR = 2


def heading(s: Sample, ok: bool) -> str:
    verdict = "correct" if ok else "wrong"
    return f"{s.variant} (repeat {s.repeat}, {verdict}, {s.completion_tokens} tokens)"


def flipped(p: Pair) -> list[tuple[bool, Example]]:
    """(fixed?, example) for each question the variant flipped against its parent, showing a
    sample from each side that agrees with that side's majority verdict."""
    ps = an.samples_by_question(p.parent_samples)
    cs = an.samples_by_question(p.child_samples)
    out = []
    for q in sorted(cs, key=repr):
        if q not in ps:
            continue
        was = an.solved([score_value(s) for s in ps[q]])
        now = an.solved([score_value(s) for s in cs[q]])
        if was == now:
            continue
        left = next(s for s in ps[q] if (score_value(s) >= 0.5) == was)
        right = next(s for s in cs[q] if (score_value(s) >= 0.5) == now)
        item = q[1] if isinstance(q, tuple) else q
        title = (f"{p.child.variant} vs {p.parent.variant} · {p.task.title} · item {item} · "
                 f"{'fixed' if now else 'broken'}")
        outputs = [(heading(s, ok), clip(s.output)) for s, ok in ((left, was), (right, now))]
        out.append((now, Example(title, outputs)))
    return out


def examples(pairs: list[Pair]) -> list[Example]:
    """A few flipped questions, taken in turn from each compressed variant so that every
    variant shows; broken questions first."""
    queues: dict[str, list[tuple[bool, Example]]] = defaultdict(list)
    for p in pairs:
        queues[p.child.variant] += flipped(p)[:EXAMPLES_PER_PAIR]
    for queue in queues.values():
        queue.sort(key=lambda f: f[0])  # stable: broken (False) first, in task order
    out: list[Example] = []
    while len(out) < MAX_EXAMPLES and any(queues.values()):
        for queue in queues.values():
            if queue and len(out) < MAX_EXAMPLES:
                out.append(queue.pop(0)[1])
    return out


def build(ctx: ReportContext) -> Section:
    return Section(TITLE, "Outputs are clipped to their beginning and end.", [],
                   examples(ctx.pairs))
