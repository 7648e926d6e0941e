"""AWQ on the real demo model (SmolLM2-135M-Instruct): the folded scales change nothing the
unquantized model computes, the search lowers the quantized layer's error, AWQ composes with
GPTQ, and bad AWQ recipes are one error line. (Whole-model perplexity against rounding:
tests/test_compress_quality.py.)"""

from __future__ import annotations

import copy

import pytest
import torch
from test_compress_cli import crbench, one_line_error
from transformers import LlamaConfig, LlamaForCausalLM

from crbench.compress import awq
from crbench.compress.calibration import calibration_windows, load_source
from crbench.compress.layerwise import capture_first_layer_inputs, decoder_layers, run_layer
from crbench.compress.pipeline import compress_loaded
from crbench.compress.recipe import parse_recipe
from crbench.models import load_causal_lm

W3 = awq.WeightGrid(bits=3, group_size=64, sym=False)


def heldout_ids(tokenizer, fixtures, tokens: int = 256) -> torch.Tensor:
    text = (fixtures / "compress_heldout.txt").read_text()
    return tokenizer(text, return_tensors="pt").input_ids[:, :tokens]


def group_inputs(model: torch.nn.Module, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Per decoder layer, the input of each smoothing point (q, o, gate, down projections)."""
    _, layers = decoder_layers(model)
    seen: list[dict[str, torch.Tensor]] = [{} for _ in layers]
    handles = [layer.get_submodule(point).register_forward_hook(
                   lambda mod, args, out, i=i, point=point: seen[i].__setitem__(point, args[0]))
               for i, layer in enumerate(layers) for point in set(awq.INPUT_OF.values())]
    with torch.no_grad():
        model(input_ids=ids)
    for handle in handles:
        handle.remove()
    return seen


def fold_every_layer(model: torch.nn.Module, ids: torch.Tensor, alpha: float) -> list[float]:
    """Fold AWQ's scale formula at a fixed alpha, from real statistics, into every group of
    every layer; returns each scale vector's max / min."""
    inputs = group_inputs(model, ids)
    _, layers = decoder_layers(model)
    spreads = []
    for layer, seen in zip(layers, inputs, strict=True):
        for group in awq.smoothing_groups(layer, {}):
            x = seen[awq.INPUT_OF[next(iter(group.linears))]]
            x_mean = x.abs().reshape(-1, x.shape[-1]).mean(dim=0)
            grids = dict.fromkeys(group.linears, W3)
            s = awq.candidate_scales(x_mean, awq.weight_mean(group.linears, grids), alpha, True)
            awq.fold(group, s)
            spreads.append((s.max() / s.min()).item())
    return spreads


def test_folded_scales_leave_the_unquantized_model_unchanged(demo_model, fixtures):
    model, tokenizer = load_causal_lm(demo_model, device="cpu")
    ids = heldout_ids(tokenizer, fixtures)
    with torch.no_grad():
        before = model(input_ids=ids).logits
    q_before = model.model.layers[0].self_attn.q_proj.weight.clone()
    spreads = fold_every_layer(model, ids, alpha=0.5)
    assert len(spreads) == 30 * 3  # GQA (9 heads, 3 KV heads): no v -> o group
    assert max(spreads) > 10  # the scales differ a lot between channels: a real test
    assert not torch.allclose(model.model.layers[0].self_attn.q_proj.weight, q_before)
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert ((after - before).norm() / before.norm()).item() < 1e-4
    assert torch.equal(after.argmax(-1), before.argmax(-1))


def test_v_to_o_is_folded_where_heads_are_not_shared():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 100, (2, 32))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    names = [g.name for g in awq.smoothing_groups(model.model.layers[0], {})]
    assert names == ["attn_in", "v_o", "mlp_in", "up_down"]
    assert len(fold_every_layer(model, ids, alpha=0.7)) == 2 * 4
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert ((after - before).norm() / before.norm()).item() < 1e-4


def test_candidate_scales_are_normalised_and_finite():
    x_mean = torch.tensor([0.0, 1.0, 4.0, 100.0])
    w_mean = torch.tensor([0.5, 0.2, 0.9, 0.1])
    for alpha in (0.0, 0.35, 0.95):
        for duo in (True, False):
            s = awq.candidate_scales(x_mean, w_mean, alpha, duo)
            assert torch.isfinite(s).all() and (s > 0).all()
            assert (s.max() * s.min()).item() == pytest.approx(1.0, rel=1e-5)
    plain = awq.candidate_scales(x_mean, w_mean, 0.5, duo=False)
    expected = x_mean.sqrt().clamp(min=1e-4)
    assert torch.allclose(plain, expected / (expected.max() * expected.min()).sqrt())


@pytest.fixture(scope="module")
def layer_inputs(demo_model, fixtures):
    """Layer 3 of the demo model and its calibration inputs (4 windows x 128 tokens)."""
    model, tokenizer = load_causal_lm(demo_model, device="cpu")
    source = load_source(str(fixtures / "compress_calib.txt"))
    windows, _ = calibration_windows(tokenizer, source, 4, 128, 0)
    _, layers = decoder_layers(model)
    with torch.no_grad():
        hidden, kwargs = capture_first_layer_inputs(model, layers, windows, torch.device("cpu"))
        for layer in layers[:3]:
            hidden = [run_layer(layer, h, kwargs) for h in hidden]
    return layers[3], hidden, kwargs


