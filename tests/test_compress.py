"""The algorithms and the layer-wise pipeline on the real demo model (SmolLM2-135M-Instruct).

Fast tests compress only a layer or two (the rest kept dense by a recipe pattern) with a small
calibration; the perplexity ordering in test_compress_quality.py compresses the whole model.
"""

from __future__ import annotations

import pytest
import torch

from crbench.compress.gptq import gptq
from crbench.compress.hessian import MAX_DAMP, inverse_cholesky
from crbench.compress.magnitude import magnitude
from crbench.compress.pipeline import compress_loaded
from crbench.compress.recipe import parse_recipe
from crbench.compress.rtn import rtn
from crbench.compress.sparsegpt import sparsegpt
from crbench.errors import InputError
from crbench.models import load_causal_lm

ALL_BUT_FIRST_TWO = r"re:layers\.([2-9]|[12][0-9])\."  # keep layers 2..29 dense: fast tests


@pytest.fixture(scope="module")
def loaded(demo_model):
    return load_causal_lm(demo_model, device="cpu")


@pytest.fixture(scope="module")
def activations(loaded, fixtures):
    """Real inputs of layer 0's q_proj and its weight: (X [tokens, 576], W [576, 576])."""
    model, tokenizer = loaded
    text = (fixtures / "compress_calib.txt").read_text()[:4000]
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :512]
    module = model.model.layers[0].self_attn.q_proj
    seen = []
    handle = module.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return seen[0].reshape(-1, 576).float(), module.weight.detach().clone()


def output_error(w, q, x):
    return ((x @ (w - q).T) ** 2).sum().item() / ((x @ w.T) ** 2).sum().item()


def hessian(x):
    return x.T @ x / x.shape[0]


@pytest.mark.parametrize(("bits", "group_size", "sym", "act_order"),
                         [(4, 64, True, False), (3, 64, False, True), (4, None, True, True)])
