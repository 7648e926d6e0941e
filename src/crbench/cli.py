"""The `crbench` command line: one subcommand per pipeline stage.

    compress -> run (generate + store + score) -> score (rescore stored or foreign outputs)
    -> export / report;  convert and demo-model prepare models;  demo runs the whole study.

Commands import their stage lazily so `crbench --help` stays fast. Bad input raises
`InputError`; `main` turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from crbench.errors import InputError

# PyTorch's OpenMP threads spin-wait by default; under any CPU contention that costs 5-8x.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# `crbench --help` lists the commands in pipeline order; commands not named here come last.
PIPELINE_ORDER = ("demo", "compress", "distill", "run", "merge", "score", "export", "report",
                  "browse", "probe", "importance", "protect", "ppl", "synth", "convert",
                  "demo-model", "env")


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="crbench: what does compressing a reasoning model cost, in accuracy and in tokens?",
)


def show_version(value: bool) -> None:
    if value:
        from crbench import __version__

        print(f"crbench {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="also show the libraries' own progress bars, logs and warnings"
    )] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=show_version, is_eager=True, help="print the version and exit"
    )] = False,
) -> None:
    """crbench: what does compressing a reasoning model cost, in accuracy and in tokens?"""
    from crbench import quiet

    quiet.configure(verbose)


# --- models ---------------------------------------------------------------------------------


@app.command()
def convert(
    gguf_file: Annotated[Path, typer.Argument(help="a .gguf model file")],
    out: Annotated[Path, typer.Option("--out", help="folder to write")],
) -> None:
    """Convert a GGUF model to a plain Hugging Face folder (fp32 safetensors)."""
    from crbench.models import convert_gguf

    print(convert_gguf(gguf_file, out))


@app.command("demo-model")
def demo_model() -> None:
    """Print the folder of the offline demo model (SmolLM2-135M-Instruct), converting it once."""
    import contextlib

    from crbench.models import demo_model_path

    # Conversion progress bars go to stderr; stdout carries only the path.
    with contextlib.redirect_stdout(sys.stderr):
        path = demo_model_path()
    print(path)


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
        summary.update(sampling_summary(records))
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
    shown = [name for name in ("n", "accuracy", "em", "f1", "no_answer", "truncated",
                               "unfinished", "missing_output") if name in summary]
    for name in shown:
        table.add_column(name, justify="right")
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

# --- compress, ppl (owner: compress) --------------------------------------------------------


def compress_methods() -> tuple[str, ...]:
    """The method registry's compression methods (cheap: no torch)."""
    from crbench.compress.methods import names

    return names(compressing=True)


@app.command()
def compress(
    model: Annotated[str, typer.Option("--model", help="folder, .gguf, hub id, or 'demo'")],
    out: Annotated[Path, typer.Option("--out", help="folder to write the compressed model to")],
    method: Annotated[str | None, typer.Option(
        "--method", help=" | ".join(compress_methods()))] = None,
    recipe: Annotated[Path | None, typer.Option(
        "--recipe", help="TOML recipe (overrides, dense modules...); flags given here win")] = None,
    sparsity: Annotated[float | None, typer.Option(help="pruning: fraction of zeros")] = None,
    pattern: Annotated[str | None, typer.Option(help="pruning: N:M, e.g. 2:4")] = None,
    bits: Annotated[int | None, typer.Option(help="quantization: 2..8")] = None,
    group_size: Annotated[int | None, typer.Option(help="quantization: 0 = per channel")] = None,
    sym: Annotated[bool | None, typer.Option("--sym/--asym", help="symmetric grid")] = None,
    act_order: Annotated[bool | None, typer.Option("--act-order", help="GPTQ order")] = None,
    damp: Annotated[float | None, typer.Option(help="Hessian damping (x mean diag)")] = None,
    dense: Annotated[list[str] | None, typer.Option(
        "--dense", help="module pattern kept dense, e.g. 'layers.-1.mlp.*' (repeatable)")] = None,
    calib: Annotated[str | None, typer.Option(help=".txt/.jsonl file or hf:NAME")] = None,
    calib_samples: Annotated[int | None, typer.Option(help="calibration windows")] = None,
    seqlen: Annotated[int | None, typer.Option(help="tokens per calibration window")] = None,
    seed: Annotated[int | None, typer.Option(help="which calibration windows")] = None,
) -> None:
    """Prune or quantize a model with calibration data; writes a Hugging Face folder."""
    from crbench.compress import compress_model, load_recipe, parse_recipe

    flags = {"method": method, "sparsity": sparsity, "pattern": pattern, "bits": bits,
             "group_size": group_size, "sym": sym, "act_order": act_order, "damp": damp,
             "dense": dense or None, "calib": calib, "calib_samples": calib_samples,
             "seqlen": seqlen, "seed": seed}
    given = {k: v for k, v in flags.items() if v is not None}
    if recipe is not None:
        base = load_recipe(recipe).model_dump(exclude_unset=True)
        parsed = parse_recipe({**base, **given}, recipe)
    else:
        parsed = parse_recipe(given, "command line")
    folder = compress_model(model, parsed, out, log=lambda line: print(line, file=sys.stderr))
    print(folder)


