"""Reading the final answer out of a reasoning model's output. Shared by every task.

A reasoning model writes `<think> ... </think>` and then its answer. R1-distill prompts prefill
`<think>\\n`, so outputs usually hold only the closing tag. The output is split into a thinking
part and an answer part (`split_thinking`), then one region is read, chosen by these rules:

    region          when                                         what may be read there
    after-think     the thinking closed: text after the LAST     every marker, weak ones too
                    `</think>`
    thinking-tail   the thinking closed but the answer part      explicit markers only, in the
                    holds no answer (empty, or chatter)          last TAIL_CHARS of the thinking
    truncated-tail  thinking opened (`<think>`) and never        explicit markers only, in the
                    closed (or re-opened after the last          last TAIL_CHARS of the text
                    `</think>`), or no tags at all and the
                    engine hit its token limit
    no-think        no think tags at all and no token limit      every marker (a model that does
                    hit (a non-reasoning model, or a server      not think, or whose thinking was
                    that returns its reasoning separately)       stripped out already)

`truncated` is True in truncated-tail, and whenever `hit_limit` is (a closed thinking whose
answer part was cut off is still read in after-think). Without tags an output cannot show that
it began inside a prefilled thought; a caller that knows its prompt opened the thinking and
wants such an output read as unfinished passes "<think>" + output.

Markers, strongest first; within a region the strongest kind present wins, and within a kind
the LAST one whose text reads as an answer wins (the final stated answer; of each kind only the
last MAX_CANDIDATES are tried, which bounds the cost of repetition loops):

    boxed           `\\boxed{...}` / `\\fbox{...}` (balanced braces; `\\boxed{840}` twice is 840)
    answer-line     "Answer:" / "Final answer:" starting a line or a sentence (markdown
                    allowed); a "**Final Answer**" heading takes the next line with content
    final-answer    "final answer is X" / "final answer: X" anywhere in a line
    answer-phrase   "the answer is X"            (not explicit: after-think / no-think only)
    task weak rule  e.g. the last label word, "(C)", number (after-think / no-think only)

A statement's text runs to the end of its line or to the next statement on that line; the task
decides whether it reads as an answer (a FOLIO label, an option, an integer, any text).
So a truncated trace is never graded from mid-thought prose: only a boxed answer or an explicit
"Answer:"/"final answer" statement near its end counts, and the score says `truncated=True`.
`Extraction.rule` is "<marker>-<region>" (e.g. "boxed-after-think") or "none".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
TAIL_CHARS = 2000  # how much of an unfinished (or answer-less) trace may hold the final answer
MAX_CANDIDATES = 50  # of each marker kind, the last this many are tried (repetition loops)

# parse(candidate text) -> canonical answer string, or None when the text is not an answer.
Parse = Callable[[str], "str | None"]
# weak(region text) -> (answer, marker) from a task's own looser rule, or None.
Weak = Callable[[str], "tuple[str, str] | None"]


@dataclass(frozen=True)
class Parts:
    thinking: str  # text inside the thinking (tags removed)
    answer: str  # text after the last `</think>` ("" when thinking never closed)
    opened: bool  # a `<think>` tag appears
    closed: bool  # the thinking that was open got closed


@dataclass(frozen=True)
class Extraction:
    value: str | None  # canonical answer, None when nothing was found
    rule: str  # "<marker>-<region>" or "none"
    truncated: bool  # thinking never closed, or the engine hit its token limit


def as_written(output: str, prompt: str | None = None, reasoning: str | None = None) -> str:
    """The model's whole turn as one text, for scoring.

    R1-style prompts prefill `<think>`, so the output starts inside the thinking and shows only
    `</think>`: put the opening back, so an output that never closes its thinking reads as
    unfinished. A server that returns `reasoning_content` separately gets it back in tags.
    """
    if reasoning is not None:
        return f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{output}"
    if prompt is not None and prompt.rstrip().endswith(THINK_OPEN) and THINK_OPEN not in output:
        return f"{THINK_OPEN}\n{output}"
    return output


def split_thinking(output: str) -> Parts:
    """Thinking and answer parts; the answer part is what follows the LAST `</think>`."""
    if THINK_CLOSE in output:
        head, _, answer = output.rpartition(THINK_CLOSE)
        # A `<think>` after the last close re-opened the thinking and never closed it.
        reopened = THINK_OPEN in answer
        if reopened:
            answer, _, rest = answer.partition(THINK_OPEN)
            head = head + rest
        thinking = head.replace(THINK_OPEN, "").replace(THINK_CLOSE, "")
        return Parts(thinking, answer, opened=THINK_OPEN in output, closed=not reopened)
    if THINK_OPEN in output:
        return Parts(output.replace(THINK_OPEN, ""), "", opened=True, closed=False)
    return Parts("", output, opened=False, closed=False)


def extract(output: str, parse: Parse, weak: Weak | None = None, *, hit_limit: bool = False
            ) -> Extraction:
    """Find the final answer in `output` by the region rules above. Never raises on any text."""
    output = output if isinstance(output, str) else ""
    parts = split_thinking(output)
    if parts.closed:
        tries = [("after-think", parts.answer, False), ("thinking-tail", parts.thinking, True)]
        truncated = hit_limit
    elif parts.opened or hit_limit:
        whole = output.replace(THINK_OPEN, "\n").replace(THINK_CLOSE, "\n")
        tries = [("truncated-tail", whole, True)]
        truncated = True
    else:
        tries = [("no-think", parts.answer, False)]
        truncated = False
    for region, text, strict in tries:
        hit = find_answer(text[-TAIL_CHARS:] if strict else text, parse, weak, strict=strict)
        if hit is not None:
            return Extraction(hit[0], f"{hit[1]}-{region}", truncated)
    return Extraction(None, "none", truncated)


def find_answer(text: str, parse: Parse, weak: Weak | None = None, *, strict: bool = False
                ) -> tuple[str, str] | None:
    """(answer, marker) from the strongest marker kind present in `text`, last one first."""
    for content in boxed_contents(text)[::-1][:MAX_CANDIDATES]:
        value = parse(content)
        if value is not None:
            return value, "boxed"
    for marker, candidate in answer_statements(text, strict=strict)[::-1][:MAX_CANDIDATES]:
        value = parse(candidate)
        if value is not None:
            return value, marker
    if not strict and weak is not None:
        return weak(text)
    return None


_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")


def boxed_contents(text: str) -> list[str]:
    """Contents of every complete `\\boxed{...}` in order; nested braces kept, unclosed skipped.

    One pass with a stack of open braces, so a degenerate output (a repetition loop of
    unclosed boxes) costs linear time.
    """
    box_braces = {match.end() - 1 for match in _BOX_START.finditer(text)}
    open_braces: list[int] = []
    found: list[tuple[int, str]] = []
    for match in re.finditer(r"[{}]", text):
        pos = match.start()
        if text[pos] == "{":
            open_braces.append(pos)
        elif open_braces:
            start = open_braces.pop()
            if start in box_braces:
                found.append((start, text[start + 1 : pos]))
    return [content for _, content in sorted(found)]


_DECOR = r"[ \t*_`#>-]*"  # markdown around a marker: **Answer:**, ## Final Answer, > Answer
# One alternative per marker, strongest first; an "Answer:" must start a line or a sentence.
_STATEMENT = re.compile(
    rf"(?P<line>(?:^|(?<=[.!?] )){_DECOR}(?:the\s+)?(?:final\s+)?answer[ \t*_`]*[:：])"
    r"|(?P<final>\bfinal\s+answer(?:\s+(?:is|will\s+be|would\s+be)\b[ \t]*[:：]?|[ \t*_`]*[:：]))"
    r"|(?P<phrase>\banswer\s+(?:is|should\s+be|must\s+be|would\s+be|will\s+be)\b[ \t]*[:：]?)",
    re.I,
)
_HEADING = re.compile(rf"^{_DECOR}final\s+answer[ \t*_`:：]*$", re.I)  # the answer follows
_MARKERS = {"line": "answer-line", "final": "final-answer", "phrase": "answer-phrase"}


def answer_statements(text: str, *, strict: bool = False) -> list[tuple[str, str]]:
    """(marker, text stated as the answer) for each answer statement, in order.

    A statement's text runs to the end of its line or to the next statement in the line.
    `strict` keeps only the explicit ones (answer-line, final-answer).
    """
    lines = text.splitlines()
    heading = [bool(_HEADING.match(line)) for line in lines]
    # A heading's answer is the next line with content that is not itself a heading.
    following, content = [""] * len(lines), ""
    for j in range(len(lines) - 1, -1, -1):
        following[j] = content
        if lines[j].strip() and not heading[j]:
            content = lines[j]
    found = []
    for i, line in enumerate(lines):
        if heading[i]:
            found.append(("answer-line", following[i]))
            continue
        matches = [m for m in _STATEMENT.finditer(line) if not (strict and m.lastgroup == "phrase")]
        for k, match in enumerate(matches):
            end = matches[k + 1].start() if k + 1 < len(matches) else len(line)
            found.append((_MARKERS[match.lastgroup or ""], line[match.end() : end]))
    return found


_LATEX_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|mathrm|mathbf|boxed|fbox|emph)\s*\{([^{}]*)\}"
)


def clean(candidate: str) -> str:
    """Strip markdown emphasis, `$`/`\\(`, LaTeX text wrappers and edge punctuation."""
    text = candidate
    for _ in range(3):  # unwrap nested \text{\textbf{...}}
        text = _LATEX_WRAPPERS.sub(r"\1", text)
    text = re.sub(r"\\[()\[\]]", " ", text)
    text = text.replace("**", "").replace("__", "").replace("`", "").replace("$", "")
    text = re.sub(r"(?<!\w)[*_]|[*_](?!\w)", "", text)  # *x* and _x_ but not snake_case
    return text.strip().strip(".,;:!").strip()
