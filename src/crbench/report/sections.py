"""THE SECTION REGISTRY: the report's analyses, in the order the report shows them.

A new analysis is one new module in this package with a `build(ctx: ReportContext) ->
Section | None` function, plus one line here. See the package docstring (crbench.report).
"""

from __future__ import annotations

from crbench.report import (
    breakdown,
    compute,
    cost,
    curves,
    examples,
    failures,
    importance,
    knowledge,
    main_results,
    paired,
    probes,
    protection,
    samples,
    thinking,
    thinking_length,
)
from crbench.report.context import SectionBuilder

SECTIONS: list[SectionBuilder] = [
    main_results.build,  # Main results: every variant on every task, with intervals
    samples.build,  # Several samples per item: avg@n, pass@k, maj@k
    breakdown.build,  # Accuracy by level and subject (tasks that record them)
    curves.build,  # Compression curves: sparsity and bit-width sweeps
    compute.build,  # Test-time compute: tokens, thinking vs answer, length vs correctness
    paired.build,  # Paired comparison with the parent: flips, McNemar, paired deltas
    thinking_length.build,  # Does it think longer? A paired verdict per variant vs its parent
    protection.build,  # Protected modules at equal bits: siblings compared, which one wins
    thinking.build,  # Thinking: budget curves, first correct answer, hesitation, length growth
    probes.build,  # Probes: forced-answer probe curves, s1 metrics, Dynasor stop (when probed)
    importance.build,  # Module importance: which modules carry reasoning (when measured)
    knowledge.build,  # Knowledge vs reasoning: closed vs open book
    cost.build,  # Cost per correct answer
    failures.build,  # Failures: generations that failed after all retries
    examples.build,  # Examples of flipped questions
]
