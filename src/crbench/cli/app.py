"""The typer application and its global options; the commands live beside it."""

from __future__ import annotations

from typing import Annotated

import typer

from crbench.threads import set_openmp_waiting

set_openmp_waiting()  # before anything imports torch

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
