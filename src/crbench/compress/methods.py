"""The method registry: every way crbench makes a model variant, in one list.

Everything else derives from `METHODS`: recipe validation (which fields a method takes, whether
it needs calibration text, pruning vs quantization defaults), the compression pipeline (which
algorithm module runs), the runner (how a spec variant's model folder is built, and which
recipe fields describe it in the `variants` table) and the CLI's `--method` help.

Adding a compression method is one new file plus one line here:

    1. `crbench/compress/<name>.py` with `NEEDS` ("hessian" | "column_norms" | None: what the
       layerwise calibration collects for it) and a function `<name>(w, stats, **settings)`
       returning (new weight, info); the pipeline passes it the settings its signature names
       (sparsity, pattern, bits, group_size, sym, damp, block_size, where, ...).
    2. A `Method(...)` line below: its kind, whether it needs calibration text, and the
       method-specific recipe fields it takes (fields of `crbench.compress.recipe.Recipe`).

A variant made some other way (distillation: `method = "distill"`) is a line with its own
`build` (the function that makes the model folder, cached), `check` (the function that
validates its recipe at spec load) and `cached` (what a dry run asks: built already?), kind
"other"; the runner calls whatever the line names, never an if/else on method names.
This module imports nothing heavy: the spec loader reads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crbench.errors import InputError

Kind = Literal["prune", "quant", "other"]
COMPRESS = "crbench.compress:compress_cached"  # build: the compression pipeline, cached
CACHED = "crbench.compress:cached_path"  # cached: its folder if built already, else None
RECIPE = "crbench.compress.recipe:parse_recipe"  # check: the compression recipe


@dataclass(frozen=True)
class Method:
    name: str  # what a recipe's `method` says
    module: str  # the module holding the algorithm
    kind: Kind  # "prune" and "quant" fill different columns of the variants table
    calibrated: bool  # needs calibration text (`calib`)
    fields: frozenset[str]  # the method-specific recipe fields it takes
    build: str = COMPRESS  # "module:function" (base_model, recipe, log=...) -> model folder
    check: str = RECIPE  # "module:function" (recipe dict, source) -> validated recipe
    cached: str | None = CACHED  # "module:function" (base_model, recipe) -> folder | None
    defaults: Mapping[str, object] = field(default_factory=dict)  # over recipe.QUANT_DEFAULTS

    @property
    def compresses(self) -> bool:
        """Made by the compression pipeline (layer by layer, `compression.json`)."""
        return self.build == COMPRESS


PRUNE_FIELDS = frozenset({"sparsity", "pattern"})
QUANT_FIELDS = frozenset({"bits", "group_size", "sym"})
HESSIAN_FIELDS = frozenset({"damp", "block_size"})
AWQ_FIELDS = frozenset({"then", "duo", "clip", "grid"})

METHODS: dict[str, Method] = {m.name: m for m in [
    Method("sparsegpt", "crbench.compress.sparsegpt", "prune", True,
           PRUNE_FIELDS | HESSIAN_FIELDS),
    Method("wanda", "crbench.compress.wanda", "prune", True, PRUNE_FIELDS),
    Method("magnitude", "crbench.compress.magnitude", "prune", False, PRUNE_FIELDS),
    Method("gptq", "crbench.compress.gptq", "quant", True,
           QUANT_FIELDS | HESSIAN_FIELDS | {"act_order", "static_groups"},
           defaults={"act_order": True}),
    Method("rtn", "crbench.compress.rtn", "quant", False, QUANT_FIELDS),
    Method("awq", "crbench.compress.awq", "quant", True,
           QUANT_FIELDS | HESSIAN_FIELDS | {"act_order", "static_groups", *AWQ_FIELDS},
           defaults={"group_size": 128, "sym": False, "then": "rtn", "duo": True, "clip": True,
                     "grid": 20, "act_order": True}),
    Method("distill", "crbench.distill", "other", False, frozenset(),
           build="crbench.distill:distill_cached", check="crbench.distill:check_variant",
           cached=None),
    # New methods: one line here.
]}


def get_method(name: str, source: str | Path | None = None, place: str | None = "method"
               ) -> Method:
    """The registry line for `name`; an unknown name is one InputError listing the known."""
    method = METHODS.get(name)
    if method is None:
        raise InputError(source, f"unknown method {name!r}; known: {', '.join(METHODS)}", place)
    return method


def names(kind: Kind | None = None, *, compressing: bool | None = None) -> tuple[str, ...]:
    """Method names in registry order, optionally of one kind or only pipeline methods."""
    return tuple(m.name for m in METHODS.values()
                 if (kind is None or m.kind == kind)
                 and (compressing is None or m.compresses == compressing))


def specific_fields() -> frozenset[str]:
    """Every method-specific recipe field: a field set for a method not listing it is wrong."""
    return frozenset().union(*(m.fields for m in METHODS.values()))


def takers(setting: str) -> tuple[str, ...]:
    """The methods that take the recipe field `setting` (for error messages)."""
    return tuple(m.name for m in METHODS.values() if setting in m.fields)


def load(target: str) -> Callable[..., Any]:  # Any: each line's function has its own signature
    """The function a "module:function" string names, imported on first use."""
    module, _, function = target.partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(module), function)
    return found
