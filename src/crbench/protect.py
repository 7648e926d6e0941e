"""`--protect 2%`: turn an importance table into a compression recipe that keeps the most
important modules in 16-bit, under a budget.

    budget   a share of the decoder's linear weights ("2%", "0.02"), counted exactly: at most
             floor(budget x total weight elements) elements are kept dense (fractions, no
             floating point)
    choice   by importance per weight element (importance / params), highest first; a module
             that would overflow the budget is skipped and the next ones are still tried, so
             small important modules fill what large ones leave; modules of zero importance
             are never chosen
    compare  the paper's own choice, the last layer's MLP kept dense, has its share too: at
             equal effective bits (bits x (1 - share) + 16 x share, group scales aside) the two
             recipes can be compared
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from crbench.errors import InputError
from crbench.importance import ALL
from crbench.importance_io import ImportanceResult, ModuleRow

MLP_KINDS = ("gate_proj", "up_proj", "down_proj")
DENSE_BITS = 16


def parse_budget(text: str) -> Fraction:
    """"2%" -> 1/50, "0.02" -> 1/50; a share in [0, 1)."""
    raw = text.strip()
    try:
        value = Fraction(raw[:-1].strip()) / 100 if raw.endswith("%") else Fraction(raw)
    except (ValueError, ZeroDivisionError):
        raise InputError(None, f"a share of the weights such as 2% or 0.02 (got {text!r})",
                         "--budget") from None
    if not 0 <= value < 1:
        raise InputError(None, f"must be at least 0 and below 100% (got {text!r})", "--budget")
    return value


@dataclass(frozen=True)
class ProtectPlan:
    budget: Fraction
    key: str  # which importance column chose
    total_params: int  # every decoder linear weight element
    limit: int  # floor(budget x total)
    dense: tuple[str, ...]  # modules kept in 16-bit, in the order chosen
    kept_params: int

    @property
    def share(self) -> float:
        return self.kept_params / self.total_params


def per_parameter(row: ModuleRow, key: str) -> float:
    return row.importance.get(key, 0.0) / row.params


def protect(result: ImportanceResult, budget: Fraction, key: str = ALL) -> ProtectPlan:
    """The modules to keep dense (see the module docstring)."""
    if key != ALL and key not in result.behaviours:
        raise InputError(None, f"the importance file has no column {key!r} (it has "
                               f"{', '.join([*result.behaviours, ALL])})", "--by")
    total = result.total_params
    limit = int(budget * total)  # floor: Fraction x int is exact
    order = sorted(result.modules, key=lambda r: (-per_parameter(r, key), r.name))
    kept: list[str] = []
    used = 0
    for row in order:
        if row.importance.get(key, 0.0) > 0 and used + row.params <= limit:
            kept.append(row.name)
            used += row.params
    return ProtectPlan(budget, key, total, limit, tuple(kept), used)


def last_mlp(result: ImportanceResult) -> list[ModuleRow]:
    """The paper's choice: the last decoder layer's MLP modules."""
    last = max(r.layer for r in result.modules)
    return [r for r in result.modules if r.layer == last and r.kind in MLP_KINDS]


def effective_bits(bits: float, share: float) -> float:
    """Bits per decoder weight with `share` of them kept at 16 bits (group scales aside)."""
    return bits * (1 - share) + DENSE_BITS * share


def comparison_lines(result: ImportanceResult, plan: ProtectPlan, bits: int) -> list[str]:
    last = last_mlp(result)
    last_share = sum(r.params for r in last) / result.total_params
    return [
        f"protect {float(plan.budget):.2%} by {plan.key!r}: {len(plan.dense)} modules, "
        f"{plan.kept_params:,} of {plan.total_params:,} weights ({plan.share:.3%}), "
        f"{effective_bits(bits, plan.share):.3f} effective bits at W{bits}",
        f"keep-last-MLP (the paper's choice): {len(last)} modules, "
        f"{sum(r.params for r in last):,} weights ({last_share:.3%}), "
        f"{effective_bits(bits, last_share):.3f} effective bits at W{bits}",
    ]


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)  # a JSON string is a TOML basic string


def recipe_toml(plan: ProtectPlan, *, method: str, bits: int, group_size: int | None = None,
                calib: str | None = None, source: str = "") -> str:
    """A recipe for `crbench compress --recipe` (checked by parsing it back)."""
    from crbench.compress.recipe import parse_recipe

    lines = [f"# protect {float(plan.budget):.4%} of {plan.total_params} decoder weights by "
             f"importance per weight ({plan.key}){' from ' + source if source else ''}",
             f"# kept dense: {plan.kept_params} weights ({plan.share:.4%})",
             f"method = {_toml_string(method)}", f"bits = {bits}"]
    if group_size is not None:
        lines.append(f"group_size = {group_size}")
    if calib is not None:
        lines.append(f"calib = {_toml_string(calib)}")
    lines.append("dense = [" + "".join(f"\n  {_toml_string(n)}," for n in plan.dense)
                 + ("\n" if plan.dense else "") + "]")
    text = "\n".join(lines) + "\n"
    data: dict[str, object] = {"method": method, "bits": bits, "dense": list(plan.dense)}
    if group_size is not None:
        data["group_size"] = group_size
    if calib is not None:
        data["calib"] = calib
    parse_recipe(data)  # a method or setting it cannot take: one InputError now
    return text


def write_recipe(text: str, out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(out, f"cannot write: {exc.strerror or exc}") from None
