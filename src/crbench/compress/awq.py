"""AWQ (Lin et al. 2023, arXiv 2306.00978): activation-aware weight quantization.

Weights that meet large activations matter most. AWQ protects them by scaling: for a linear
layer fed x, W x = (W diag(s)) (diag(s)^-1 x), so each input channel's weights can be scaled up
by s (their rounding error shrinks relative to them) while the operation that produced x is
scaled down by s, which the model computes anyway. Per decoder layer, as the reference
implementations (AutoAWQ, llm-compressor) do it:

1. Smoothing groups, each a scale vector over the input channels of some linear layers, folded
   into the operation before them: input norm -> q/k/v; v -> o (only where v's outputs are o's
   inputs one to one, i.e. not under grouped-query attention with fewer KV heads);
   post-attention norm -> gate/up; up -> down.
2. Statistics on the calibration inputs (fp32): x_mean = mean |x| per input channel;
   w_mean = mean over output rows of |W| / (max |W| of its quantization group).
3. For alpha in 0, 1/n, ..., (n-1)/n: s = x_mean^alpha / (w_mean^(1-alpha) + 1e-4) ("duo";
   x_mean^alpha alone without it), clamped >= 1e-4, divided by sqrt(max s * min s), non-finite
   entries 1. Quantize W diag(s) onto its grid (round to nearest), divide by s, run the block the
   group feeds (attention, MLP, or the single linear) on the cached inputs: the MSE against the
   unquantized block's output is the objective; the best alpha wins.
4. Fold every group's best s (divide the norm weight or the previous linear's output rows,
   multiply the linears' input columns): without quantization the layer computes the same.
5. Optional clip search (not q/k, whose errors the softmax amplifies): per output row and group
   the clamp range max |w| * (1 - i/n), i = 0..n/2-1, with the lowest error of that group's
   partial output on 512 sampled tokens.
The layer's weights are then quantized by the pipeline: round to nearest, or GPTQ on the scaled
weights (`then = "gptq"`), calibrated on the scaled layer's inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crbench.compress import gptq as gptq_module
from crbench.compress import rtn as rtn_module
from crbench.compress.layerwise import PrepareLayer
from crbench.compress.recipe import Recipe, Settings
from crbench.errors import InputError

NEEDS = "hessian"  # for GPTQ after the scales; round to nearest ignores it
TOKENS_PER_FORWARD = 8192  # the cached inputs run through a block in batches of this many tokens
CLIP_TOKENS = 512  # tokens the clip search measures on (AutoAWQ's n_sample_token)
CLIP_MAX_SHRINK = 0.5
CLIP_ROWS = 256  # output rows per step of the clip search

# Which linear's input each linear reads (q/k/v one tensor, gate/up one tensor).
INPUT_OF = {"self_attn.q_proj": "self_attn.q_proj", "self_attn.k_proj": "self_attn.q_proj",
            "self_attn.v_proj": "self_attn.q_proj", "self_attn.o_proj": "self_attn.o_proj",
            "mlp.gate_proj": "mlp.gate_proj", "mlp.up_proj": "mlp.gate_proj",
            "mlp.down_proj": "mlp.down_proj"}


@dataclass(frozen=True)
class WeightGrid:
    """How a linear layer is quantized: what the search rounds onto."""

    bits: int
    group_size: int | None  # None: one grid per output row
    sym: bool

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        return rtn_module.rtn(w, bits=self.bits, group_size=self.group_size, sym=self.sym)[0]


@dataclass(frozen=True)
class SmoothGroup:
    """Linear layers fed one tensor, the operation that made it, and the block to measure."""

    name: str  # "attn_in", "v_o", "mlp_in", "up_down"
    prev: nn.Module  # a norm (weight per channel) or a linear (one output row per channel)
    linears: dict[str, nn.Linear]  # names within the decoder layer
    block: Callable[[torch.Tensor], torch.Tensor]  # the group's input -> the measured output


def awq(w: torch.Tensor, stats: torch.Tensor, *, bits: int, group_size: int | None, sym: bool,
        then: str = "rtn", act_order: bool = True, static_groups: bool = False,
        damp: float = 0.01, block_size: int = 128, where: str = "") -> tuple[torch.Tensor, dict]:
    """Quantize a weight AWQ has already scaled (and clipped): round to nearest, or GPTQ."""
    if then == "gptq":
        return gptq_module.gptq(w, stats, bits=bits, group_size=group_size, sym=sym,
                                act_order=act_order, static_groups=static_groups, damp=damp,
                                block_size=block_size, where=where)
    return rtn_module.rtn(w, bits=bits, group_size=group_size, sym=sym)


def submodule(layer: nn.Module, name: str) -> nn.Module:
    try:
        return layer.get_submodule(name)
    except AttributeError:
        raise InputError(None, "AWQ supports Llama-style decoder layers (self_attn.q/k/v/o_proj, "
                         "mlp.gate/up/down_proj, input_layernorm, post_attention_layernorm); "
                         f"this layer has no {name}") from None


def linears_of(layer: nn.Module) -> dict[str, nn.Linear]:
    """The layer's seven linear layers by their names within it (`INPUT_OF`'s keys)."""
    found = {}
    for name in INPUT_OF:
        module = submodule(layer, name)
        if not isinstance(module, nn.Linear):
            raise InputError(None, f"AWQ: {name} is a {type(module).__name__}, not a linear "
                             "layer")
        found[name] = module
    return found


def smoothing_groups(layer: nn.Module, layer_kwargs: dict[str, Any]) -> list[SmoothGroup]:
    """The four smoothing groups of a Llama-style decoder layer (v -> o only where it folds)."""
    linear = linears_of(layer)
    attn, mlp = submodule(layer, "self_attn"), submodule(layer, "mlp")
    norms = submodule(layer, "input_layernorm"), submodule(layer, "post_attention_layernorm")
    v, o, up = linear["self_attn.v_proj"], linear["self_attn.o_proj"], linear["mlp.up_proj"]

    def attention(x: torch.Tensor) -> torch.Tensor:
        kwargs = {k: v for k, v in layer_kwargs.items() if k != "hidden_states"}
        out = attn(hidden_states=x, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def pick(*names: str) -> dict[str, nn.Linear]:
        return {name: linear[name] for name in names}

    groups = [SmoothGroup("attn_in", norms[0], pick("self_attn.q_proj", "self_attn.k_proj",
                                                    "self_attn.v_proj"), attention)]
    if v.weight.shape == o.weight.shape:  # v's output channels are o's inputs, one to one
        groups.append(SmoothGroup("v_o", v, pick("self_attn.o_proj"), o))
    groups.append(SmoothGroup("mlp_in", norms[1], pick("mlp.gate_proj", "mlp.up_proj"), mlp))
    groups.append(SmoothGroup("up_down", up, pick("mlp.down_proj"), linear["mlp.down_proj"]))
    return groups


def batches(x: torch.Tensor) -> Iterator[torch.Tensor]:
    """x ([windows, tokens, channels]) in slices of about TOKENS_PER_FORWARD tokens."""
    step = max(1, TOKENS_PER_FORWARD // x.shape[1])
    yield from (x[i : i + step] for i in range(0, x.shape[0], step))


def capture_inputs(layer: nn.Module, hidden: torch.Tensor, layer_kwargs: dict[str, Any],
                   linears: dict[str, nn.Linear]) -> dict[str, torch.Tensor]:
    """The input of each of `linears` when the layer runs on `hidden`, batched."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in linears}
    handles = [module.register_forward_hook(
                   lambda mod, args, out, name=name: seen[name].append(args[0]))
               for name, module in linears.items()]
    try:
        for x in batches(hidden):
            layer(x, **layer_kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(parts) for name, parts in seen.items()}


