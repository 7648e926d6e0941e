"""A compression recipe: one method, its settings, calibration, and per-module exceptions.

Validated with pydantic; any problem becomes one `InputError` line naming the file and field.
The fields are documented in `crbench.compress` (the package docstring). Which methods exist,
which of them prune or quantize, need calibration, or take a field is not written here: it is
read from the method registry, `crbench.compress.methods`.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from crbench.compress import methods
from crbench.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# What a quantization recipe gets when it does not say (every quantizing method).
QUANT_DEFAULTS = {"bits": 4, "group_size": 0, "sym": True, "act_order": False,
                  "static_groups": False}


class Settings(BaseModel):
    """What may differ from module to module."""

    model_config = ConfigDict(extra="forbid")

    sparsity: float | None = Field(default=None, gt=0, lt=1)
    pattern: str | None = None  # "N:M": keep N of every M consecutive inputs (2:4, 4:8)
    bits: int | None = Field(default=None, ge=2, le=8)
    group_size: int | None = Field(default=None, ge=0)  # None or 0: one grid per output channel
    sym: bool | None = None
    act_order: bool | None = None
    static_groups: bool | None = None  # gptq: group grids fitted up front from the original W

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            n_m = parse_pattern(value)
            if n_m is None or not 0 < n_m[0] < n_m[1]:
                raise ValueError(f"pattern must be 'N:M' with 0 < N < M, got {value!r}")
        return value

    def n_m(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern) if self.pattern else None

    def target_sparsity(self) -> float | None:
        n_m = self.n_m()
        return 1 - n_m[0] / n_m[1] if n_m else self.sparsity


class Override(Settings):
    """Modules matched by `match` are kept dense (`dense = true`) or get other settings."""

    match: str | list[str]
    dense: bool = False


class Recipe(Settings):
    method: str  # a compressing method of the registry
    damp: float = Field(default=0.01, gt=0, le=1)
    block_size: int = Field(default=128, ge=1)
    calib: str | None = None
    calib_samples: int = Field(default=32, ge=1)
    seqlen: int = Field(default=512, ge=2)
    seed: int = 0
    # What the next layer is calibrated on: the compressed layers' outputs (the GPTQ and
    # SparseGPT reference code) or the uncompressed model's (AutoAWQ and llm-compressor's AWQ).
    propagate: Literal["compressed", "dense"] = "compressed"
    # What the calibration forwards compute in ("auto": measured per machine, crbench.dtype).
    dtype: str = "auto"
    dense: list[str] = []  # module patterns kept dense, e.g. ["layers.-1.mlp.*"]
    overrides: list[Override] = []
    then: Literal["rtn", "gptq"] | None = None  # awq: how the scaled weights are quantized
    duo: bool | None = None  # awq: scale x^a / (w^(1-a) + 1e-4) (true) or x^a alone (false)
    clip: bool | None = None  # awq: search a clamp range per group (not q/k)
    grid: int | None = Field(default=None, ge=2, le=100)  # awq: exponents tried in [0, 1)

    _source: str | None = PrivateAttr(default=None)

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        from crbench.dtype import canonical

        return canonical(value)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        known = methods.names(compressing=True)
        if value not in known:
            raise ValueError("Input should be " + ", ".join(repr(n) for n in known))
        return value

    def settings_for(self, override: Override | None) -> Settings:
        base = self.model_dump(include=set(Settings.model_fields))
        if override is not None:
            base.update(override.model_dump(include=override.model_fields_set & set(base)))
            if "pattern" in override.model_fields_set:
                base["sparsity"] = None
            elif "sparsity" in override.model_fields_set:
                base["pattern"] = None
        return Settings(**base)


def parse_pattern(text: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    return (int(match[1]), int(match[2])) if match else None


def matches(pattern: str, names: list[str]) -> bool:
    """`re:...` is a regex searched in the name; anything else a glob matched against the whole
    name or a dotted suffix of it (`layers.-1.mlp.*` matches `model.layers.-1.mlp.up_proj`)."""
    if pattern.startswith("re:"):
        return any(re.search(pattern[3:], name) for name in names)
    return any(fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, "*." + pattern)
               for name in names)


def parse_recipe(data: dict[str, Any], source: str | Path | None = None) -> Recipe:
    """Validate a recipe dict; defaults filled in for the method; errors name `source`."""
    try:
        recipe = Recipe.model_validate(data)
        for place, message in _method_problems(recipe):
            raise InputError(source, message, place)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise InputError(source, first["msg"].removeprefix("Value error, "), field) from None
    recipe._source = str(source) if source is not None else None
    return _with_defaults(recipe)


def load_recipe(path: str | Path) -> Recipe:
    """Read a TOML recipe; a relative `calib` path is taken relative to the recipe's folder."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "recipe file not found") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise InputError(path, "not UTF-8 text", f"line {line}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"not valid TOML: {exc}") from None
    calib = data.get("calib")
    if isinstance(calib, str) and not calib.startswith("hf:") and not Path(calib).is_absolute():
        data["calib"] = str(path.parent / calib)
    return parse_recipe(data, path)


def _method_problems(recipe: Recipe) -> Iterator[tuple[str, str]]:
    """Settings that make no sense for the method: (place, message) pairs."""
    method = methods.get_method(recipe.method)
    not_taken = sorted(methods.specific_fields() - method.fields)
    groups: list[tuple[Settings, str]] = [(recipe, "")]
    groups += [(o, f"overrides.{i}.") for i, o in enumerate(recipe.overrides)]
    for settings, prefix in groups:
        for name in not_taken:
            if name in settings.model_fields_set and getattr(settings, name, None) is not None:
                yield prefix + name, (f"does not apply to method {method.name!r} (only to "
                                      f"{', '.join(methods.takers(name))})")
        if method.kind == "prune" and settings is recipe and settings.target_sparsity() is None:
            yield "sparsity", f"method {method.name!r} needs a sparsity (0.5) or a pattern ('2:4')"
        n_m = settings.n_m()
        implied = 1 - n_m[0] / n_m[1] if n_m else None
        if implied is not None and settings.sparsity is not None \
                and abs(settings.sparsity - implied) > 1e-9:
            yield prefix + "sparsity", f"pattern {settings.pattern} means sparsity {implied:g}"
    if method.name == "awq" and recipe.then != "gptq":  # GPTQ's settings, only if it runs
        for name in ("act_order", "static_groups", *methods.HESSIAN_FIELDS):
            if name in recipe.model_fields_set:
                yield name, "applies to method 'awq' only with then = 'gptq'"
    for name in ("propagate", "dtype"):
        if not method.calibrated and name in recipe.model_fields_set:
            yield name, f"method {method.name!r} is not calibrated layer by layer"
    if method.calibrated and not recipe.calib:
        yield "calib", f"method {method.name!r} needs calibration text (a .txt or .jsonl file)"


def _with_defaults(recipe: Recipe) -> Recipe:
    """Quantization settings not given get their defaults. They stay *unset* (not in
    `model_fields_set`), so `model_dump(exclude_unset=True)` is what the user wrote."""
    if methods.get_method(recipe.method).kind != "quant":
        return recipe
    defaults = {**QUANT_DEFAULTS, **methods.get_method(recipe.method).defaults}
    fill = {k: v for k, v in defaults.items() if getattr(recipe, k) is None}
    written = set(recipe.model_fields_set)
    filled = recipe.model_copy(update=fill)
    filled.__pydantic_fields_set__ = written
    filled._source = recipe._source
    return filled
