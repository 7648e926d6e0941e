"""The direct check of module importance, as arXiv 2504.02010 v2 does it: quantize one module
alone (round to nearest, 3 bits by default), measure how much the next-token loss on the traces
rises, restore it, next module; then Spearman's rank correlation between the attribution
importance and the loss increase over the modules swept.

Losses are measured where importance is: over every trace token ("all") and over each
behaviour's positions. The sweep is `len(layers) x 7` modules x traces forward passes, so the
layers are a choice (`parse_layers`: "0,15,-1", "all", or the default: first, middle, last).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import nn

from crbench.errors import InputError
from crbench.importance import ALL, LinearModule, TokenTrace, run_model
from crbench.importance_io import Validation


def parse_layers(text: str | None, n_layers: int) -> list[int]:
    """Layers to sweep: None -> first, middle, last; "all"; "none"; or "0,15,-1"."""
    if text is None:
        return sorted({0, n_layers // 2, n_layers - 1})
    if text.strip() == "all":
        return list(range(n_layers))
    if text.strip() == "none":
        return []
    try:
        wanted = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError(None, f"layer numbers separated by commas, 'all' or 'none' (got "
                               f"{text!r})", "--validate-layers") from None
    bad = [i for i in wanted if not -n_layers <= i < n_layers]
    if bad or not wanted:
        raise InputError(None, f"the model has layers 0..{n_layers - 1} (got {text!r})",
                         "--validate-layers")
    return sorted({i % n_layers for i in wanted})


def trace_losses(model: nn.Module, traces: Sequence[TokenTrace],
                 device: torch.device) -> dict[str, float]:
    """Mean next-token loss of the predictions made at every trace token and at each
    behaviour's positions, pooled over the traces."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    with torch.no_grad():
        for trace in traces:
            logits = run_model(model, trace.ids, device)
            targets = torch.tensor(trace.ids[1:] + [0], device=logits.device)
            nll = nn.functional.cross_entropy(logits, targets, reduction="none")
            groups = {ALL: trace.trace_positions, **trace.behaviour_positions}
            for key, positions in groups.items():
                pos = [p for p in positions if p + 1 < len(trace.ids)]
                sums[key] = sums.get(key, 0.0) + float(nll[pos].sum())
                counts[key] = counts.get(key, 0) + len(pos)
    return {k: sums[k] / counts[k] for k in sums if counts[k] > 0}


def quantized_weight(w: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    from crbench.compress.rtn import rtn

    size = group_size if group_size and w.shape[1] % group_size == 0 else None
    q, _ = rtn(w.float(), bits=bits, group_size=size, sym=True)
    return q.to(w.dtype)


def loss_increases(model: nn.Module, modules: Sequence[LinearModule],
                   traces: Sequence[TokenTrace], device: torch.device, *, bits: int,
                   group_size: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(baseline losses, module -> loss increase per key) with each module quantized alone."""
    baseline = trace_losses(model, traces, device)
    out: dict[str, dict[str, float]] = {}
    for m in modules:
        original = m.module.weight.data.clone()
        try:
            m.module.weight.data.copy_(quantized_weight(original, bits, group_size))
            losses = trace_losses(model, traces, device)
        finally:
            m.module.weight.data.copy_(original)
        out[m.name] = {k: losses[k] - baseline[k] for k in baseline if k in losses}
    return baseline, out


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None]:
    """Spearman's rho and its p-value; None when undefined (fewer than 3 points, or a
    constant side)."""
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    rho, p = spearmanr(x, y)
    rho, p = float(rho), float(p)
    return (rho if math.isfinite(rho) else None), (p if math.isfinite(p) else None)


def validate(model: nn.Module, modules: Sequence[LinearModule], traces: Sequence[TokenTrace],
             importance: dict[str, dict[str, float]], layers: Sequence[int], device: torch.device,
             *, bits: int = 3, group_size: int = 0
             ) -> tuple[Validation, dict[str, dict[str, float]]]:
    """Sweep the modules of `layers`; (summary, module -> loss increase per key)."""
    started = time.perf_counter()
    swept = [m for m in modules if m.layer in set(layers)]
    baseline, increases = loss_increases(model, swept, traces, device, bits=bits,
                                         group_size=group_size)
    rho: dict[str, float | None] = {}
    p_value: dict[str, float | None] = {}
    for key in baseline:
        names = [m.name for m in swept if key in increases[m.name]
                 and key in importance[m.name]]
        rho[key], p_value[key] = spearman([importance[n][key] for n in names],
                                          [increases[n][key] for n in names])
    summary = Validation(bits=bits, group_size=group_size, layers=list(layers),
                         baseline_loss=baseline, spearman=rho, p_value=p_value,
                         modules=len(swept), seconds=time.perf_counter() - started)
    return summary, increases