def weight_mean(linears: dict[str, nn.Linear], grids: dict[str, WeightGrid | None]) -> torch.Tensor:
    """Per input channel: mean of |W| normalised by the max |W| of its quantization group."""
    parts = []
    for name, linear in linears.items():
        w = linear.weight.detach().float().abs()
        grid = grids.get(name)
        size = (grid.group_size if grid else None) or w.shape[1]
        groups = w.reshape(-1, size)
        parts.append((groups / (groups.amax(dim=1, keepdim=True) + 1e-6)).reshape(w.shape))
    return torch.cat(parts).mean(dim=0)


def candidate_scales(x_mean: torch.Tensor, w_mean: torch.Tensor, alpha: float,
                     duo: bool) -> torch.Tensor:
    s = x_mean.pow(alpha) / (w_mean.pow(1 - alpha) + 1e-4) if duo else x_mean.pow(alpha)
    s = s.clamp(min=1e-4)
    s = s / (s.max() * s.min()).sqrt()
    s[~torch.isfinite(s)] = 1.0
    return s


def block_error(block: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                reference: list[torch.Tensor]) -> float:
    """Mean squared difference between the block's output on x and `reference` (fp32)."""
    total, count = 0.0, 0
    for part, ref in zip(batches(x), reference, strict=True):
        diff = block(part).float() - ref
        total += diff.pow(2).sum().item()
        count += diff.numel()
    return total / max(count, 1)