@app.command()
def distill(
    out: Annotated[Path, typer.Option("--out", help="folder to write (a rerun resumes there)")],
    recipe: Annotated[str | None, typer.Option(
        "--recipe", help="a named recipe: tiny-reasoner; flags given here win")] = None,
    student: Annotated[str | None, typer.Option(help="folder, .gguf, hub id, or 'demo'")] = None,
    synthetic: Annotated[str | None, typer.Option(
        help="solver traces, e.g. synth_arith:1-3,synth_logic:1")] = None,
    traces: Annotated[str | None, typer.Option(help="JSONL of {prompt, completion}")] = None,
    run: Annotated[str | None, typer.Option("--run", help="a crbench run folder")] = None,
    pick: Annotated[str | None, typer.Option(
        help="from a run: correct | shortest-correct | all")] = None,
    full: Annotated[bool | None, typer.Option(
        "--full/--lora", help="full fine-tuning instead of LoRA")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="optimizer steps")] = None,
    epochs: Annotated[float | None, typer.Option(help="passes over the data")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate")] = None,
    batch_size: Annotated[int | None, typer.Option(help="examples per step")] = None,
    seed: Annotated[int | None, typer.Option(help="training seed")] = None,
) -> None:
    """Fine-tune a student on teacher reasoning traces (LoRA by default); writes a model folder."""
    from crbench.distill import distill as run_distill
    from crbench.distill import named_recipe, parse_recipe

    flags = {"student": student, "synthetic": synthetic, "traces": traces, "run": run,
             "pick": pick, "full": full, "max_steps": steps, "epochs": epochs, "lr": lr,
             "batch_size": batch_size, "seed": seed}
    given = {k: v for k, v in flags.items() if v is not None}
    base = named_recipe(recipe).model_dump(exclude_unset=True) if recipe else {}
    if given.keys() & {"synthetic", "traces", "run"}:  # a source given here replaces the recipe's
        base = {k: v for k, v in base.items() if k not in ("synthetic", "traces", "run")}
    parsed = parse_recipe({**base, **given}, "command line")
    folder = run_distill(parsed, out, log=lambda line: print(line, file=sys.stderr))
    print(folder)


@app.command()
def ppl(
    model: Annotated[str, typer.Option("--model", help="folder, .gguf, hub id, or 'demo'")],
    data: Annotated[Path, typer.Option("--data", help="plain text file")],
    seqlen: Annotated[int, typer.Option(help="tokens per window (non-overlapping)")] = 512,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    dtype: Annotated[str, typer.Option(help="auto (see `crbench env`) | bf16 | fp16 | fp32")
                     ] = "auto",
) -> None:
    """Perplexity of a model on a text file, in fixed non-overlapping windows."""
    import json

    from crbench.ppl import perplexity

    result = perplexity(model, data, seqlen, dtype=dtype)
    if as_json:
        print(json.dumps(result))
    else:
        print(f"perplexity {result['ppl']:.3f} over {result['tokens']} tokens "
              f"({result['windows']} windows of {result['seqlen']})")


# --- end compress, ppl ----------------------------------------------------------------------

# --- env (owner: engines) --------------------------------------------------------------------


@app.command()
def env(
    refresh: Annotated[bool, typer.Option("--refresh", help="measure the dtype probe again")
                       ] = False,
) -> None:
    """This machine as crbench sees it: versions, device, and what dtype "auto" chooses."""
    from crbench.dtype import environment

    for line in environment(refresh=refresh):
        print(line)


