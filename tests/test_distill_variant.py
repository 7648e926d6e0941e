"""A distilled variant in a spec: one registry line; checked at load, built (trained, cached)
when the run needs it, stored beside the others with its lineage (parent, teacher)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crbench.store import read_run

SPEC = """
[models.base]
source = "demo"
batch_size = 8

[variants.student]
model = "base"
method = "distill"
synthetic = "synth_arith:1"
items_per_level = 8
max_steps = 2
batch_size = 4
teacher = "solver traces"
{extra}

[[tasks]]
task = "synth_arith"
limit = 2
style = "chat"

[sampling]
max_new_tokens = 16
"""


def crbench(*args: str | Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "CRBENCH_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "crbench.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=1200)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache of its own for the distilled model, sharing the converted demo model."""
    from crbench.models import cache_dir

    own = tmp_path / "cache"
    own.mkdir()
    (own / "models").symlink_to(cache_dir() / "models")
    return own


def test_a_distilled_variant_runs_beside_its_parent(tmp_path: Path, cache: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(extra=""))
    dry = crbench("run", spec, "--dry-run", cache=cache)
    assert dry.returncode == 0, dry.stderr
    assert "distill student:" in dry.stdout and "will be built" in dry.stdout
    result = crbench("run", spec, "--out", tmp_path / "run", cache=cache)
    assert result.returncode == 0, result.stderr
    run = read_run(tmp_path / "run")
    student = run.variants["student"]
    assert (student.method, student.parent, student.teacher) == ("distill", "base",
                                                                  "solver traces")
    assert Path(student.model_path or "").is_dir()
    assert sorted({row.generation.variant for row in run.rows}) == ["base", "student"]
    again = crbench("run", spec, "--dry-run", "--out", tmp_path / "run", cache=cache)
    assert "0 to run" in again.stdout


def test_a_bad_distill_recipe_is_refused_at_load(tmp_path: Path, cache: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(extra='traces = "pairs.jsonl"'))  # two data sources
    result = crbench("run", spec, "--dry-run", cache=cache)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "variants.student" in result.stderr
    assert "exactly one data source" in result.stderr
