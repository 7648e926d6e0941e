"""`crbench demo`: the whole pipeline offline, on SmolLM2-135M-Instruct, in one command.

The study is the ordinary spec `crbench/specs/demo.toml`: compress (cached), generate and score
(stored, resumable), measure perplexity, then the dense model's module importance on its own
traces (`crbench importance`, a few traces per task), the report and the trace browser.
Everything is reused on a second run; interrupting it loses only the generations in flight.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crbench.importance_run import ImportanceSettings

DEFAULT_OUT = Path("runs") / "demo"


def demo_spec_path() -> Path:
    return Path(str(resources.files("crbench") / "specs" / "demo.toml"))


def importance_settings() -> ImportanceSettings:
    """What the demo measures importance with. The tiny reasoner's thinking is terse solver
    steps: the rule labeller finds none of the study's four behaviours in it (no "Wait", no
    "let me verify"), so the demo attributes its deduction sentences. Four traces per task keep
    it under half a minute on a CPU; the direct check (quantizing one module at a time: 63 s
    for the last layer's seven) is left to `crbench importance`."""
    from crbench.importance_run import ImportanceSettings

    return ImportanceSettings(per_task=4, behaviours=("deduction",), validate_layers="none")


def measure_importance(out: Path) -> Path:
    """The dense model's importance into RUN_DIR/importance/<variant>/ (reused when there)."""
    from crbench.importance_io import IMPORTANCE_FILE
    from crbench.importance_output import variant_folder, write_outputs
    from crbench.importance_run import run_importance

    done = sorted((out / "importance").glob(f"*/{IMPORTANCE_FILE}"))
    if done:
        return done[0].parent
    result = run_importance(out, importance_settings())
    folder = variant_folder(out, result.variant)
    write_outputs(result, folder)
    return folder


def run_demo(out: Path = DEFAULT_OUT) -> Path:
    """Run the demo study into `out` and write its report; return the report folder."""
    from crbench.report import print_summary, write_report
    from crbench.runner import run

    start = time.monotonic()
    summary = run(demo_spec_path(), out)
    for line in summary.lines():
        print(line)
    print(f"module importance: {measure_importance(out)}")
    report, written = write_report(out, None, ["md", "html", "latex", "csv"])
    print_summary(report, written)
    from crbench.browser import write_browser

    print(f"trace browser: {write_browser(out)}")
    minutes = (time.monotonic() - start) / 60
    print(f"demo finished in {minutes:.1f} min; report: {out / 'report' / 'report.html'}")
    return out / "report"