def test_gptq_lands_on_the_grid_and_beats_rounding(activations, bits, group_size, sym, act_order):
    x, w = activations
    q, info = gptq(w, hessian(x), bits=bits, group_size=group_size, sym=sym, act_order=act_order)
    assert info["damp"] == 0.01 and info["dead_columns"] == 0
    if not act_order:  # groups are contiguous inputs: at most 2^bits values per row-group
        size = group_size or w.shape[1]
        groups = q.reshape(-1, size)
        assert max(len(torch.unique(g)) for g in groups) <= 2**bits
    else:  # groups follow activation order, so count per row over the whole row
        assert max(len(torch.unique(r)) for r in q) <= 2**bits * (w.shape[1] // (group_size or 576))
    rounded, _ = rtn(w, bits=bits, group_size=group_size, sym=sym)
    assert output_error(w, q, x) < 0.8 * output_error(w, rounded, x)


def test_gptq_static_groups_keep_contiguous_groups_under_act_order(activations):
    x, w = activations
    q, _ = gptq(w, hessian(x), bits=4, group_size=64, sym=True, act_order=True,
                static_groups=True)
    assert max(len(torch.unique(g)) for g in q.reshape(-1, 64)) <= 16
    rounded, _ = rtn(w, bits=4, group_size=64, sym=True)
    assert output_error(w, q, x) < 0.8 * output_error(w, rounded, x)


def test_sparsegpt_exact_sparsity_and_beats_magnitude(activations):
    x, w = activations
    pruned, info = sparsegpt(w, hessian(x), sparsity=0.5)
    assert (pruned == 0).sum().item() == w.numel() // 2
    two_four, _ = sparsegpt(w, hessian(x), sparsity=0.5, pattern=(2, 4))
    assert ((two_four == 0).reshape(576, -1, 4).sum(-1) == 2).all()
    by_magnitude, _ = magnitude(w, sparsity=0.5)
    assert output_error(w, pruned, x) < 0.7 * output_error(w, by_magnitude, x)
    assert output_error(w, pruned, x) < output_error(w, two_four, x)


def test_hessian_not_positive_definite_raises_damping_then_fails(activations):
    x, w = activations
    h = hessian(x)
    mean = torch.diag(h).mean()
    lowest = torch.linalg.eigvalsh(h)[0]
    # Shift the spectrum so that 1% damping leaves a negative eigenvalue but 10% does not.
    bad = h - (lowest + 0.05 * mean) * torch.eye(576)
    assert torch.linalg.cholesky_ex(bad + 0.01 * torch.diag(bad).mean() * torch.eye(576))[1] != 0
    q, info = gptq(w, bad, bits=4, group_size=64, sym=True)
    assert info["damp"] == pytest.approx(0.1)
    assert torch.isfinite(q).all()

    hopeless = torch.eye(576)  # unit diagonal, but an eigenvalue of -99: no damping helps
    hopeless[0, 1] = hopeless[1, 0] = 100.0
    with pytest.raises(InputError, match="not positive definite") as caught:
        inverse_cholesky(hopeless, 0.01, "model.layers.0.self_attn.q_proj")
    assert caught.value.place == "model.layers.0.self_attn.q_proj"
    assert f"damping {MAX_DAMP:g}" in str(caught.value)


def fast_recipe(**fields):
    base = {"calib": str(fields.pop("calib")), "calib_samples": 4, "seqlen": 64,
            "dense": [ALL_BUT_FIRST_TWO]}
    return parse_recipe({**base, **fields})


def test_manifest_records_dense_modules_damping_and_errors(demo_model, fixtures):
    model, tokenizer = load_causal_lm(demo_model, device="cpu")
    recipe = fast_recipe(method="gptq", bits=4, group_size=64,
                         calib=fixtures / "compress_calib.txt")
    result = compress_loaded(model, tokenizer, recipe)
    modules = {m["module"]: m for m in result["modules"]}
    assert len(modules) == 30 * 7
    done = [m for m in modules.values() if not m["kept_dense"]]
    assert len(done) == 14 and {m["layer"] for m in done} == {0, 1}
    for record in done:
        assert record["damp"] == 0.01 and record["bits"] == 4 and record["group_size"] == 64
        assert 0 < record["output_error"] < 0.1 and 0 < record["weight_error"] < 0.1
    assert modules["model.layers.5.mlp.up_proj"]["by"] == f"dense: {ALL_BUT_FIRST_TWO!r}"
    assert [r["layer"] for r in result["layers"]] == list(range(30))
    assert 0 < result["layers"][1]["output_error"] < 0.1
    assert "output_error" not in result["layers"][2]  # nothing compressed there
    assert result["calibration"]["samples"] == 4 and result["calibration"]["seqlen"] == 64
    assert len(result["calibration"]["sha256"]) == 64


def test_same_recipe_and_seed_give_identical_weights(demo_model, fixtures):
    def weights(seed: int) -> dict[str, torch.Tensor]:
        model, tokenizer = load_causal_lm(demo_model, device="cpu")
        recipe = fast_recipe(method="gptq", bits=3, group_size=64, act_order=True, seed=seed,
                             calib=fixtures / "compress_calib.txt")
        compress_loaded(model, tokenizer, recipe)
        return {k: v.clone() for k, v in model.state_dict().items() if "layers.1." in k}

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if "proj" in k)


def test_dead_input_columns_are_zeroed_and_counted(demo_model, fixtures):
    model, tokenizer = load_causal_lm(demo_model, device="cpu")
    with torch.no_grad():  # these 8 inputs of layer 0's MLP are now zero for every token
        model.model.layers[0].post_attention_layernorm.weight[:8] = 0
    recipe = fast_recipe(method="sparsegpt", sparsity=0.5, calib=fixtures / "compress_calib.txt")
    result = compress_loaded(model, tokenizer, recipe)
    modules = {m["module"]: m for m in result["modules"]}
    for name in ("gate_proj", "up_proj"):
        assert modules[f"model.layers.0.mlp.{name}"]["dead_columns"] == 8
        weight = getattr(model.model.layers[0].mlp, name).weight
        assert (weight[:, :8] == 0).all()
        assert modules[f"model.layers.0.mlp.{name}"]["sparsity"] == 0.5
    assert modules["model.layers.0.mlp.down_proj"]["dead_columns"] == 0


def test_nan_activations_raise_naming_the_layer(demo_model, fixtures):
    model, tokenizer = load_causal_lm(demo_model, device="cpu")
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 5] = float("nan")
    recipe = fast_recipe(method="wanda", sparsity=0.5, calib=fixtures / "compress_calib.txt")
    with pytest.raises(InputError, match="NaN or Inf") as caught:
        compress_loaded(model, tokenizer, recipe)
    assert caught.value.place == "model.layers.1.mlp.down_proj"


def test_group_size_must_divide_every_target(demo_model):
    model, tokenizer = load_causal_lm(demo_model, device="cpu")
    with pytest.raises(InputError, match="does not divide the 576 inputs") as caught:
        compress_loaded(model, tokenizer, parse_recipe({"method": "rtn", "group_size": 128},
                                                       "recipe.toml"))
    assert caught.value.path == "recipe.toml" and caught.value.place == "group_size"
    assert "64 divides it" in str(caught.value)


