"""importance.json: the typed record `crbench importance` writes and `crbench protect` and the
report read. Read through `read_importance`, so a malformed file is one `InputError` line.

    modules     one row per decoder linear module: its name, layer, kind, weight elements, and
                importance per behaviour (each behaviour's column sums to 1 over the modules;
                "all" is their mean); with a parent model, its importance and the shift
                (parent - this); with validation, the loss increase when it alone is quantized
    validation  the direct check: bits, layers swept, baseline loss, Spearman's rho between
                importance and loss increase, per behaviour and "all"
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crbench.errors import InputError

FORMAT: Literal["crbench-importance"] = "crbench-importance"
IMPORTANCE_FILE = "importance.json"


def _finite(values: dict[str, float] | None, nonnegative: bool) -> dict[str, float] | None:
    for key, value in (values or {}).items():
        if not math.isfinite(value) or (nonnegative and value < 0):
            raise ValueError(f"{key}: {value} is not a finite"
                             + (" non-negative" if nonnegative else "") + " number")
    return values


class ModuleRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    layer: int = Field(ge=0)
    kind: str
    params: int = Field(gt=0)  # weight elements
    importance: dict[str, float]
    parent_importance: dict[str, float] | None = None
    shift: dict[str, float] | None = None  # parent - this
    loss_increase: dict[str, float] | None = None  # validation, when this module was swept

    @field_validator("importance", "parent_importance")
    @classmethod
    def _shares(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return _finite(value, nonnegative=True)

    @field_validator("shift", "loss_increase")
    @classmethod
    def _numbers(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return _finite(value, nonnegative=False)


class Validation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = "rtn"
    bits: int
    group_size: int
    layers: list[int]
    baseline_loss: dict[str, float]  # mean next-token loss, per behaviour and "all"
    spearman: dict[str, float | None]  # rho between importance and loss increase
    p_value: dict[str, float | None]
    modules: int
    seconds: float


class ImportanceResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["crbench-importance"] = FORMAT
    version: Literal[1] = 1
    model: str  # what was loaded
    variant: str | None = None  # the run's variant whose traces (and model) were used
    parent: str | None = None  # the model the shift is measured against
    labeller: str
    traces: int = Field(ge=0)
    trace_tokens: int = Field(ge=0)
    max_tokens: int
    behaviours: list[str]  # behaviours with positions, in taxonomy order
    positions: dict[str, int]  # behaviour -> positions counted (lead included)
    modules: list[ModuleRow] = Field(min_length=1)
    validation: Validation | None = None
    seconds: dict[str, float] = {}

    @field_validator("modules")
    @classmethod
    def _unique(cls, rows: list[ModuleRow]) -> list[ModuleRow]:
        names = [r.name for r in rows]
        if len(set(names)) != len(names):
            raise ValueError("module names repeat")
        return rows

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.modules)

    def column(self, key: str) -> dict[str, float]:
        return {r.name: r.importance.get(key, 0.0) for r in self.modules}


def read_importance(path: str | Path) -> ImportanceResult:
    """An importance.json (or a folder holding one); anything wrong is one InputError line."""
    path = Path(path)
    if path.is_dir():
        path = path / IMPORTANCE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "importance file not found") from None
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON: {exc.msg}", f"line {exc.lineno}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(path, f"not an importance file (no \"format\": \"{FORMAT}\")")
    try:
        return ImportanceResult.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(part) for part in first["loc"]) or None
        raise InputError(path, first["msg"].removeprefix("Value error, "), place) from None


def write_importance(result: ImportanceResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(result.model_dump_json(indent=1) + "\n", encoding="utf-8")
    partial.replace(path)
