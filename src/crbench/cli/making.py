"""Commands that make and measure models: convert, demo-model, compress, distill, ppl, env,
synth."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from crbench.cli.app import app
from crbench.errors import InputError

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
    act_order: Annotated[bool | None, typer.Option(
        "--act-order/--no-act-order", help="GPTQ: inputs by decreasing Hessian diagonal "
        "(default on)")] = None,
    damp: Annotated[float | None, typer.Option(help="Hessian damping (x mean diag)")] = None,
    dense: Annotated[list[str] | None, typer.Option(
        "--dense", help="module pattern kept dense, e.g. 'layers.-1.mlp.*' (repeatable)")] = None,
    calib: Annotated[str | None, typer.Option(help=".txt/.jsonl file or hf:NAME")] = None,
    calib_samples: Annotated[int | None, typer.Option(help="calibration windows")] = None,
    seqlen: Annotated[int | None, typer.Option(help="tokens per calibration window")] = None,
    seed: Annotated[int | None, typer.Option(help="which calibration windows")] = None,
    dtype: Annotated[str | None, typer.Option(
        help="calibration forwards: auto (measured, see crbench env) | bf16 | fp16 | fp32; "
        "weights and Hessians stay fp32")] = None,
) -> None:
    """Prune or quantize a model with calibration data; writes a Hugging Face folder."""
    from crbench.compress import compress_model, load_recipe, parse_recipe

    flags = {"method": method, "sparsity": sparsity, "pattern": pattern, "bits": bits,
             "group_size": group_size, "sym": sym, "act_order": act_order, "damp": damp,
             "dense": dense or None, "calib": calib, "calib_samples": calib_samples,
             "seqlen": seqlen, "seed": seed, "dtype": dtype}
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
