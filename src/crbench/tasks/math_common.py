"""What the math tasks (math500, aime24, aime25, synth_arith) share: math-verify's reading of a
LaTeX answer, the comparison of two readings, one normal form of LaTeX text, and the key two
answers share when they state the same value (maj@k's votes).

math-verify parses with sympy, which can fail in many ways on odd input and can compute for
minutes on some: every function here treats a failure as "no reading" and never raises, and
`too_costly` tells which text not to hand to sympy at all.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from typing import Any

TIMEOUT_S = 5  # math-verify's own limit per parse / comparison (main thread only: SIGALRM)
VOTE_DIGITS = 12  # significant digits two numbers must share to be one vote ("0.5", "\frac12")

_SPACING = re.compile(r"\\[,;:! ]|\\(?:left|right|displaystyle)\b|\s+")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\s*\{([^{}]*)\}")


def normalized(latex: str) -> str:
    """LaTeX written one way: no spacing commands, \\left/\\right, text wrappers, \\dfrac."""
    text = latex.strip().strip("$")
    text = _TEXT_WRAPPER.sub(r"\1", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = text.replace("^{\\circ}", "^\\circ")
    return _SPACING.sub("", text).rstrip(".").lower()


# What makes sympy compute for minutes (or forever, off the main thread where math-verify has no
# timeout): a power tower ("9^{9^{9}}", "2^2^2"), an exponent or factorial of 4+ digits, the
# factorial of an expression ("(10^{100})!"), a number of 100+ digits. No MATH-500 answer has
# one; an output that does is compared as text only.
_COSTLY = re.compile(
    r"\^\s*\{[^{}]*\^"  # a power inside a braced exponent
    r"|\^\s*\d+\s*\^"  # chained powers of numbers
    r"|\^\s*\{?\s*[-+]?\s*\d{4}"  # an exponent of 4+ digits
    r"|\d{4}\s*!|[)}\]]\s*!"  # a factorial of 4+ digits, or of an expression
    r"|\d{100}"
)


def too_costly(latex: str) -> bool:
    """Whether `latex` holds something sympy would take too long to evaluate."""
    return _COSTLY.search(latex) is not None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def timeout() -> int | None:
    # math-verify's timeout is a SIGALRM handler, which only the main thread may install;
    # elsewhere it must be off (it raises otherwise) and the tasks' answer length limits bound
    # the work.
    return TIMEOUT_S if _in_main_thread() else None


@functools.lru_cache(maxsize=4096)
def parse_latex(latex: str) -> tuple[Any, ...]:
    """math-verify's reading of one LaTeX expression (empty when it cannot read it)."""
    return _parse(f"${latex}$")


@functools.lru_cache(maxsize=4096)
def parse_text(text: str) -> tuple[Any, ...]:
    """math-verify's reading of text with math in it."""
    return _parse(text)


def _parse(text: str) -> tuple[Any, ...]:
    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        return tuple(parse(text, parsing_timeout=timeout()))
    except Exception:  # sympy can fail in many ways on odd input; that is "no reading"
        return ()


def verify(gold: tuple[Any, ...], predicted: tuple[Any, ...]) -> bool:
    """math-verify's verdict on two readings; a comparison that fails is not a match."""
    from math_verify import verify as math_verify

    try:
        return bool(math_verify(list(gold), list(predicted), timeout_seconds=timeout()))
    except Exception:  # as above
        return False


def vote_key(answer: str) -> str:
    """The value an extracted answer states, as maj@k compares votes: equal for answers that
    state the same number ("\\frac{1}{2}", "0.5", "\\dfrac12" -> "0.5"; "025" -> "25") or the
    same tuple, set or interval of exact numbers (sympy's text of math-verify's reading), else
    the normalized LaTeX. Equal keys mean equal values (numbers to VOTE_DIGITS significant
    digits); different keys may still be equal answers, which then vote apart as they did
    before. Never raises."""
    text = normalized(answer)
    reading = () if too_costly(answer) else parse_latex(answer)
    if not reading:
        return text
    try:
        expr = reading[0]
        if getattr(expr, "is_number", False):
            value = complex(expr.evalf(VOTE_DIGITS + 3))
            real = f"{value.real:.{VOTE_DIGITS}g}" if value.real else "0"  # never "-0"
            return real if value.imag == 0 else f"{real}{value.imag:+.{VOTE_DIGITS}g}i"
        if not getattr(expr, "free_symbols", True):  # a tuple, set or interval of numbers
            return str(expr)
    except Exception:  # sympy refused to evaluate or print it: the text is the key
        return text
    # With symbols, the text: letters are symbols to sympy and products commute, so its reading
    # of "Evelyn" and of "Evenly" is the same.
    return text