def search_scale(group: SmoothGroup, x: torch.Tensor, grids: dict[str, WeightGrid | None], *,
                 n_grid: int, duo: bool) -> tuple[torch.Tensor, dict[str, Any]]:
    """The best scale of one smoothing group, and a record of the search."""
    x_mean = x.abs().float().reshape(-1, x.shape[-1]).mean(dim=0)
    w_mean = weight_mean(group.linears, grids)
    reference = [group.block(part).float() for part in batches(x)]
    originals = {name: linear.weight.data.clone() for name, linear in group.linears.items()}
    best: tuple[float, float, torch.Tensor] | None = None
    errors = []
    try:
        for step in range(n_grid):
            alpha = step / n_grid
            s = candidate_scales(x_mean, w_mean, alpha, duo)
            for name, linear in group.linears.items():
                grid, w = grids.get(name), originals[name].float()
                scaled = w * s
                quantized = grid.quantize(scaled) if grid else scaled
                linear.weight.data = (quantized / s).to(originals[name].dtype)
            error = block_error(group.block, x, reference)
            errors.append(error)
            if best is None or error < best[0]:
                best = (error, alpha, s)
    finally:
        for name, linear in group.linears.items():
            linear.weight.data = originals[name]
    assert best is not None
    if not all(map(math.isfinite, errors)):
        raise InputError(None, "AWQ scale search: the block's output is not finite on the "
                         "calibration inputs", group.name)
    return best[2], {"alpha": best[1], "error": best[0], "error_alpha0": errors[0]}


@torch.no_grad()
def fold(group: SmoothGroup, s: torch.Tensor) -> None:
    """Scale the linears' input columns by s and the operation before them down by s."""
    prev = group.prev
    weight = prev.get_parameter("weight")
    if isinstance(prev, nn.Linear):
        weight.data = (weight.data.float() / s.unsqueeze(1)).to(weight.dtype)
    else:
        weight.data = (weight.data.float() / s).to(weight.dtype)
    bias = prev.get_parameter("bias") if getattr(prev, "bias", None) is not None else None
    if bias is not None:
        bias.data = (bias.data.float() / s).to(bias.dtype)
    for linear in group.linears.values():
        linear.weight.data = (linear.weight.data.float() * s).to(linear.weight.dtype)