# --- end env --------------------------------------------------------------------------------

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

# --- probe (owner: probes) ------------------------------------------------------------------


@app.command()
def probe(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (holds results.sqlite)")],
    budgets: Annotated[str | None, typer.Option(
        "--budgets", help="thinking budgets to probe, e.g. 32,64,128 (default: 16, 32, 64, ... "
                          "below each task's longest thinking)")] = None,
    every: Annotated[int | None, typer.Option(
        "--every", help="probe every K thinking tokens (Dynasor's interval)")] = None,
    tokens: Annotated[int, typer.Option(
        "--tokens", help="new tokens after the answer cue")] = 24,
    cue: Annotated[str | None, typer.Option(
        "--cue", help="text after </think> (default: the task's answer cue)")] = None,
    spec: Annotated[Path | None, typer.Option(
        "--spec", help="the run's spec (default: the one the store records)")] = None,
) -> None:
    """Forced-answer probes: each stored trace cut after B thinking tokens, closed, and the
    answer asked for; stored beside the generations (resumable), shown by `crbench report`."""
    from crbench.probes import ProbeSettings, parse_budgets, run_probes

    settings = ProbeSettings(budgets=parse_budgets(budgets) if budgets is not None else (),
                             every=every, cue=cue, max_new_tokens=tokens)
    summary = run_probes(run_dir, settings, spec=spec)
    for line in summary.lines():
        print(line)
    if summary.failed:
        raise typer.Exit(1)


# --- end probe ------------------------------------------------------------------------------

# --- importance, protect (owner: F2) --------------------------------------------------------


@app.command()
def importance(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (holds results.sqlite)")],
    variant: Annotated[str | None, typer.Option(
        "--variant", help="whose traces and model (default: the run's root variant)")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="load this model instead of the one the store records")] = None,
    parent: Annotated[str | None, typer.Option(
        "--parent", help="a variant or model measured on the same traces: shift = parent - "
                         "this")] = None,
    traces: Annotated[int, typer.Option("--traces", help="traces per task")] = 30,
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", help="prompt + trace tokens kept per trace")] = 1024,
    validate_layers: Annotated[str | None, typer.Option(
        "--validate-layers", help="layers swept one module at a time: 0,15,-1 | all | none "
                                  "(default: first, middle, last)")] = None,
    bits: Annotated[int, typer.Option("--bits", help="bits of the validation sweep")] = 3,
    device: Annotated[str, typer.Option("--device", help="cpu | cuda")] = "cpu",
    out: Annotated[Path | None, typer.Option(
        "--out", help="folder (default: RUN_DIR/importance/VARIANT)")] = None,
    protect_budget: Annotated[str | None, typer.Option(
        "--protect", help="also write a recipe keeping this share of weights dense, e.g. 2%")
    ] = None,
    recipe_out: Annotated[Path | None, typer.Option(
        "--recipe-out", help="where --protect writes its recipe (TOML)")] = None,
    method: Annotated[str, typer.Option("--method", help="the recipe's method")] = "rtn",
    labeller_url: Annotated[str | None, typer.Option(
        "--labeller-url", help="label sentences with a model behind this OpenAI-compatible "
                               "server (default: the rule labeller)")] = None,
    labeller_model: Annotated[str, typer.Option(
        "--labeller-model", help="the labelling model's name on that server")] = "",
    behaviours: Annotated[str | None, typer.Option(
        "--behaviours", help="comma-separated behaviours of the taxonomy (default: "
                             "backtracking, uncertainty-estimation, example-testing, "
                             "adding-knowledge)")] = None,
) -> None:
    """Which linear modules carry reasoning: behaviour spans of the stored traces (rule
    labeller or a model), difference-of-means directions and attribution patching per module,
    checked by quantizing one module at a time (Spearman's rho)."""
    from crbench.importance_output import summary_lines, variant_folder, write_outputs
    from crbench.importance_run import ImportanceSettings, run_importance

    if protect_budget is not None and recipe_out is None:
        raise InputError(None, "--protect needs --recipe-out FILE.toml", "--recipe-out")
    settings = ImportanceSettings(variant=variant, model=model, parent=parent, per_task=traces,
                                  max_tokens=max_tokens, validate_layers=validate_layers,
                                  bits=bits, device=device, labeller_url=labeller_url,
                                  labeller_model=labeller_model,
                                  **({"behaviours": tuple(b.strip() for b in behaviours.split(",")
                                                          if b.strip())} if behaviours else {}))
    result = run_importance(run_dir, settings)
    folder = out or variant_folder(run_dir, result.variant)
    write_outputs(result, folder)
    for line in summary_lines(result, folder):
        print(line)
    if protect_budget is not None and recipe_out is not None:
        _write_protect(folder / "importance.json", protect_budget, recipe_out, method, bits,
                       None, "all")


