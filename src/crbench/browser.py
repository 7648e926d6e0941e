"""`crbench browse RUN_DIR`: every stored trace in one self-contained HTML page.

One section per question (task, item); in it, each parent model's generations on the left and
its compressed variants' generations on the right, so the same item is read side by side. Each
generation shows its verdict, extracted answer and tokens; its thinking is folded
(`<details>`), with the first statement of the right answer and the hesitation markers
highlighted (`crbench.thinking`, `crbench.cues`). Filters: flips (the variant solves the
question and its parent does not, or the reverse; majority of repeats), truncated traces,
abandoned-correct traces, one variant, one task. The filter state lives in the URL fragment
(`browser.html#flip,abandoned,v=2`), so a filtered view can be shared.

Model text is untrusted: every piece of it is HTML-escaped where it is written, and the page's
Content-Security-Policy lets only the page's own filter script run (by its hash) and fetch
nothing. The script only sets `hidden` and reads `data-` attributes; it never writes markup.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crbench.analysis import solved
from crbench.cues import DEFAULT_CUES, CueSet, Marker
from crbench.errors import InputError
from crbench.extract import split_thinking
from crbench.records import StoredGeneration
from crbench.store_read import RunData
from crbench.thinking_summary import ThinkingAnalysis, TraceFacts

FILTERS = (("flip", "flips"), ("truncated", "truncated"), ("abandoned", "abandoned-correct"))

SCRIPT = """(function () {
  var $ = function (id) { return document.getElementById(id); };
  var flags = ["flip", "truncated", "abandoned"];
  function state() {
    var parts = flags.filter(function (f) { return $("f-" + f).checked; });
    if ($("f-variant").value) { parts.push("v=" + $("f-variant").value); }
    if ($("f-task").value) { parts.push("t=" + $("f-task").value); }
    return parts.join(",");
  }
  function read() {
    var parts = decodeURIComponent(location.hash.slice(1)).split(",");
    flags.forEach(function (f) { $("f-" + f).checked = parts.indexOf(f) >= 0; });
    var v = parts.filter(function (p) { return p.indexOf("v=") === 0; })[0];
    var t = parts.filter(function (p) { return p.indexOf("t=") === 0; })[0];
    $("f-variant").value = v ? v.slice(2) : "";
    $("f-task").value = t ? t.slice(2) : "";
  }
  function matches(group) {
    var v = $("f-variant").value;
    return flags.every(function (f) {
      return !$("f-" + f).checked || group.getAttribute("data-" + f) === "1";
    }) && (!v || group.getAttribute("data-v") === v);
  }
  function apply() {
    var t = $("f-task").value, shown = 0;
    Array.prototype.forEach.call(document.querySelectorAll(".item"), function (item) {
      var any = false;
      Array.prototype.forEach.call(item.querySelectorAll(".block"), function (block) {
        var parent = block.querySelector(".parent"), anyChild = false;
        Array.prototype.forEach.call(block.querySelectorAll(".child"), function (g) {
          var ok = matches(g);
          g.hidden = !ok;
          anyChild = anyChild || ok;
        });
        block.hidden = !(anyChild || matches(parent));
        any = any || !block.hidden;
      });
      item.hidden = !any || (t !== "" && item.getAttribute("data-task") !== t);
      if (!item.hidden) { shown += 1; }
    });
    $("count").textContent = String(shown);
    document.body.setAttribute("data-shown", String(shown));
  }
  function changed() {
    apply();
    try { history.replaceState(null, "", "#" + state()); } catch (e) { /* file: URLs */ }
  }
  ["f-flip", "f-truncated", "f-abandoned", "f-variant", "f-task"].forEach(function (id) {
    $(id).addEventListener("change", changed);
  });
  window.addEventListener("hashchange", function () { read(); apply(); });
  read();
  apply();
})();"""

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#222}
header{position:sticky;top:0;background:#fafafa;border-bottom:1px solid #ddd;padding:.5em 1em;
z-index:2}
header label{margin-right:1em}
main{padding:0 1em}
.item{border-bottom:2px solid #ccc;padding:.6em 0}
.block{display:grid;grid-template-columns:1fr 1fr;gap:1em;margin:.5em 0}
.group{border:1px solid #e2e2e2;border-radius:4px;padding:.3em .6em;margin-bottom:.5em}
.group h3{font-size:1em;margin:.2em 0}
.gen{border-top:1px dashed #ddd;padding:.3em 0}
.ok{color:#1a7f37}.bad{color:#c62828}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;padding:.4em;margin:.3em 0;
max-height:40em;overflow:auto}
mark.hes{background:#ffe08a}
mark.first{background:#b6f0c0;outline:1px solid #1a7f37}
.meta{color:#555;font-size:.9em}
"""


