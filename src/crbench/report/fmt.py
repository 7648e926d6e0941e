"""How numbers are written: on the page (text, with a dash for "none") and in CSV (raw)."""

from __future__ import annotations

import math

from crbench.analysis import Estimate

DASH = "—"
CsvValue = str | int | float | None  # what a CSV cell holds: a raw number or text


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal."""
    return DASH if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def num(x: float | None, digits: int = 0) -> str:
    if x is None or math.isnan(x):
        return DASH
    return "∞" if math.isinf(x) else f"{x:,.{digits}f}"


def pval(p: float | None) -> str:
    if p is None or math.isnan(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def with_ci(e: Estimate, scale: float = 100, digits: int = 1) -> str:
    """"mean [lo, hi]", scaled (percent by default)."""
    if e.n_questions == 0 or not math.isfinite(e.mean):
        return DASH
    f = f"{{:.{digits}f}}"
    return f"{f.format(scale * e.mean)} [{f.format(scale * e.lo)}, {f.format(scale * e.hi)}]"


def raw(x: CsvValue) -> CsvValue:
    """A value for CSV: NaN and None become an empty cell (infinity stays)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return x


def scaled(x: float | None, factor: float = 100) -> CsvValue:
    """A share as a raw percentage for CSV (empty when there is none)."""
    return "" if x is None else raw(factor * x)


def estimate_fields(e: Estimate) -> tuple[CsvValue, ...]:
    """An estimate in CSV: mean, lower and upper bound, in percent."""
    return scaled(e.mean), scaled(e.lo), scaled(e.hi)


def clip(text: str, head: int = 900, tail: int = 500) -> str:
    """Keep the beginning and the end of a long output (where the answer is)."""
    if len(text) <= head + tail + 40:
        return text
    left_out = len(text) - head - tail
    return f"{text[:head]}\n\n[… {left_out:,} characters left out …]\n\n{text[-tail:]}"
