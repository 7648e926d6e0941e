"""Sampling in the hf engine's decode loop: one random generator per prompt, so a prompt's
sample does not depend on which other prompts share its batch."""

from __future__ import annotations

from typing import Any

from crbench.engines.base import SamplingParams
from crbench.engines.prompts import prompt_seed


def sampler(params: SamplingParams, prompt_ids: list[int]) -> Any:
    """A random generator of this prompt's own, seeded from the run's seed and the prompt."""
    if params.temperature <= 0:
        return None
    import torch

    return torch.Generator().manual_seed(prompt_seed(params.seed, prompt_ids))


def sample(logits: Any, params: SamplingParams, generators: list[Any]) -> Any:
    """Temperature and nucleus (top-p) sampling, one uniform draw per row from its generator."""
    import torch

    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    order = None
    if params.top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True)
        before = probs.cumsum(dim=-1) - probs  # mass strictly before each token
        probs = probs.masked_fill(before >= params.top_p, 0.0)  # keeps at least the first
    cdf = probs.cumsum(dim=-1)
    draws = torch.cat([torch.rand(1, generator=g) for g in generators]).to(cdf.device)
    picked = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None], right=True)
    picked = picked.clamp(max=cdf.shape[-1] - 1)
    return picked[:, 0] if order is None else order.gather(-1, picked)[:, 0]