@dataclass(frozen=True)
class Gen:
    """One generation as the page shows it."""

    stored: StoredGeneration
    facts: TraceFacts | None  # None: not scored yet


def e(text: object) -> str:
    return html.escape(str(text), quote=True)


def highlight(text: str, markers: Sequence[Marker], first: tuple[int, int] | None) -> str:
    """`text` escaped, with each marker wrapped in <mark class="hes"> and the first correct
    statement in <mark class="first"> (markers inside it stay marked)."""

    def marked(start: int, end: int) -> str:
        out, pos = [], start
        for m in markers:
            a, b = max(m.start, start), min(m.end, end)
            if a >= b or a < pos:
                continue
            out += [e(text[pos:a]), f'<mark class="hes" title="{e(m.marker)}">',
                    e(text[a:b]), "</mark>"]
            pos = b
        return "".join([*out, e(text[pos:end])])

    if first is None:
        return marked(0, len(text))
    start, end = first
    return (marked(0, start) + '<mark class="first" title="first correct statement">'
            + marked(start, end) + "</mark>" + marked(end, len(text)))


def generation_html(gen: Gen, cues: CueSet) -> str:
    g, score, facts = gen.stored.generation, gen.stored.score, gen.facts
    if score is None or facts is None:
        verdict = '<span class="meta">not scored yet</span>'
    else:
        verdict = '<b class="ok">✓ correct</b>' if score.correct else '<b class="bad">✗ wrong</b>'
    answer = e(score.extracted) if score is not None and score.extracted is not None else "—"
    meta = [f"repeat {g.repeat}", f"answer: {answer}",
            f"{g.completion_tokens} tokens ({g.thinking_tokens} thinking)"]
    if g.truncated or (score and score.truncated):
        meta.append("truncated")
    body = [f'<div class="gen">{verdict} <span class="meta">{" · ".join(meta)}</span>']
    if facts is None:
        return "".join([*body, f"<pre>{e(g.output)}</pre></div>"])
    trace = facts.trace
    if facts.first is not None:
        f = facts.first
        body.append(f'<span class="meta"> · first correct at token {f.token} of '
                    f"{f.trace_tokens} ({100 * f.token / max(f.trace_tokens, 1):.0f}%)</span>")
    if facts.abandoned:
        body.append(' <b class="bad">abandoned-correct</b>')
    if facts.loop is not None:
        body.append(f'<span class="meta"> · ends in a loop (period {facts.loop.period} '
                    "words)</span>")
    markers = cues.markers(trace.trace)
    first = (facts.first.start, facts.first.end) if facts.first else None
    marked = highlight(trace.trace, markers, first)
    if trace.has_thinking:
        body.append(f"<details><summary>thinking · {trace.trace_tokens} tokens · "
                    f"{len(markers)} hesitation markers</summary><pre>{marked}</pre></details>")
        answer = split_thinking(trace.text).answer
        body.append(f"<pre>{e(answer)}</pre>" if answer.strip() else
                    '<p class="meta">(no answer after the thinking)</p>')
    else:
        body.append(f'<span class="meta"> · no thinking; {len(markers)} hesitation '
                    f"markers</span><pre>{marked}</pre>")
    return "".join([*body, "</div>"])


def group_html(name: str, gens: list[Gen], index: int, role: str, flags: dict[str, bool],
               cues: CueSet) -> str:
    data = " ".join(f'data-{k}="{int(v)}"' for k, v in flags.items())
    cards = "".join(generation_html(g, cues) for g in gens)
    return (f'<div class="group {role}" data-v="{index}" {data}><h3>{e(name)}</h3>'
            f"{cards}</div>")


def group_flags(gens: list[Gen], parent: list[Gen] | None) -> dict[str, bool]:
    def solved_by(group: list[Gen]) -> bool | None:
        scores = [g.stored.score for g in group]
        return solved([float(s.correct) for s in scores if s]) if any(scores) else None

    mine = solved_by(gens)
    theirs = solved_by(parent) if parent else None
    return {
        "flip": mine is not None and theirs is not None and mine != theirs,
        "truncated": any(g.stored.generation.truncated or (g.stored.score is not None
                                                           and g.stored.score.truncated)
                         for g in gens),
        "abandoned": any(g.facts is not None and g.facts.abandoned for g in gens),
    }


