"""Commands that analyse stored traces with model calls: probe, importance, protect."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crbench.cli.app import app
from crbench.errors import InputError

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
    from crbench.cues import TARGET_BEHAVIOURS

    chosen = (tuple(b.strip() for b in behaviours.split(",") if b.strip()) if behaviours
              else TARGET_BEHAVIOURS)
    settings = ImportanceSettings(variant=variant, model=model, parent=parent, per_task=traces,
                                  max_tokens=max_tokens, validate_layers=validate_layers,
                                  bits=bits, device=device, labeller_url=labeller_url,
                                  labeller_model=labeller_model, behaviours=chosen)
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
