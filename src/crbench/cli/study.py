"""Commands that run and read a study: run, merge, score, export, report, browse, demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from crbench.cli.app import app
from crbench.errors import InputError

# --- score (owner: tasks) -------------------------------------------------------------------


@app.command()
def score(
    task: Annotated[str | None, typer.Option("--task", help="task name, e.g. aime24")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="dataset file (official format)")
    ] = None,
    outputs: Annotated[
        Path | None,
        typer.Option("--outputs", help='folder of N.txt, or JSONL of {"index", "output"} '
                     '(with "sample": S, several samples per item: avg@n, pass@k, maj@k)'),
    ] = None,
    per_item: Annotated[
        Path | None, typer.Option("--per-item", help="write one JSON line per item here")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    mode: Annotated[str | None, typer.Option("--mode", help="musique: closed | open")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="score a seeded sample")] = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the --limit sample")] = 0,
    run_dir: Annotated[
        Path | None, typer.Option("--run", help="rescore every output stored in a run directory")
    ] = None,
    style: Annotated[str | None, typer.Option(
        "--style", help="prompt style the outputs were made with: completion (prefills <think>) "
                        "| chat | direct; default: the task's")] = None,
) -> None:
    """Score model outputs against a dataset file (N = the item's 0-based row in --data).

    Accuracy is over all items loaded from --data; items without an output count as no answer.
    Outputs are read in the prompt style that made them (--style; the paper's completion style
    prefills <think>, so an output without </think> is unfinished). no_answer, truncated and
    unfinished in the summary are counts.
    """
    import json

    if run_dir is not None:
        from crbench.rescore import rescore_run

        result = rescore_run(run_dir)
        print(json.dumps(result.as_json(), indent=None if as_json else 2))
        return
    if task is None or data is None or outputs is None:
        raise InputError(None, "score needs --task, --data and --outputs (or --run RUN_DIR)")

    from crbench.score import read_outputs, score_items, summarize
    from crbench.score_samples import (
        print_sampling_table,
        read_sampled_outputs,
        sampling_summary,
        score_samples,
    )
    from crbench.scoring import task_default_style
    from crbench.tasks import get_task
    from crbench.tasks.common import STYLES

    module = get_task(task)
    style = style or task_default_style(module)
    if style not in STYLES:
        raise InputError(None, f"unknown prompt style {style!r}; known: {', '.join(STYLES)}",
                         "--style")
    items = module.load(data, limit=limit, seed=seed, **({"mode": mode} if mode else {}))
    sampled = read_sampled_outputs(outputs)  # rows with sample numbers: avg@n, pass@k, maj@k
    if sampled is None:
        found = read_outputs(outputs)
        records = score_items(module, items, found, style)
    else:
        found = {i: out for by_index in sampled.values() for i, out in by_index.items()}
        records = score_samples(module, items, sampled, style)
    unmatched = sorted(set(found) - {item.index for item in items})
    if unmatched and limit is None:
        print(
            f"crbench: warning: {len(unmatched)} outputs match no item of {data} "
            f"(first: index {unmatched[0]})",
            file=sys.stderr,
        )
    summary = summarize(module.NAME, records, len(unmatched), style)
    if sampled is not None:
        from crbench.tasks import vote_key

        summary.update(sampling_summary(records, task_key=vote_key(module)))
    if per_item is not None:
        try:
            per_item.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        except OSError as exc:
            raise InputError(per_item, f"cannot write: {exc.strerror or exc}") from None
    if as_json:
        print(json.dumps(summary))
    else:
        _print_score_tables(summary, records[: len(items)], items)  # (the first sample's)
        if sampled is not None:
            print_sampling_table(summary)


def _print_score_tables(summary: dict, records: list[dict], items: list) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"crbench score: {summary['task']}")
    shown = [name for name in ("n", "accuracy", "em", "f1", "cover_em", "no_answer", "truncated",
                               "unfinished", "missing_output") if name in summary]
    for name in shown:
        table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
    # wide enough for every header whole (a pipe or a narrow terminal would cut them)
    console.width = max(console.width, sum(len(name) + 3 for name in shown) + 1)
    table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v)
                    for v in (summary[name] for name in shown)))
    console.print(table)
    wrong = [(r, item) for r, item in zip(records, items, strict=True) if not r["correct"]][:10]
    if wrong:
        misses = Table(title="first items scored wrong")
        for name in ("index", "extracted", "reference", "rule"):
            misses.add_column(name)
        for record, item in wrong:
            extracted = "—" if record["extracted"] is None else terminal_text(record["extracted"])
            reference = terminal_text(item.reference)
            misses.add_row(str(record["index"]), extracted, reference, record["rule"])
        console.print(misses)


def terminal_text(value: object) -> str:
    """Untrusted text for a rich table: control characters shown as escapes instead of sent
    (ESC starts sequences that retitle, clear or rewrite the terminal), markup escaped."""
    import unicodedata

    from rich.markup import escape

    text = str(value)
    return escape("".join(ch.encode("unicode_escape").decode() if unicodedata.category(ch) == "Cc"
                          and ch not in "\n\t" else ch for ch in text))


# --- end score ------------------------------------------------------------------------------

# --- run, export (owner: runner) ------------------------------------------------------------


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="experiment spec (.toml, or .yaml)")],
    out: Annotated[
        Path | None, typer.Option("--out", help="run directory (default: runs/<spec stem>)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the plan and what is stored; generate nothing")
    ] = False,
    shard: Annotated[str | None, typer.Option(
        "--shard", help="K/N: only share K of N, into its own store (default run dir + "
                        "-shard-K-of-N); `crbench merge` joins the shards")] = None,
) -> None:
    """Generate, store and score every (variant, task, item, repeat) of SPEC not stored yet."""
    from crbench.plan import parse_shard
    from crbench.runner import run as run_spec

    share = parse_shard(shard) if shard is not None else None
    summary = run_spec(spec, out, dry_run=dry_run, shard=share)
    if dry_run:
        return
    for line in summary.lines():
        print(line)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (holds results.sqlite)")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl | csv | parquet")] = "jsonl",
    out: Annotated[
        Path | None, typer.Option("--out", help="file to write (default: RUN_DIR/generations.*)")
    ] = None,
    include_all: Annotated[bool, typer.Option(
        "--all", help="also rows superseded by a newer run (column `superseded`)")] = False,
) -> None:
    """Write one row per generation of the run (what the report counts), with tokens and score."""
    from crbench.export import export_run

    print(export_run(run_dir, fmt, out, include_superseded=include_all))


@app.command()
def merge(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories (shards of one spec)")],
    out: Annotated[Path, typer.Option("--out", help="run directory to write the union into")],
) -> None:
    """Union the stores of runs of one spec (e.g. `run --shard K/N` shards) into one store."""
    from crbench.merge import merge_runs

    result = merge_runs(run_dirs, out)
    print(f"{result.out}: {result.generations} generations from {result.inputs} stores "
          f"({result.planned} planned)")


# --- end run, export ------------------------------------------------------------------------

# --- report (owner: report) -----------------------------------------------------------------


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (or its results.sqlite)")],
    format: Annotated[
        str, typer.Option("--format", help="comma-separated: md, html, latex, csv")
    ] = "md,html,latex,csv",
    out: Annotated[
        Path | None, typer.Option("--out", help="folder to write (default RUN_DIR/report)")
    ] = None,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=100, help="bootstrap replicates per interval")
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="bootstrap seed")] = 0,
) -> None:
    """Tables, figures and a self-contained HTML page from the results store alone.

    Re-run it any time, also while a run is still going: unfinished cells show their n.
    """
    from crbench.report import parse_formats, print_summary, write_report

    result, written = write_report(run_dir, out, parse_formats(format), bootstrap, seed)
    print_summary(result, written)


# --- end report -----------------------------------------------------------------------------

# --- browse (owner: thinking) ---------------------------------------------------------------


@app.command()
def browse(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (or its results.sqlite)")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="HTML file to write (default RUN_DIR/report/browser.html)")] = None,
) -> None:
    """Every stored trace in one self-contained HTML page: a parent's and its compressed
    variants' traces side by side, thinking folded, the first correct answer and hesitation
    markers highlighted; filters for flips, truncated and abandoned-correct traces."""
    from crbench.browser import write_browser

    print(write_browser(run_dir, out))


# --- end browse -----------------------------------------------------------------------------

# --- demo (owner: demo) ---------------------------------------------------------------------


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="run directory")] = Path("runs/demo"),
    show_spec: Annotated[
        bool, typer.Option("--show-spec", help="print the demo's spec file path and exit")
    ] = False,
) -> None:
    """The whole study offline: the tiny reasoner compressed four ways, evaluated, reported."""
    from crbench.demo import demo_spec_path, run_demo

    if show_spec:
        print(demo_spec_path())
        return
    run_demo(out)


# --- end demo -------------------------------------------------------------------------------