def rounded_error(layer: torch.nn.Module, hidden: list[torch.Tensor], kwargs: dict,
                  reference: list[torch.Tensor]) -> float:
    """Relative output error of the layer once all its linears are rounded onto W3."""
    for linear in layer.modules():
        if isinstance(linear, torch.nn.Linear):
            linear.weight.data = W3.quantize(linear.weight.data)
    with torch.no_grad():
        out = [run_layer(layer, h, kwargs) for h in hidden]
    moved = sum((o - r).pow(2).sum().item() for o, r in zip(out, reference, strict=True))
    return moved / sum(r.pow(2).sum().item() for r in reference)


def test_search_and_clip_lower_the_rounded_layer_error(layer_inputs):
    layer, hidden, kwargs = layer_inputs
    with torch.no_grad():
        reference = [run_layer(layer, h, kwargs) for h in hidden]
    plain = rounded_error(copy.deepcopy(layer), hidden, kwargs, reference)
    grids = dict.fromkeys(awq.INPUT_OF, W3)
    scaled = copy.deepcopy(layer)
    record = awq.smooth_layer(scaled, hidden, kwargs, grids, clip=False)
    for name in ("attn_in", "mlp_in", "up_down"):
        assert 0 <= record[name]["alpha"] < 1
        assert record[name]["error"] <= record[name]["error_alpha0"]
    scaled_error = rounded_error(scaled, hidden, kwargs, reference)
    clipped = copy.deepcopy(layer)
    record = awq.smooth_layer(clipped, hidden, kwargs, grids, clip=True)
    assert set(record["clip_mean_shrink"]) == {"self_attn.v_proj", "self_attn.o_proj",
                                               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    clipped_error = rounded_error(clipped, hidden, kwargs, reference)
    print(f"layer 3 W3 g64 relative output error: rounding {plain:.4f}, AWQ scales "
          f"{scaled_error:.4f}, AWQ scales + clip {clipped_error:.4f}")
    assert scaled_error < 0.9 * plain
    assert clipped_error < scaled_error


@pytest.mark.slow
def test_awq_then_gptq_on_the_first_two_layers(demo_model, fixtures):
    """AWQ's scales, then GPTQ on the scaled weights: lower layer output error than AWQ with
    rounding; the manifest says what was done."""
    others_dense = ["re:layers\\.([2-9]|[12][0-9])\\."]
    base = {"method": "awq", "bits": 3, "group_size": 64, "dense": others_dense,
            "calib": str(fixtures / "compress_calib.txt"), "calib_samples": 4, "seqlen": 128}
    errors = {}
    for then in ("rtn", "gptq"):
        model, tokenizer = load_causal_lm(demo_model, device="cpu")
        result = compress_loaded(model, tokenizer, parse_recipe({**base, "then": then}))
        done = [m for m in result["modules"] if not m["kept_dense"]]
        assert len(done) == 14 and len(result["modules"]) == 210
        assert all((m["bits"], m["group_size"], m["sym"]) == (3, 64, False) for m in done)
        assert ("damp" in done[0]) == (then == "gptq")
        layers = result["layers"]
        assert set(layers[0]["awq"]) == {"attn_in", "mlp_in", "up_down", "clip_mean_shrink"}
        assert "awq" not in layers[2]
        errors[then] = [layers[i]["output_error"] for i in (0, 1)]
    print(f"layer output errors, AWQ W3 then rtn {errors['rtn']}, then gptq {errors['gptq']}")
    assert all(g < r for g, r in zip(errors["gptq"], errors["rtn"], strict=True))


@pytest.mark.parametrize(
    ("recipe", "place", "words"),
    [
        ('then = "sparsegpt"', "then", "'rtn' or 'gptq'"),
        ("grid = 1", "grid", "greater than or equal to 2"),
        ("act_order = false", "act_order", "only with then = 'gptq'"),
        ("damp = 0.1", "damp", "only with then = 'gptq'"),
        ("bits = 3", "group_size", "does not divide the 576 inputs"),  # awq's default 128
    ],
)
def test_bad_awq_recipe_is_one_line(tmp_path, fixtures, recipe, place, words):
    path = tmp_path / "awq.toml"
    group = "" if place == "group_size" else "group_size = 64\n"
    path.write_text(f'method = "awq"\ncalib = "{fixtures / "compress_calib.txt"}"\n{group}'
                    f"{recipe}\n")
    line = one_line_error(crbench("compress", "--model", "demo", "--recipe", path,
                                  "--out", tmp_path / "out"))
    assert f":{place}:" in line and words in line, line
    assert not (tmp_path / "out").exists()


def test_awq_settings_on_another_method_are_one_line(tmp_path):
    path = tmp_path / "gptq.toml"
    path.write_text('method = "gptq"\ncalib = "c.txt"\nduo = false\n')
    line = one_line_error(crbench("compress", "--model", "demo", "--recipe", path,
                                  "--out", tmp_path / "out"))
    assert f"{path}:duo: does not apply to method 'gptq' (only to awq)" in line
