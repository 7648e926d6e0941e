"""Linear layers packed once for oneDNN (bf16 on the CPU): the same numbers as `nn.Linear`
within bf16, every linear of the model swapped, and the engine uses them only where it should."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from crbench import dtype as dtypes
from crbench.engines import SamplingParams, hf_packed, make_engine

needs_onednn_bf16 = pytest.mark.skipif(not hf_packed.available(),
                                       reason="this CPU has no oneDNN bf16 kernels")


def test_onednn_bf16_is_found_where_the_cpu_has_bf16():
    """The skips below are for CPUs without bf16 kernels, never for a broken check."""
    if {"avx512_bf16", "amx_bf16"} & dtypes.cpu_flags():
        assert hf_packed.available()


@needs_onednn_bf16
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(5, 576), (1, 37, 576), (2, 3, 576)])
def test_packed_linear_gives_linear_within_bf16(shape, bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(576, 192, bias=bias).to(torch.bfloat16)
    x = torch.randn(shape).to(torch.bfloat16)
    exact = torch.nn.functional.linear(x.float(), linear.weight.float(),
                                       None if linear.bias is None else linear.bias.float())
    packed = hf_packed.PackedLinear(linear, rows_hint=128)
    with torch.inference_mode():
        out, plain = packed(x), linear(x)
    assert out.shape == plain.shape and out.dtype == torch.bfloat16
    # both round the same fp32 sums to bf16: within one bf16 step of the exact result
    assert ((out.float() - exact).abs() <= exact.abs() * 2**-7 + 1e-3).all()
    assert (out.float() - exact).abs().max() <= (plain.float() - exact).abs().max() * 2 + 1e-3


def fake_model(dtype, device="cpu", quantization_config=None):
    return SimpleNamespace(dtype=dtype, device=torch.device(device),
                           config=SimpleNamespace(hidden_size=64, intermediate_size=128,
                                                  quantization_config=quantization_config))


def fake_probe(packed_faster: bool):
    rates = {16: 100.0, 256: 1000.0}
    packed = {rows: rate * (2.0 if packed_faster else 1.0) for rows, rate in rates.items()}
    return dtypes.Probe("m", (64, 128), 2, rates, rates, "bfloat16", packed)


@needs_onednn_bf16
def test_packing_follows_the_probe_and_the_request(monkeypatch):
    for faster in (True, False):
        monkeypatch.setattr(dtypes, "cpu_probe", lambda shape, _f=faster: fake_probe(_f))
        assert hf_packed.should_pack(fake_model(torch.bfloat16), None) is faster
        assert hf_packed.should_pack(fake_model(torch.bfloat16), True)
        assert not hf_packed.should_pack(fake_model(torch.bfloat16), False)
    monkeypatch.setattr(dtypes, "cpu_probe", lambda shape: fake_probe(True))
    assert not hf_packed.should_pack(fake_model(torch.float32), None)  # fp32 measured slower
    with pytest.raises(ValueError, match="bf16 model on a CPU"):
        hf_packed.should_pack(fake_model(torch.float32), True)
    # a quantized checkpoint (compressed-tensors, GPTQ, ...) keeps its own layers
    quantized = fake_model(torch.bfloat16, quantization_config={"quant_method": "x"})
    assert not hf_packed.should_pack(quantized, None)
    with pytest.raises(ValueError, match="quantized"):
        hf_packed.should_pack(quantized, True)


class QuantizedLinear(torch.nn.Linear):
    """Like compressed-tensors' layers: an nn.Linear whose weight lives in other tensors."""

    def __init__(self):
        super().__init__(8, 4, bias=False, dtype=torch.bfloat16)
        del self.weight
        self.weight_packed = torch.zeros(4, 1, dtype=torch.int32)

    def forward(self, x):
        return x[..., :4]


@needs_onednn_bf16
def test_only_plain_bf16_linears_are_swapped():
    hooked = torch.nn.Linear(8, 8, dtype=torch.bfloat16)
    hooked.register_forward_hook(lambda module, args, out: out)
    replaced = torch.nn.Linear(8, 8, dtype=torch.bfloat16)
    replaced.forward = lambda x: x  # type: ignore[method-assign]
    model = torch.nn.ModuleDict({
        "plain": torch.nn.Linear(8, 8, dtype=torch.bfloat16), "quantized": QuantizedLinear(),
        "fp32": torch.nn.Linear(8, 8), "hooked": hooked, "replaced": replaced})
    assert hf_packed.pack_linears(model) == 1
    assert isinstance(model["plain"], hf_packed.PackedLinear)
    assert [type(model[k]) for k in ("quantized", "fp32", "hooked", "replaced")] == [
        QuantizedLinear, torch.nn.Linear, torch.nn.Linear, torch.nn.Linear]


@needs_onednn_bf16
def test_engine_packs_every_linear_and_stays_greedy_within_bf16(demo_model):
    """Every token of the packed engine is the greedy choice of the plain bf16 model given the
    output before it, up to two bf16 steps of the logits (the bf16 rule of test_engine_hf)."""
    from crbench.models import load_causal_lm

    engine = make_engine("hf", str(demo_model), batch_size=4, dtype="bf16", packed=True)
    layers = engine.model.config.num_hidden_layers
    assert engine.packed_linears == 7 * layers + 1  # q, k, v, o, gate, up, down; the LM head
    assert not any(isinstance(m, torch.nn.Linear) for m in engine.model.modules())
    assert engine.model.get_input_embeddings().weight.dtype == torch.bfloat16  # tied: kept
    prompts = ["The three primary colours are",
               [{"role": "user", "content": "What is 7 times 8? Answer briefly."}],
               "def fibonacci(n):"]
    results = dict(engine.generate(prompts, SamplingParams(max_new_tokens=16)))
    plain, _ = load_causal_lm(str(demo_model), device="cpu", dtype="bfloat16")
    for i, gen in results.items():
        assert gen.token_ids
        ids = engine.encode(prompts[i])
        with torch.inference_mode():
            logits = plain(input_ids=torch.tensor([ids + gen.token_ids])).logits
        logits = logits[0, len(ids) - 1:-1].float()
        best = logits.max(-1).values
        chosen = logits.gather(-1, torch.tensor(gen.token_ids)[:, None])[:, 0]
        assert ((best - chosen) <= best.abs() * 2**-6).all(), i


def test_fp32_engine_is_not_packed(demo_model):
    engine = make_engine("hf", str(demo_model), batch_size=2, dtype="fp32")
    assert engine.packed_linears == 0
    assert any(isinstance(m, torch.nn.Linear) for m in engine.model.modules())
