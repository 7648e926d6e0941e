"""Rendering a finished Report: a self-contained HTML page, Markdown, LaTeX tables, CSV files.

Every label and every piece of model output is untrusted text: it is escaped for the format it
is written into (HTML, Markdown, LaTeX). Files are written through a temporary file, so a reader
never sees half a report.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import re
from pathlib import Path

from crbench.report.document import Plot, Report, Table, tables

CSS = """
body{font:14px/1.45 system-ui,sans-serif;max-width:1600px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:12.5px}
th,td{border-bottom:1px solid #e3e3e3;padding:.25em .6em;text-align:right;white-space:nowrap}
th{background:#f4f4f4;position:sticky;top:0}th.text,td.text{text-align:left}
.wrap{overflow-x:auto}.note{color:#555;font-size:12.5px;max-width:60em}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:12.5px}
pre{background:#f7f7f7;padding:.8em;white-space:pre-wrap;word-break:break-word;max-height:30em;
overflow:auto;font-size:12px}details{margin:.6em 0}summary{cursor:pointer;font-weight:600}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:1em}
"""
NUMERIC = re.compile(r"^[-−+<∞—\d]")  # a number, a p-value bound, or a dash for none


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def text_columns(table: Table) -> list[bool]:
    """Which columns hold text (left-aligned) rather than numbers (right-aligned)."""
    return [any(not NUMERIC.match(row[i]) for row in table.rows)
            for i in range(len(table.columns))]


# --- HTML ----------------------------------------------------------------------------------


def html_table(t: Table, section_title: str) -> list[str]:
    e = html.escape
    out = [f"<h3>{e(t.title)}</h3>"] if t.title != section_title else []
    td = [' class="text"' if text else "" for text in text_columns(t)]
    out.append('<div class="wrap"><table><thead><tr>'
               + "".join(f"<th{td[i]}>{e(c)}</th>" for i, c in enumerate(t.columns))
               + "</tr></thead><tbody>")
    out += ["<tr>" + "".join(f"<td{td[i]}>{e(v)}</td>" for i, v in enumerate(row)) + "</tr>"
            for row in t.rows]
    out.append("</tbody></table></div>")
    if t.note:
        out.append(f'<p class="note">{e(t.note)}</p>')
    return out


def html_figure(p: Plot) -> str:
    e = html.escape
    data = base64.b64encode(p.png.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{e(p.title)}">'
            f"<figcaption><b>{e(p.title)}.</b> {e(p.caption)}</figcaption></figure>")


def render_html(report: Report) -> str:
    e = html.escape
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # No script, no external resource: the page opens offline and model output cannot run.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(report.title)}</h1>",
        "<p>" + "<br>".join(e(line) for line in report.summary) + "</p>",
    ]
    if report.sections:
        out.append("<nav><ul>" + "".join(f'<li><a href="#{slug(s.title)}">{e(s.title)}</a></li>'
                                          for s in report.sections) + "</ul></nav>")
    for s in report.sections:
        out.append(f'<section id="{slug(s.title)}"><h2>{e(s.title)}</h2>')
        if s.text:
            out.append(f'<p class="note">{e(s.text)}</p>')
        for item in s.items:
            out += html_table(item, s.title) if isinstance(item, Table) else [html_figure(item)]
        for i, ex in enumerate(s.examples):
            opened = " open" if i == 0 else ""  # the first one shown, the rest a click away
            out.append(f"<details{opened}><summary>{e(ex.title)}</summary><div class=\"cols\">")
            out += [f"<div><h4>{e(head)}</h4><pre>{e(text)}</pre></div>"
                    for head, text in ex.outputs]
            out.append("</div></details>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


# --- Markdown ------------------------------------------------------------------------------


def md_escape(text: str) -> str:
    """Table cells and headings: no HTML, no emphasis, no column breaks."""
    text = html.escape(text, quote=False)
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", text).replace("\n", " ")


def md_code(text: str) -> str:
    """A fenced block longer than any backtick run inside, so output cannot close it."""
    fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}text\n{text}\n{fence}"


def md_table(t: Table, section_title: str) -> list[str]:
    lines = [f"### {md_escape(t.title)}", ""] if t.title != section_title else []
    lines += ["| " + " | ".join(md_escape(c) for c in t.columns) + " |",
              "|" + "|".join("---" for _ in t.columns) + "|"]
    lines += ["| " + " | ".join(md_escape(v) for v in row) + " |" for row in t.rows]
    return lines + (["", f"*{md_escape(t.note)}*", ""] if t.note else [""])


def render_md(report: Report, out_dir: Path) -> str:
    lines = [f"# {md_escape(report.title)}", "", *[f"- {md_escape(s)}" for s in report.summary]]
    for s in report.sections:
        lines += ["", f"## {md_escape(s.title)}", ""]
        if s.text:
            lines += [md_escape(s.text), ""]
        for item in s.items:
            if isinstance(item, Table):
                lines += md_table(item, s.title)
            else:
                rel = item.png.relative_to(out_dir).as_posix()
                lines += [f"![{md_escape(item.title)}]({rel})", "",
                          f"*{md_escape(item.title)}.* {md_escape(item.caption)}", ""]
        for ex in s.examples:
            lines += [f"### {md_escape(ex.title)}", ""]
            for head, text in ex.outputs:
                lines += [f"**{md_escape(head)}**", "", md_code(text), ""]
    return "\n".join(lines) + "\n"


# --- LaTeX ---------------------------------------------------------------------------------

LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$", "−": "--", "–": "--", "—": "---", "∞": r"$\infty$", "·": r"$\cdot$",
    "<": r"\textless{}", ">": r"\textgreater{}",
    "[": "{[}", "]": "{]}",  # a cell starting with "[" would be read as \\'s optional argument
}


def latex_char(ch: str) -> str:
    if ch in LATEX_SPECIAL:
        return LATEX_SPECIAL[ch]
    if ord(ch) < 32 or 127 <= ord(ch) < 160:  # control characters (a newline in a label)
        return " "
    if ord(ch) > 255:  # pdflatex with T1 fonts has no glyph for it: name it instead
        return rf"\textless{{}}U+{ord(ch):04X}\textgreater{{}}"
    return ch


def latex_escape(text: str) -> str:
    """Untrusted text as LaTeX text: every special character escaped, nothing a command."""
    return "".join(latex_char(ch) for ch in text)


def latex_table(t: Table) -> list[str]:
    align = "".join("l" if text else "r" for text in text_columns(t))
    out = [
        f"% {latex_escape(t.title)}",
        "\\begin{table}[ht]",
        "\\centering\\small",
        f"\\caption{{{latex_escape(t.title)}}}\\label{{tab:crbench-{slug(t.name)}}}",
        "\\resizebox{\\linewidth}{!}{%",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(latex_escape(c) for c in t.columns) + " \\\\",
        "\\midrule",
        *[" & ".join(latex_escape(v) for v in row) + " \\\\" for row in t.rows],
        "\\bottomrule",
        "\\end{tabular}}",
    ]
    if t.note:
        out.append(f"\\par\\smallskip{{\\footnotesize {latex_escape(t.note)}}}")
    return out + ["\\end{table}", ""]


def render_latex(report: Report) -> str:
    out = ["% crbench tables. Needs \\usepackage{booktabs,graphicx} (and [utf8]{inputenc} on "
           "old TeX).", ""]
    for t in tables(report):
        out += latex_table(t)
    return "\n".join(out)


# --- files ---------------------------------------------------------------------------------


def write_text(path: Path, text: str) -> None:
    """Write via a temporary file, so a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_csv(path: Path, table: Table) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.csv_columns)
    writer.writerows(table.csv_rows)
    write_text(path, buf.getvalue())
