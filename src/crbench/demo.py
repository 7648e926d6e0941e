"""`crbench demo`: the whole pipeline offline, on SmolLM2-135M-Instruct, in one command.

The study is the ordinary spec `crbench/specs/demo.toml`: compress (cached), generate and score
(stored, resumable), measure perplexity, then write the report and the trace browser.
Everything is reused on a second run; interrupting it loses only the generations in flight.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

DEFAULT_OUT = Path("runs") / "demo"


def demo_spec_path() -> Path:
    return Path(str(resources.files("crbench") / "specs" / "demo.toml"))


def run_demo(out: Path = DEFAULT_OUT) -> Path:
    """Run the demo study into `out` and write its report; return the report folder."""
    from crbench.report import print_summary, write_report
    from crbench.runner import run

    start = time.monotonic()
    summary = run(demo_spec_path(), out)
    for line in summary.lines():
        print(line)
    report, written = write_report(out, None, ["md", "html", "latex", "csv"])
    print_summary(report, written)
    from crbench.browser import write_browser

    print(f"trace browser: {write_browser(out)}")
    minutes = (time.monotonic() - start) / 60
    print(f"demo finished in {minutes:.1f} min; report: {out / 'report' / 'report.html'}")
    return out / "report"
