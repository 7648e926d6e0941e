"""Linear layers whose weights are packed once for oneDNN: bf16 inference on the CPU.

torch's bf16 `linear` on the CPU hands every call to oneDNN with the weight in torch's
layout, and oneDNN reorders it into the blocked layout its AMX / AVX512-BF16 kernels read: at
every call, for every layer, so a decode step pays a copy of all the weights besides the
matmuls. Packing each weight once when the engine loads the model (what torch.compile's CPU
backend does with frozen weights) removes that. Measured on a 2-core Xeon with AMX,
SmolLM2-135M's seven linear shapes over 30 layers of distinct weights: 310 -> 444 GFLOP/s at
32 rows, 816 -> 1,143 at 128, 1,578 -> 2,116 at 1,024 (and 11 -> 17 at one row); the reasoning
generation benchmark 458 -> 566 tok/s. In fp32 the same packing was slower (270 against 251
tok/s), so only bf16 models are packed, and only where crbench.dtype's probe measured packed
matmuls faster on this CPU (`Probe.packed_linear`).

The packed weight is an opaque oneDNN tensor: a packed model is for inference only (no
gradients, no weight access), which is all the hf engine's decode loop needs.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import torch


def available() -> bool:
    """oneDNN with bf16 kernels on this CPU, and torch's ops that pack and run them."""
    mkldnn = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available()
            and hasattr(mkldnn, "_reorder_linear_weight") and hasattr(mkldnn, "_linear_pointwise")
            and bool(mkldnn._is_mkldnn_bf16_supported()))


def pack_weight(weight: torch.Tensor, rows_hint: int) -> torch.Tensor:
    """`weight` [out, in] in oneDNN's layout for about `rows_hint` input rows (any row count
    works; the hint only steers the layout, and measured within 10% across 1-1,024 rows)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)


def packed_linear(x: torch.Tensor, packed: torch.Tensor,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


class PackedLinear(torch.nn.Module):
    """`nn.Linear`'s forward with the weight packed once (bf16, CPU, inference only)."""

    def __init__(self, linear: torch.nn.Linear, rows_hint: int):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = pack_weight(linear.weight, rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_linear(x, self.packed, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed"


def should_pack(model: Any, requested: bool | None) -> bool:
    """Pack when asked (True), never when False; None: a bf16 model on a CPU where the probe
    measured packed matmuls faster. Asking where it cannot be done is a ValueError."""
    from crbench.dtype import DEFAULT_SHAPE, cpu_probe, model_shape

    if requested is False:
        return False
    quantized = getattr(model.config, "quantization_config", None) is not None
    possible = (model.device.type == "cpu" and model.dtype == torch.bfloat16 and not quantized
                and available())
    if requested:
        if not possible:
            raise ValueError("packed linears need an unquantized bf16 model on a CPU with "
                             f"oneDNN bf16 (here: {model.dtype} on {model.device.type}"
                             f"{', quantized' if quantized else ''}, oneDNN bf16 "
                             f"{'available' if available() else 'unavailable'})")
        return True
    return possible and cpu_probe(model_shape(model.config) or DEFAULT_SHAPE).packed_linear


def plain_bf16_linear(module: torch.nn.Module) -> TypeGuard[torch.nn.Linear]:
    """An `nn.Linear` computing `x @ weight.T + bias` from a bf16 weight, and nothing else:
    not a quantized layer that keeps its weight packed in other tensors (compressed-tensors
    checkpoints load as such), not one whose forward was replaced or hooked."""
    weight = getattr(module, "weight", None)
    return (isinstance(module, torch.nn.Linear) and type(module).forward is torch.nn.Linear.forward
            and "forward" not in vars(module) and isinstance(weight, torch.Tensor)
            and weight.dtype == torch.bfloat16
            and not (module._forward_hooks or module._forward_pre_hooks))


def pack_linears(model: torch.nn.Module, rows_hint: int = 128) -> int:
    """Swap every plain bf16 `nn.Linear` of `model` (tied LM head included: it gets its own
    packed copy, the embedding keeps the original) for a `PackedLinear`; returns how many."""
    swaps = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children() if plain_bf16_linear(child)]
    for parent, name, child in swaps:
        setattr(parent, name, PackedLinear(child, rows_hint))
    return len(swaps)
