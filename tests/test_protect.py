"""`crbench protect`: budgeted dense recipes from hand-built importance tables, and bad
importance files (one InputError line)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from crbench.compress.recipe import load_recipe
from crbench.errors import InputError
from crbench.importance_io import ImportanceResult, ModuleRow, read_importance
from crbench.protect import (
    effective_bits,
    last_mlp,
    parse_budget,
    protect,
    recipe_toml,
)

Row = tuple[str, int, str, int, float]  # name, layer, kind, params, importance ("all")


def table(rows: list[Row]) -> ImportanceResult:
    return ImportanceResult(
        model="m", variant="dense", labeller="rules", traces=1, trace_tokens=10, max_tokens=64,
        behaviours=["backtracking"], positions={"backtracking": 3},
        modules=[ModuleRow(name=n, layer=layer, kind=k, params=p,
                           importance={"backtracking": imp, "all": imp})
                 for n, layer, k, p, imp in rows])


# Densities (importance per weight): b 2e-3 > c 6.7e-4 > a 5e-4 > d 1.7e-4 > e 0.
HAND = table([
    ("model.layers.0.mlp.up_proj", 0, "up_proj", 1000, 0.5),  # a
    ("model.layers.0.self_attn.k_proj", 0, "k_proj", 100, 0.2),  # b
    ("model.layers.1.self_attn.q_proj", 1, "q_proj", 300, 0.2),  # c
    ("model.layers.1.mlp.down_proj", 1, "down_proj", 600, 0.1),  # d
    ("model.layers.1.mlp.gate_proj", 1, "gate_proj", 50, 0.0),  # e
])
A, B, C, D, E = (r.name for r in HAND.modules)


@pytest.mark.parametrize(("kept_at_most", "chosen"), [
    (410, [B, C]),  # 20% of 2050 = 410: b and c fit, a does not
    (400, [B, C]),  # exactly at the limit: kept
    (399, [B]),  # one weight short: c no longer fits, and nothing after it does
    (1100, [B, C, D]),  # a is skipped (1400 > 1100), d still fits after it
    (2050 - 1, [B, C, A, D]),  # all but e (importance 0: never chosen, though it fits)
    (0, []),
])
def test_picks_by_importance_per_weight_within_the_budget(kept_at_most: int,
                                                          chosen: list[str]) -> None:
    plan = protect(HAND, Fraction(kept_at_most, 2050))
    assert plan.total_params == 2050
    assert plan.limit == kept_at_most
    assert list(plan.dense) == chosen
    assert plan.kept_params == sum(r.params for r in HAND.modules if r.name in chosen)
    assert plan.kept_params <= kept_at_most


def test_budget_is_counted_exactly_on_random_tables() -> None:
    rng = random.Random(7)
    for _ in range(200):
        rows = [(f"model.layers.{i}.mlp.up_proj", i, "up_proj", rng.randint(1, 10**7),
                 rng.choice([0.0, rng.random()])) for i in range(rng.randint(1, 40))]
        result = table(rows)
        budget = Fraction(rng.randint(0, 999), 1000)
        plan = protect(result, budget)
        total = sum(r[3] for r in rows)
        assert plan.limit == budget.numerator * total // budget.denominator
        assert plan.kept_params == sum(r.params for r in result.modules if r.name in plan.dense)
        assert plan.kept_params <= plan.limit
        # Greedy with skips: no positive-importance module left out would still fit.
        room = plan.limit - plan.kept_params
        assert not [r for r in result.modules if r.name not in plan.dense
                    and r.importance["all"] > 0 and r.params <= room]
        by_name = {r.name: r for r in result.modules}
        densities = [by_name[n].importance["all"] / by_name[n].params for n in plan.dense]
        assert densities == sorted(densities, reverse=True)


def test_a_behaviour_column_chooses_when_asked() -> None:
    assert protect(HAND, Fraction(1, 5), "backtracking").dense == (B, C)
    with pytest.raises(InputError, match="no column 'deduction'"):
        protect(HAND, Fraction(1, 5), "deduction")


def test_budgets_parse_exactly() -> None:
    assert parse_budget("2%") == Fraction(1, 50) == parse_budget("0.02")
    assert parse_budget(" 2.5 % ") == Fraction(1, 40)
    assert parse_budget("0") == 0
    assert int(parse_budget("2%") * 106_168_320) == 2_123_366  # 2% of SmolLM2's decoder
    for bad in ("abc", "100%", "150%", "-1%", "1", "", "%"):
        with pytest.raises(InputError, match="--budget"):
            parse_budget(bad)


def test_keep_last_mlp_share_and_effective_bits() -> None:
    last = last_mlp(HAND)
    assert [r.name for r in last] == [D, E]  # layer 1's MLP modules
    assert effective_bits(3, 0.0) == 3
    assert effective_bits(3, 0.025) == pytest.approx(3.325)
    assert effective_bits(4, 1.0) == 16


def test_recipe_reads_back_as_a_recipe(tmp_path: Path) -> None:
    plan = protect(HAND, Fraction(1, 5))
    path = tmp_path / "protect.toml"
    path.write_text(recipe_toml(plan, method="rtn", bits=3, group_size=64), encoding="utf-8")
    recipe = load_recipe(path)
    assert (recipe.method, recipe.bits, recipe.group_size) == ("rtn", 3, 64)
    assert recipe.dense == [B, C]
    with pytest.raises(InputError, match="calib"):
        recipe_toml(plan, method="gptq", bits=3)  # GPTQ needs calibration text: said at once


# --- bad importance files -----------------------------------------------------------------


def good() -> dict[str, object]:
    return json.loads(HAND.model_dump_json())


def with_module(**change: object) -> dict[str, object]:
    data = good()
    modules = data["modules"]
    assert isinstance(modules, list)
    modules[0] = {**modules[0], **change}
    return data


def without_params() -> dict[str, object]:
    data = good()
    modules = data["modules"]
    assert isinstance(modules, list)
    del modules[0]["params"]
    return data


BAD: list[tuple[str, bytes, str]] = [
    ("not-json", b"{modules: 1", "not valid JSON"),
    ("latin1", "é".encode("latin-1") + b"{}", "not UTF-8"),
    ("a-list", b"[]", "not an importance file"),
    ("other-format", json.dumps({**good(), "format": "x"}).encode(), "not an importance file"),
    ("no-modules", json.dumps({**good(), "modules": []}).encode(), "modules"),
    ("negative", json.dumps(with_module(importance={"all": -0.1})).encode(), "not a finite"),
    ("nan", json.dumps(with_module(importance={"all": float("nan")})).encode(), "not a finite"),
    ("zero-params", json.dumps(with_module(params=0)).encode(), "modules.0.params"),
    ("no-params", json.dumps(without_params()).encode(), "modules.0.params"),
    ("repeated", json.dumps(with_module(name=B)).encode(), "repeat"),
    ("unknown-field", json.dumps({**good(), "extra": 1}).encode(), "extra"),
    ("version", json.dumps({**good(), "version": 9}).encode(), "version"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_importance_files_are_one_input_error(tmp_path: Path, name: str, content: bytes,
                                                  message: str) -> None:
    path = tmp_path / f"{name}.json"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        read_importance(path)
    line = str(caught.value)
    assert message in line and str(path) in line and "\n" not in line
    with pytest.raises(InputError, match="not found"):
        read_importance(tmp_path / "missing.json")


def crbench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "crbench.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_cli_writes_the_recipe_and_refuses_bad_input(tmp_path: Path) -> None:
    source = tmp_path / "importance.json"
    source.write_text(HAND.model_dump_json(), encoding="utf-8")
    out = tmp_path / "protect.toml"
    done = crbench("protect", str(source), "--budget", "20%", "--out", str(out), "--bits", "3")
    assert done.returncode == 0, done.stderr
    assert load_recipe(out).dense == [B, C]
    assert "2 modules, 400 of 2,050 weights" in done.stdout
    assert "keep-last-MLP (the paper's choice): 2 modules, 650 weights" in done.stdout
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"[]")
    for args in ([str(bad), "--budget", "2%"], [str(source), "--budget", "150%"]):
        failed = crbench("protect", *args, "--out", str(tmp_path / "no.toml"))
        assert failed.returncode == 2
        assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr
        assert not (tmp_path / "no.toml").exists()