def group_outputs(sample: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Each group's share of each output: sample [group, token, k], w [rows, group * k] ->
    [group, token, row]."""
    groups, _, size = sample.shape
    return torch.bmm(sample, w.reshape(w.shape[0], groups, size).permute(1, 2, 0))


@torch.no_grad()
def clip_weight(w: torch.Tensor, x: torch.Tensor, grid: WeightGrid, n_grid: int) -> float:
    """Clamp each (row, group) of w in place to the range whose quantized partial output is
    closest to the original on sampled tokens; returns the mean shrink chosen."""
    rows, cols = w.shape
    size = grid.group_size or cols
    groups = cols // size
    flat = x.reshape(-1, cols)
    sample = flat[:: max(1, flat.shape[0] // CLIP_TOKENS)].float()
    sample = sample.reshape(-1, groups, size).transpose(0, 1)  # [group, token, k]
    shrinks = []
    for start in range(0, rows, CLIP_ROWS):
        block = w[start : start + CLIP_ROWS].float()
        count = block.shape[0]
        by_group = block.reshape(count, groups, size)
        original_max = by_group.abs().amax(dim=2, keepdim=True)  # [row, group, 1]
        reference = group_outputs(sample, block)
        best_error = torch.full((groups, count), float("inf"), device=w.device)
        best_max = original_max.clone()
        for step in range(int(CLIP_MAX_SHRINK * n_grid)):
            limit = original_max * (1 - step / n_grid)
            clipped = torch.clamp(by_group, -limit, limit).reshape(count, cols)
            error = (group_outputs(sample, grid.quantize(clipped)) - reference).pow(2).mean(dim=1)
            better = (error < best_error).T  # [row, group]
            best_error = torch.minimum(error, best_error)
            best_max[better] = limit[better]
        shrinks.append((1 - best_max / original_max.clamp_min(1e-30)).flatten())
        clipped = torch.clamp(by_group, -best_max, best_max).reshape(count, cols)
        w[start : start + CLIP_ROWS] = clipped.to(w.dtype)
    return torch.cat(shrinks).mean().item()


@torch.no_grad()
def smooth_layer(layer: nn.Module, hidden: list[torch.Tensor], layer_kwargs: dict[str, Any],
                 grids: dict[str, WeightGrid | None], *, n_grid: int = 20, duo: bool = True,
                 clip: bool = True) -> dict[str, Any]:
    """Search, fold and (optionally) clip one decoder layer in place; returns its record.

    `hidden`: the layer's calibration inputs ([1, tokens, hidden] each, equal lengths);
    `grids`: each linear's grid by its name within the layer (None: kept dense, not rounded in
    the search, still scaled, which changes nothing it computes)."""
    x = torch.cat(hidden)
    groups = smoothing_groups(layer, layer_kwargs)
    linears = linears_of(layer)  # o_proj is clipped even where v -> o is not smoothed
    points = {name: linears[name] for name in INPUT_OF.values()}
    inputs = capture_inputs(layer, x, layer_kwargs, points)
    record: dict[str, Any] = {}
    chosen = []
    for group in groups:
        if not any(grids.get(name) for name in group.linears):
            continue  # nothing of this group is quantized
        point = INPUT_OF[next(iter(group.linears))]
        s, record[group.name] = search_scale(group, inputs[point], grids, n_grid=n_grid,
                                             duo=duo)
        chosen.append((point, group, s))
    for point, group, s in chosen:  # all searched on the unscaled layer, then folded
        fold(group, s)
        inputs[point] = inputs[point] / s.to(inputs[point].dtype)
    if clip:
        shrink = {}
        for name, linear in linears.items():
            grid = grids.get(name)
            if grid is not None and not name.endswith(("q_proj", "k_proj")):
                shrink[name] = clip_weight(linear.weight.data, inputs[INPUT_OF[name]], grid,
                                           n_grid)
        record["clip_mean_shrink"] = shrink
    return record


def layer_step(recipe: Recipe, plan: dict[int, dict[str, tuple[nn.Linear, Settings, Any]]]
               ) -> PrepareLayer:
    """The pipeline's hook for `calibrate_sequentially`: smooth each planned layer by the
    recipe (`grid`, `duo`, `clip`), rounding in the search onto each module's own grid."""

    def prepare(index: int, layer: nn.Module, hidden: list[torch.Tensor],
                layer_kwargs: dict[str, Any]) -> dict[str, Any]:
        grids: dict[str, WeightGrid | None] = {}
        for name, (_, settings, _) in plan.get(index, {}).items():
            assert settings.bits is not None and settings.sym is not None
            short = name.partition(f".{index}.")[2]
            grids[short] = WeightGrid(settings.bits, settings.group_size or None, settings.sym)
        record = smooth_layer(layer, hidden, layer_kwargs, grids, n_grid=recipe.grid or 20,
                              duo=recipe.duo is not False, clip=recipe.clip is not False)
        return {"awq": record}

    return prepare
