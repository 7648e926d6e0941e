"""The `crbench` command line: one subcommand per pipeline stage.

    demo -> compress / distill -> run (generate + store + score) -> merge -> score (rescore
    stored or foreign outputs) -> export / report / browse;  probe, importance, protect analyse
    stored traces;  ppl, synth, convert, demo-model, env are tools.

    app.py       the typer app, --version and --verbose, the pipeline order of `--help`
    study.py     run, merge, score, export, report, browse, demo
    making.py    convert, demo-model, compress, distill, ppl, env, synth
    analyses.py  probe, importance, protect

A new command goes into the module of its kind (and its name into `app.PIPELINE_ORDER`).
Commands import their stage lazily so `crbench --help` stays fast. Bad input raises
`InputError`; `main` turns it into one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import typer

from crbench.cli import analyses, making, study  # noqa: F401 - importing registers the commands
from crbench.cli.app import PIPELINE_ORDER, app
from crbench.errors import InputError

__all__ = ["app", "main"]


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