def _write_protect(source: Path, budget: str, out: Path, method: str, bits: int,
                   group_size: int | None, by: str, calib: str | None = None) -> None:
    from crbench.importance_io import read_importance
    from crbench.protect import comparison_lines, parse_budget, protect, recipe_toml, write_recipe

    result = read_importance(source)
    plan = protect(result, parse_budget(budget), by)
    write_recipe(recipe_toml(plan, method=method, bits=bits, group_size=group_size, calib=calib,
                             source=str(source)), out)
    for line in comparison_lines(result, plan, bits):
        print(line)
    print(f"recipe: {out}")


@app.command()
def protect(
    importance_file: Annotated[Path, typer.Argument(help="importance.json (or its folder)")],
    budget: Annotated[str, typer.Option("--budget", help="share of weights kept dense: 2%")],
    out: Annotated[Path, typer.Option("--out", help="the recipe to write (TOML)")],
    method: Annotated[str, typer.Option("--method")] = "rtn",
    bits: Annotated[int, typer.Option("--bits")] = 3,
    group_size: Annotated[int | None, typer.Option("--group-size")] = None,
    calib: Annotated[str | None, typer.Option("--calib", help="calibration text")] = None,
    by: Annotated[str, typer.Option("--by", help="importance column: all or a behaviour")
                  ] = "all",
) -> None:
    """A recipe that keeps the most important modules per weight dense, within the budget; and
    the share the paper's keep-last-MLP choice keeps, for a comparison at equal bits."""
    _write_protect(importance_file, budget, out, method, bits, group_size, by, calib)


# --- synth (owner: synth) -------------------------------------------------------------------


@app.command()
def synth(
    family: Annotated[str, typer.Argument(help="arith | logic | temporal | multihop")],
    out: Annotated[Path, typer.Option("--out", help="file to write")],
    difficulty: Annotated[int, typer.Option("--difficulty", help="1 (easiest) to 8")] = 1,
    n: Annotated[int, typer.Option("--n", help="number of items")] = 30,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Generate synthetic items in the matching real dataset's format (arith: AIME JSONL,
    logic: FOLIO JSONL, temporal: BBH JSON, multihop: MuSiQue JSONL)."""
    from crbench.tasks.synth_common import FAMILIES, check_difficulty, real_task

    name = family.removeprefix("synth_")
    if name not in FAMILIES:
        raise InputError(None, f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if n < 1:
        raise InputError(None, f"--n must be at least 1, got {n}")
    task = real_task(f"synth_{name}")
    print(task.write(task.generate(n, check_difficulty(difficulty), seed), out))


# --- end synth ------------------------------------------------------------------------------

# --- demo (owner: demo) ---------------------------------------------------------------------


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="run directory")] = Path("runs/demo"),
    show_spec: Annotated[
        bool, typer.Option("--show-spec", help="print the demo's spec file path and exit")
    ] = False,
) -> None:
    """The whole study offline: SmolLM2-135M compressed ten ways, evaluated, reported."""
    from crbench.demo import demo_spec_path, run_demo

    if show_spec:
        print(demo_spec_path())
        return
    run_demo(out)


# --- end demo -------------------------------------------------------------------------------


def command_rank(command: typer.models.CommandInfo) -> tuple[int, str]:
    name = command.name or (command.callback.__name__ if command.callback else "")
    return (PIPELINE_ORDER.index(name) if name in PIPELINE_ORDER else len(PIPELINE_ORDER), name)


app.registered_commands.sort(key=command_rank)  # `--help` lists them in this order


def main() -> None:
    try:
        app()
    except InputError as exc:
        print(f"crbench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("crbench: interrupted (everything finished so far is stored)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