def test_stacking_layers_that_share_a_hessian_changes_nothing(loaded, activations):
    """The pipeline compresses q/k/v (same input) as one stacked matrix: rows are independent
    given H, so the result equals compressing each alone (up to float summation order)."""
    model, _ = loaded
    x, w_q = activations
    w_k = model.model.layers[0].self_attn.k_proj.weight.detach()
    h = hessian(x)
    stacked, _ = gptq(torch.cat([w_q, w_k]), h, bits=4, group_size=64, sym=True)
    alone = torch.cat([gptq(w, h, bits=4, group_size=64, sym=True)[0] for w in (w_q, w_k)])
    assert (stacked == alone).float().mean().item() > 0.999
    pruned, _ = sparsegpt(torch.cat([w_q, w_k]), h, sparsity=0.5, segments=[576, 192])
    assert (pruned[:576] == 0).sum().item() == 576 * 576 // 2
    assert (pruned[576:] == 0).sum().item() == 192 * 576 // 2


def test_propagate_dense_calibrates_each_layer_on_the_uncompressed_outputs(demo_model, fixtures):
    """With propagate = "dense" layer 1 sees what the dense model gives it: its GPTQ weights equal
    those of a run that compresses layer 1 alone (layer 0 kept dense); by default it sees layer
    0's compressed outputs and comes out different."""
    calib = fixtures / "compress_calib.txt"

    def layer_1(**fields) -> tuple[dict[str, torch.Tensor], dict]:
        model, tokenizer = load_causal_lm(demo_model, device="cpu")
        result = compress_loaded(model, tokenizer, fast_recipe(
            method="gptq", bits=3, group_size=64, calib=calib, **fields))
        return ({k: v.clone() for k, v in model.state_dict().items() if "layers.1." in k},
                result)

    dense_inputs, result = layer_1(propagate="dense")
    alone, _ = layer_1(dense=["re:layers\\.(0|[2-9]|[1-2][0-9])\\."])
    compressed_inputs, _ = layer_1()
    assert all(torch.equal(dense_inputs[k], alone[k]) for k in alone)
    assert any(not torch.equal(dense_inputs[k], compressed_inputs[k]) for k in alone
               if "proj" in k)
    assert "output_error" not in result["layers"][1]  # no second pass to measure it


def test_propagate_is_refused_for_methods_not_calibrated_layer_by_layer():
    with pytest.raises(InputError, match="not calibrated layer by layer") as caught:
        parse_recipe({"method": "rtn", "propagate": "dense"})
    assert caught.value.place == "propagate"


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_calibration_forwards_run_in_the_recipe_dtype_while_weights_and_hessians_stay_fp32(
        demo_model, fixtures, dtype):
    model, tokenizer = load_causal_lm(demo_model, device="cpu")
    layer = model.model.layers[0]
    outputs, hessians = [], []
    handle = layer.self_attn.q_proj.register_forward_hook(
        lambda module, args, out: outputs.append(out.dtype))
    import crbench.compress.pipeline as pipeline

    def spy(recipe, index, entries, stats):
        hessians.append(stats.dtype)
        return compress_group(recipe, index, entries, stats)

    compress_group = pipeline.compress_group
    pipeline.compress_group = spy
    try:
        result = compress_loaded(model, tokenizer, fast_recipe(
            method="sparsegpt", sparsity=0.5, dtype=dtype, calib=fixtures / "compress_calib.txt"))
    finally:
        pipeline.compress_group = compress_group
        handle.remove()
    wanted = torch.bfloat16 if dtype == "bf16" else torch.float32
    assert set(outputs) == {wanted} and len(outputs) == 2 * 4  # passes 1 and 2, 4 windows
    assert result["forward_dtype"] == str(wanted).removeprefix("torch.")
    assert set(hessians) == {torch.float32} and len(hessians) == 2 * 4  # 4 inputs a layer
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert (layer.mlp.down_proj.weight == 0).float().mean().item() == 0.5


def test_a_bad_compression_dtype_is_one_error_naming_the_field():
    with pytest.raises(InputError, match="dtype must be one of") as caught:
        parse_recipe({"method": "sparsegpt", "sparsity": 0.5, "calib": "x.txt",
                      "dtype": "int3"}, "recipe.toml")
    assert caught.value.place == "dtype"
