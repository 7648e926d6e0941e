"""dtype "auto": names, the measured CPU probe, its per-machine cache, and `crbench env`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crbench import dtype as dtypes

CRBENCH = Path(sys.executable).parent / "crbench"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CRBENCH_CACHE", str(tmp_path))
    return tmp_path / dtypes.PROBE_FILE


def test_names_and_explicit_choices():
    assert dtypes.canonical("bf16") == dtypes.canonical("torch.bfloat16") == "bfloat16"
    assert dtypes.canonical("FP32") == "float32" and dtypes.canonical(None) == "auto"
    assert dtypes.canonical(torch.float16) == "float16"
    assert dtypes.resolve_dtype("fp16", "cpu") is torch.float16
    assert dtypes.resolve_dtype("fp32", "cuda") is torch.float32  # explicit always wins
    with pytest.raises(ValueError, match="auto, bf16, fp16, fp32"):
        dtypes.canonical("int8")


def test_probe_measures_both_dtypes_and_is_cached_per_machine(cache):
    probe = dtypes.cpu_probe((64, 128))
    assert set(probe.fp32_gflops) == set(probe.bf16_gflops) == set(dtypes.PROBE_ROWS)
    assert all(rate > 0 for rate in [*probe.fp32_gflops.values(), *probe.bf16_gflops.values()])
    assert probe.choice in ("bfloat16", "float32")
    stored = json.loads(cache.read_text())
    assert list(stored) == [dtypes.machine_key((64, 128))]
    assert torch.__version__ in probe.machine and "64x128" in probe.machine
    # the cached decision is what auto resolves to, without measuring again
    key = dtypes.machine_key((64, 128))
    for choice, expected in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        stored[key]["choice"] = choice
        cache.write_text(json.dumps(stored))
        assert dtypes.resolve_dtype("auto", "cpu", (64, 128)) is expected
    # refresh measures again and overwrites the entry
    assert dtypes.cpu_probe((64, 128), refresh=True).machine == key
    assert json.loads(cache.read_text())[key]["choice"] in ("bfloat16", "float32")


def test_choice_rule_needs_a_margin():
    def choice(fp32: tuple[float, float], bf16: tuple[float, float]) -> str:
        return dtypes.decide({16: fp32[0], 256: fp32[1]}, {16: bf16[0], 256: bf16[1]})

    assert choice((10, 10), (25, 30)) == "bfloat16"  # AVX512-BF16-like: 2.5-3x
    assert choice((10, 10), (11, 11)) == "float32"  # within noise: stay exact
    assert choice((10, 10), (3, 4)) == "float32"  # emulated bf16
    assert choice((10, 10), (40, 5)) == "bfloat16"  # 4x and 0.5x: 1.41x on the mean


def test_probe_times_packed_bf16_where_onednn_has_it(cache):
    from crbench.engines import hf_packed

    probe = dtypes.cpu_probe((64, 128))
    if hf_packed.available():
        assert set(probe.packed_gflops) == set(dtypes.PROBE_ROWS)
        assert all(rate > 0 for rate in probe.packed_gflops.values())
    else:
        assert probe.packed_gflops == {} and not probe.packed_linear
    # an entry cached before packed rates existed is measured again, not misread
    key = dtypes.machine_key((64, 128))
    stored = json.loads(cache.read_text())
    del stored[key]["packed_gflops"]
    cache.write_text(json.dumps(stored))
    assert set(dtypes.cpu_probe((64, 128)).packed_gflops) == set(probe.packed_gflops)
    assert "packed_gflops" in json.loads(cache.read_text())[key]


def test_packed_rule_needs_a_margin_over_plain_bf16():
    def packed(bf16: tuple[float, float], packed: tuple[float, float]) -> bool:
        return dtypes.Probe("m", (1, 1), 2, {16: 1.0, 256: 1.0}, {16: bf16[0], 256: bf16[1]},
                            "bfloat16", {16: packed[0], 256: packed[1]}).packed_linear

    assert packed((450, 2100), (900, 2700))  # AMX: 2x and 1.3x
    assert not packed((450, 2100), (460, 2150))  # within noise
    assert not packed((450, 2100), (300, 2000))
    assert not dtypes.Probe("m", (1, 1), 2, {16: 1.0}, {16: 1.0}, "float32", {}).packed_linear


def test_a_damaged_cache_is_measured_again(cache):
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{not json")
    dtypes.cpu_probe((32, 64))
    key = dtypes.machine_key((32, 64))
    assert key in json.loads(cache.read_text())
    cache.write_text(json.dumps({key: {"machine": "an older format"}}))
    assert dtypes.cpu_probe((32, 64)).fp32_gflops  # measured again
    assert "fp32_gflops" in json.loads(cache.read_text())[key]


def test_model_shape_from_a_folder(demo_model, tmp_path):
    assert dtypes.shape_of_folder(demo_model) == (576, 1536)
    assert dtypes.shape_of_folder(tmp_path) is None


def test_crbench_env_prints_the_figures_and_the_decision(tmp_path):
    env = {**os.environ, "CRBENCH_CACHE": str(tmp_path)}
    out = subprocess.run([str(CRBENCH), "env"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "dtype auto on this CPU:" in out.stdout and "GFLOP/s" in out.stdout
    assert f"torch {torch.__version__}" in out.stdout
    decision = json.loads((tmp_path / dtypes.PROBE_FILE).read_text())
    (entry,) = decision.values()
    assert f"dtype auto on this CPU: {entry['choice']}" in out.stdout
