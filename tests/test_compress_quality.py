"""Whole-model compression of SmolLM2-135M-Instruct: exact sparsity and the perplexity ordering
of the papers, on held-out text that calibration never saw.

Each variant is compressed once per session (16 windows x 256 tokens of calibration) and
measured on 4 windows x 512 tokens of tests/fixtures/compress_heldout.txt. Measured once on
this machine: dense 28.3; SparseGPT 50% 61.0, 2:4 132; Wanda 50% 73.5; magnitude 50% 607;
GPTQ W4 g64 33.2 (36.0 before activation order became the default), RTN W4 g64 40.9; GPTQ W3
g64 83.4 (87.9 without), RTN W3 g64 160 (llm-compressor's figures on Wikipedia text,
/work/shared: 20.1; 37.6, 65.5; 43.6; 346; 26.6, 28.7; 66.1, 144). AWQ (asymmetric grid by
default, 8 x 128 calibration tokens) W3 g64 57.1 against RTN onto the same asymmetric grid 80.1.
The margins below are far inside those gaps.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from crbench.compress.pipeline import compress_loaded
from crbench.compress.recipe import parse_recipe
from crbench.models import load_causal_lm
from crbench.ppl import perplexity_of

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures"
CALIBRATION = {"calib": str(FIXTURES / "compress_calib.txt"), "calib_samples": 16, "seqlen": 256,
               "seed": 0}
# AWQ runs its block 20 times per smoothing group: 8 x 128 tokens keep it to minutes on a CPU
AWQ_CALIBRATION = {**CALIBRATION, "calib_samples": 8, "seqlen": 128}
VARIANTS = {
    "dense": None,
    "magnitude 50%": {"method": "magnitude", "sparsity": 0.5},
    "sparsegpt 50%": {"method": "sparsegpt", "sparsity": 0.5, **CALIBRATION},
    "sparsegpt 2:4": {"method": "sparsegpt", "pattern": "2:4", **CALIBRATION},
    "wanda 50%": {"method": "wanda", "sparsity": 0.5, **CALIBRATION},
    "rtn w4": {"method": "rtn", "bits": 4, "group_size": 64},
    "gptq w4": {"method": "gptq", "bits": 4, "group_size": 64, **CALIBRATION},
    "rtn w3": {"method": "rtn", "bits": 3, "group_size": 64},
    "gptq w3": {"method": "gptq", "bits": 3, "group_size": 64, **CALIBRATION},
    "rtn w3 asym": {"method": "rtn", "bits": 3, "group_size": 64, "sym": False},
    "awq w3": {"method": "awq", "bits": 3, "group_size": 64, **AWQ_CALIBRATION},  # asymmetric
}


@pytest.fixture(scope="session")
def variant(demo_model):
    """variant(name) -> ppl, manifest records and zero masks, compressed once per session."""
    heldout = (FIXTURES / "compress_heldout.txt").read_text()
    done: dict[str, SimpleNamespace] = {}

    def get(name: str) -> SimpleNamespace:
        if name not in done:
            model, tokenizer = load_causal_lm(demo_model, device="cpu")
            recipe = VARIANTS[name]
            result = compress_loaded(model, tokenizer, parse_recipe(recipe)) if recipe else None
            zeros = {n: (m.weight == 0) for n, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and ".layers." in n}
            ppl = perplexity_of(model, tokenizer, heldout, seqlen=512)
            assert ppl["windows"] == 4
            done[name] = SimpleNamespace(ppl=ppl["ppl"], result=result, zeros=zeros)
        return done[name]

    return get


def test_sparsegpt_unstructured_is_exactly_half_zero_in_every_module(variant):
    pruned = variant("sparsegpt 50%")
    assert len(pruned.zeros) == 210
    for name, zeros in pruned.zeros.items():
        assert zeros.sum().item() == zeros.numel() // 2, name
    assert all(r["sparsity"] == 0.5 and r["target_sparsity"] == 0.5
               for r in pruned.result["modules"])


def test_sparsegpt_2_4_keeps_two_of_every_four_inputs(variant):
    pruned = variant("sparsegpt 2:4")
    for name, zeros in pruned.zeros.items():
        per_group = zeros.reshape(zeros.shape[0], -1, 4).sum(dim=-1)
        assert (per_group >= 2).all(), name  # at most 2 non-zeros (some weights were 0 already)
        assert 0.5 <= zeros.float().mean().item() < 0.501, name
    assert all(r["pattern"] == "2:4" for r in pruned.result["modules"])


def test_wanda_and_magnitude_hit_the_sparsity(variant):
    for name in ("wanda 50%", "magnitude 50%"):
        for module, zeros in variant(name).zeros.items():
            assert zeros.float().mean().item() == 0.5, (name, module)


def test_calibrated_pruning_far_below_magnitude(variant):
    magnitude = variant("magnitude 50%").ppl
    sparsegpt, wanda = variant("sparsegpt 50%").ppl, variant("wanda 50%").ppl
    assert sparsegpt < 0.3 * magnitude
    assert wanda < 0.3 * magnitude
    assert sparsegpt < wanda  # SparseGPT's weight updates beat Wanda's mask alone
    assert sparsegpt < variant("sparsegpt 2:4").ppl  # 2:4 is a harder constraint at 50%


def test_gptq_below_rounding(variant):
    assert variant("gptq w4").ppl < 0.95 * variant("rtn w4").ppl
    assert variant("gptq w3").ppl < 0.75 * variant("rtn w3").ppl
    assert variant("gptq w4").ppl < variant("gptq w3").ppl


def test_awq_below_rounding_on_the_same_grid(variant):
    # AWQ's default grid is asymmetric: rounding onto that grid is the fair baseline (and a much
    # stronger one at 3 bits than the symmetric grid)
    assert variant("awq w3").ppl < 0.85 * variant("rtn w3 asym").ppl
    assert variant("rtn w3 asym").ppl < variant("rtn w3").ppl


def test_dense_is_lowest(variant):
    dense = variant("dense").ppl
    assert 15 < dense < 45
    for name in VARIANTS:
        if name != "dense":
            assert dense < 0.95 * variant(name).ppl, name