def blocks(by_variant: dict[str, list[Gen]], parents: dict[str, str], order: list[str]
           ) -> list[tuple[str, list[str]]]:
    """(parent, its children present) for the item; a variant in no pair stands alone."""
    present = [v for v in order if v in by_variant]
    children: dict[str, list[str]] = defaultdict(list)
    for v in present:
        if parents.get(v) in by_variant:
            children[parents[v]].append(v)
    paired = {c for cs in children.values() for c in cs}
    return [(v, children.get(v, [])) for v in present if v in children or v not in paired]


def prompt_text(prompt: str) -> str:
    """A chat prompt (JSON messages) as readable text; a plain prompt as it is."""
    try:
        messages = json.loads(prompt)
    except ValueError:
        return prompt
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        return "\n\n".join(f"[{m.get('role', '')}]\n{m.get('content', '')}" for m in messages)
    return prompt


def render_browser(run: RunData, analysis: ThinkingAnalysis, cues: CueSet = DEFAULT_CUES,
                   title: str = "crbench traces") -> str:
    from crbench.report.results import order_variants

    facts = {f.trace.key: f for f in analysis.facts}
    rows = [r for r in run.rows if not r.superseded]
    order = list(order_variants(run.variants.values()))
    order += sorted({r.generation.variant for r in rows} - set(order))
    index = {v: i for i, v in enumerate(order)}
    tasks = sorted({r.generation.task for r in rows})
    items: dict[tuple[str, int], dict[str, list[Gen]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        g = r.generation
        items[(g.task, g.item_index)][g.variant].append(Gen(r, facts.get(g.key)))
    sections = []
    for (task, item), by_variant in sorted(items.items()):
        for gens in by_variant.values():
            gens.sort(key=lambda x: x.stored.generation.repeat)
        first = next(iter(by_variant.values()))[0].stored.generation
        parts = [f'<section class="item" data-task="{tasks.index(task)}">',
                 f"<h2>{e(task)} · item {e(first.item_id)} (#{item})</h2>",
                 f"<details><summary>prompt</summary><pre>{e(prompt_text(first.prompt))}"
                 "</pre></details>"]
        for parent, children in blocks(by_variant, analysis.parents, order):
            own = by_variant[parent]
            grandparent = by_variant.get(analysis.parents.get(parent, ""))
            left = group_html(parent, own, index[parent], "parent",
                              group_flags(own, grandparent), cues)
            right = "".join(group_html(c, by_variant[c], index[c], "child",
                                       group_flags(by_variant[c], own), cues) for c in children)
            parts.append(f'<div class="block"><div>{left}</div><div>{right}</div></div>')
        parts.append("</section>")
        sections.append("".join(parts))
    return page(title, order, tasks, sections)


def page(title: str, variants: list[str], tasks: list[str], sections: list[str]) -> str:
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
              "img-src 'none'; base-uri 'none'; form-action 'none'")
    boxes = "".join(f'<label><input type="checkbox" id="f-{key}"> {label}</label>'
                    for key, label in FILTERS)
    variant_options = "".join(f'<option value="{i}">{e(v)}</option>'
                              for i, v in enumerate(variants))
    task_options = "".join(f'<option value="{i}">{e(t)}</option>' for i, t in enumerate(tasks))
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<header><b>{e(title)}</b> · {boxes}",
        f'<label>variant <select id="f-variant"><option value="">all</option>{variant_options}'
        "</select></label>",
        f'<label>task <select id="f-task"><option value="">all</option>{task_options}'
        "</select></label>",
        f'<span id="count">{len(sections)}</span> questions shown. '
        '<mark class="first">first correct statement</mark> '
        '<mark class="hes">hesitation marker</mark></header>',
        "<main>", *sections, "</main>",
        f"<script>{SCRIPT}</script>", "</body></html>", ""])


def write_browser(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Read the run, analyse its traces, write the page (default RUN_DIR/report/browser.html)."""
    from crbench.report.render import write_text
    from crbench.store_read import read_run
    from crbench.thinking_summary import analyse_run

    run = read_run(run_dir)
    analysis = analyse_run(run, budgets={})  # the page shows no budget curves
    path = Path(out) if out else run.path.parent / "report" / "browser.html"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, render_browser(run, analysis, title=f"crbench traces: "
                                                             f"{run.path.parent.name}"))
    except OSError as exc:
        raise InputError(path, f"cannot write the trace browser: {exc.strerror or exc}") from None
    return path
