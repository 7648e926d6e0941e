"""Compress a model by a recipe and write it as a plain Hugging Face folder with a manifest.

    plan_modules   which linear layers get which settings (overrides, dense patterns, checks)
    compress_loaded  apply the method to a loaded model in place, return the manifest records
    compress_model   load, compress, save (temp folder renamed at the end), return the folder
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from crbench.compress import MANIFEST, methods
from crbench.compress.calibration import calibration_windows, load_source
from crbench.compress.layerwise import calibrate_sequentially, decoder_layers
from crbench.compress.recipe import Recipe, Settings, matches
from crbench.dtype import canonical, model_shape, resolve_dtype
from crbench.errors import InputError

Log = Callable[[str], None]  # progress lines
__all__ = ["MANIFEST", "compress_loaded", "compress_model", "load_manifest", "plan_modules"]


def algorithm_module(method: str) -> ModuleType:
    """The module of a registered method (`crbench.compress.methods`)."""
    return importlib.import_module(methods.get_method(method).module)


def plan_modules(model: nn.Module, recipe: Recipe) -> tuple[dict, list[dict]]:
    """({layer: {name: (linear, settings, override index)}} to compress, records of the
    modules kept dense).

    Targets are the linear layers inside the decoder layers, so embeddings and lm_head stay
    dense. A module's names for matching: its full name and the same with the layer index
    counted from the end (`model.layers.29.mlp.up_proj` is also `model.layers.-1.mlp.up_proj`).
    The last override that matches wins; `dense` patterns win over everything.
    """
    prefix, layers = decoder_layers(model)
    plan: dict[int, dict[str, tuple[nn.Linear, Settings, int | None]]] = {}
    kept: list[dict] = []
    for index, layer in enumerate(layers):
        for short, module in layer.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            name = f"{prefix}.{index}.{short}"
            names = [name, f"{prefix}.{index - len(layers)}.{short}"]
            override_index, override = None, None
            for i, candidate in enumerate(recipe.overrides):
                match = candidate.match
                if any(matches(p, names) for p in ([match] if isinstance(match, str) else match)):
                    override_index, override = i, candidate
            dense_by = next((p for p in recipe.dense if matches(p, names)), None)
            if dense_by is not None or (override is not None and override.dense):
                reason = f"dense: {dense_by!r}" if dense_by else f"overrides.{override_index}"
                kept.append({"module": name, "layer": index, "kept_dense": True, "by": reason,
                             "params": module.weight.numel()})
                continue
            settings = recipe.settings_for(override)
            check_shape(recipe, name, module, settings)
            plan.setdefault(index, {})[name] = (module, settings, override_index)
    return plan, kept


def check_shape(recipe: Recipe, name: str, module: nn.Linear, settings: Settings) -> None:
    inputs = module.in_features
    if settings.group_size and inputs % settings.group_size:
        divisors = [g for g in (256, 128, 64, 32) if inputs % g == 0]
        hint = f"; {divisors[0]} divides it" if divisors else ""
        raise InputError(recipe._source, f"group size {settings.group_size} does not divide the "
                         f"{inputs} inputs of {name}{hint} (or use 0: per channel)", "group_size")
    n_m = settings.n_m()
    if n_m and inputs % n_m[1]:
        raise InputError(recipe._source, f"pattern {settings.pattern}: {n_m[1]} does not divide "
                         f"the {inputs} inputs of {name}", "pattern")


def run_algorithm(method: str, w: torch.Tensor, stats: torch.Tensor | None, settings: Settings,
                  recipe: Recipe, where: str, segments: list[int]) -> tuple[torch.Tensor, dict]:
    """Call the method's function `<method>(w, [stats], **settings)` with the settings its
    signature names, so a new method needs no line here (see `crbench.compress.methods`)."""
    kind = methods.get_method(method).kind
    offered: dict[str, Any] = {"where": where, "segments": segments}
    if kind == "prune":
        offered.update(sparsity=settings.sparsity, pattern=settings.n_m())
    else:
        offered.update(bits=settings.bits, group_size=settings.group_size or None,
                       sym=settings.sym, act_order=settings.act_order,
                       static_groups=settings.static_groups)
    offered.update(damp=recipe.damp, block_size=recipe.block_size, then=recipe.then)
    algorithm = getattr(algorithm_module(method), method)
    taken = inspect.signature(algorithm).parameters
    args = {name: value for name, value in offered.items() if name in taken}
    return algorithm(w, stats, **args) if stats is not None else algorithm(w, **args)


def compress_group(recipe: Recipe, index: int, entries: dict[str, tuple],
                   stats: torch.Tensor | None) -> list[dict]:
    """Compress linear layers that share one input (and so one Hessian) and one setting in a
    single call, their weights stacked by rows: for GPTQ, SparseGPT and Wanda each row is
    compressed on its own given H, so this is exact, and H is factorised once. Returns one
    manifest record per module."""
    names = list(entries)
    _, settings, override = entries[names[0]]
    originals = [entries[name][0].weight.data for name in names]
    w = torch.cat([x.to(torch.float32) for x in originals])
    rows = [x.shape[0] for x in originals]
    new, info = run_algorithm(recipe.method, w, stats, settings, recipe, names[0], rows)
    row_loss = info.pop("row_loss", None)
    records, start = [], 0
    for name, original in zip(names, originals, strict=True):
        part = slice(start, start + original.shape[0])
        start = part.stop
        old, compressed = w[part], new[part]
        record: dict[str, Any] = {"module": name, "layer": index, "kept_dense": False,
                                  "params": original.numel()}
        if override is not None:
            record["by"] = f"overrides.{override}"
        if methods.get_method(recipe.method).kind == "prune":
            record.update(target_sparsity=settings.target_sparsity(), pattern=settings.pattern)
        else:
            record.update(bits=settings.bits, group_size=settings.group_size or None,
                          sym=settings.sym, act_order=settings.act_order,
                          static_groups=settings.static_groups)
        record["sparsity"] = (compressed == 0).float().mean().item()
        record.update(info)
        delta = compressed - old
        record["weight_error"] = (delta.pow(2).sum() / old.pow(2).sum().clamp_min(1e-30)).item()
        if row_loss is not None and stats is not None:  # ||dW X||^2 / ||W X||^2, from H
            record["output_error"] = (row_loss[part].sum()
                                      / (old @ stats * old).sum().clamp_min(1e-30)).item()
        entries[name][0].weight.data = compressed.to(original.dtype)
        records.append(record)
    return records


def split_by_settings(entries: dict[str, tuple]) -> list[dict[str, tuple]]:
    """Modules of one input group, split where overrides gave them different settings."""
    groups: dict[tuple, dict[str, tuple]] = {}
    for name, entry in entries.items():
        groups.setdefault((entry[1].model_dump_json(), entry[2]), {})[name] = entry
    return list(groups.values())


def compress_loaded(model: nn.Module, tokenizer: Any, recipe: Recipe, *,
                    device: torch.device | str | None = None, log: Log | None = None,
                    source: tuple[str, dict] | None = None) -> dict[str, Any]:
    """Compress a loaded model in place; returns the manifest's calibration, modules, layers.

    `source` is the calibration text already loaded (`load_source(recipe.calib)`), if it is.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    plan, kept = plan_modules(model, recipe)
    needs = algorithm_module(recipe.method).NEEDS
    result: dict[str, Any] = {"calibration": None, "layers": []}
    if needs is None:
        records = [record for index, entries in plan.items() for name, entry in entries.items()
                   for record in compress_group(recipe, index, {name: entry}, None)]
    else:
        windows, result["calibration"] = calibration_windows(
            tokenizer, source or load_source(recipe.calib or ""), recipe.calib_samples,
            recipe.seqlen,
            recipe.seed)
        targets = {index: {name: e[0] for name, e in entries.items()}
                   for index, entries in plan.items()}

        def group(index: int, modules: dict[str, nn.Linear], stats: torch.Tensor) -> list[dict]:
            entries = {name: plan[index][name] for name in modules}
            return [record for same in split_by_settings(entries)
                    for record in compress_group(recipe, index, same, stats)]

        step = getattr(algorithm_module(recipe.method), "layer_step", None)  # AWQ's scales
        forward_dtype = resolve_dtype(recipe.dtype, device, model_shape(model.config))
        if forward_dtype == torch.float32:  # autocast only lowers: fp32 means the weights'
            forward_dtype = next(model.parameters()).dtype
        result["forward_dtype"] = canonical(forward_dtype)
        records, result["layers"] = calibrate_sequentially(
            model, windows, targets, group, diagonal_only=needs == "column_norms",
            device=device, log=log, prepare_layer=step(recipe, plan) if step else None,
            propagate=recipe.propagate, forward_dtype=forward_dtype)
        model.to("cpu")
    result["modules"] = sorted(records + kept, key=lambda r: (r["layer"], r["module"]))
    return result


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    found = {"python": platform.python_version()}
    for package in ("crbench", "torch", "transformers", "safetensors"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def summary(modules: list[dict]) -> dict[str, Any]:
    done = [m for m in modules if not m["kept_dense"]]
    return {
        "modules_compressed": len(done),
        "modules_kept_dense": len(modules) - len(done),
        "dead_columns": sum(m.get("dead_columns", 0) for m in done),
        "max_damp": max((m["damp"] for m in done if "damp" in m), default=None),
    }


def compress_model(base_model: str | Path, recipe: Recipe, out_dir: str | Path, *,
                   device: str | None = None, log: Log | None = None, extra: dict | None = None
                   ) -> Path:
    """Load `base_model`, compress it by `recipe`, write a Hugging Face folder to `out_dir`.

    The weights are saved in the base model's dtype: pruned weights as dense tensors with
    zeros, quantized weights fake-quantized. Written to a temporary folder next to `out_dir`
    and renamed at the end, so a crash never leaves half a model.
    """
    from transformers import AutoConfig

    from crbench.models import load_causal_lm, resolve_model

    started = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise InputError(out_dir, "exists and is not a compressed model: refusing to replace it")
    path = resolve_model(base_model)
    source = load_source(recipe.calib) if recipe.calib else None  # bad text fails before loading
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    saved_dtype = getattr(AutoConfig.from_pretrained(path), "dtype", None) or torch.float32
    saved_dtype = getattr(torch, saved_dtype) if isinstance(saved_dtype, str) else saved_dtype
    compute_dtype = "float32" if device == "cpu" else str(saved_dtype).removeprefix("torch.")
    model, tokenizer = load_causal_lm(path, device="cpu", dtype=compute_dtype)
    try:
        result = compress_loaded(model, tokenizer, recipe, device=device, log=log, source=source)
    except InputError as exc:
        if exc.path is None:  # a layer-level problem: name the model it happened in
            exc.path = path
        raise
    manifest = {
        "method": recipe.method,
        "recipe": recipe.model_dump(mode="json"),
        "base_model": {"name": str(base_model), "path": path},
        **(extra or {}),
        "seed": recipe.seed,
        "device": device,
        "compute_dtype": compute_dtype,
        "saved_dtype": str(saved_dtype).removeprefix("torch."),
        "forward_dtype": result.get("forward_dtype"),  # the calibration forwards'
        "calibration": result["calibration"],
        "summary": summary(result["modules"]),
        "layers": result["layers"],
        "modules": result["modules"],
        "wall_s": round(time.perf_counter() - started, 2),
        "versions": versions(),
    }
    return save_model(model.to(saved_dtype), tokenizer, manifest, out_dir)


def save_model(model: Any, tokenizer: Any, manifest: dict, out_dir: Path) -> Path:
    # Any: a transformers model (save_pretrained is not on nn.Module)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        for file in tmp.iterdir():
            file.chmod(0o644)  # some writers leave private temp-file modes
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The `compression.json` of a compressed model folder (or the file itself)."""
    path = Path(path)
    file = path / MANIFEST if path.is_dir() else path
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(file, "no compression manifest (not made by crbench compress?)") from None
    except json.JSONDecodeError as exc:
        raise InputError(file, f"not valid JSON: {exc.msg}", f"line {exc.lineno}") from None
