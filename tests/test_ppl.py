"""Perplexity in fixed non-overlapping windows, checked against transformers' own loss."""

from __future__ import annotations

import math

import pytest
import torch

from crbench.errors import InputError
from crbench.models import load_causal_lm
from crbench.ppl import perplexity_of


@pytest.fixture(scope="module")
def loaded(demo_model):
    return load_causal_lm(demo_model, device="cpu")


def test_windows_match_transformers_loss(loaded, fixtures):
    model, tokenizer = loaded
    text = (fixtures / "compress_heldout.txt").read_text()[:3000]
    result = perplexity_of(model, tokenizer, text, seqlen=128)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    windows = len(ids) // 128
    assert result["windows"] == windows and result["tokens"] == windows * 127
    with torch.no_grad():  # transformers averages the loss over the 127 predicted tokens
        losses = [model(input_ids=torch.tensor([ids[i * 128:(i + 1) * 128]]),
                        labels=torch.tensor([ids[i * 128:(i + 1) * 128]])).loss.item()
                  for i in range(windows)]
    assert result["nll"] == pytest.approx(sum(losses) / windows, rel=1e-4)
    assert result["ppl"] == pytest.approx(math.exp(result["nll"]))


def test_longer_windows_see_more_context(loaded, fixtures):
    model, tokenizer = loaded
    text = (fixtures / "compress_heldout.txt").read_text()[:4000]
    short = perplexity_of(model, tokenizer, text, seqlen=32)
    long = perplexity_of(model, tokenizer, text, seqlen=512)
    assert long["windows"] == 1 and short["windows"] >= 16
    assert long["ppl"] < short["ppl"]


def test_text_shorter_than_one_window(loaded):
    model, tokenizer = loaded
    with pytest.raises(InputError, match="fewer than one window of 512") as caught:
        perplexity_of(model, tokenizer, "Too short to fill a window.", source="short.txt")
    assert caught.value.path == "short.txt"


def test_bf16_perplexity_is_within_one_percent_of_fp32(demo_model, fixtures):
    """dtype auto may pick bf16 on this CPU: the figure must stay comparable with fp32's."""
    from crbench.dtype import canonical, resolve_dtype
    from crbench.ppl import perplexity

    data = fixtures / "compress_heldout.txt"
    fp32 = perplexity(demo_model, data, seqlen=256, dtype="fp32")
    bf16 = perplexity(demo_model, data, seqlen=256, dtype="bf16")
    assert (fp32["dtype"], bf16["dtype"]) == ("float32", "bfloat16")
    assert bf16["tokens"] == fp32["tokens"] > 1000
    assert abs(bf16["ppl"] / fp32["ppl"] - 1) < 0.01, (bf16["ppl"], fp32["ppl"])
    auto = perplexity(demo_model, data, seqlen=256)
    assert auto["dtype"] == canonical(resolve_dtype("auto", "cpu", (576, 1536)))
    with pytest.raises(InputError, match="dtype must be one of"):
        perplexity(demo_model, data, dtype="int4")
