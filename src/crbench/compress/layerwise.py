"""Sequential layer-by-layer calibration, as in the GPTQ and SparseGPT reference code.

1. Run the model on the calibration windows until the first decoder layer, where a pre-hook
   records that layer's inputs (and the arguments the model passes it: rotary embeddings,
   attention mask) and stops the forward.
2. For each decoder layer in turn: run it on its inputs with hooks that accumulate statistics
   of every target linear layer's input (pass 1, which also gives the dense outputs); compress
   those linear layers; run it again (pass 2) so the next layer is calibrated on the outputs of
   the already-compressed model, and measure how far those moved from the dense outputs
   (`propagate="dense"`: no pass 2; the next layer gets the uncompressed outputs).
   A method may first transform the layer on its inputs (`prepare_layer`, before pass 1): AWQ
   folds its scales there, so the statistics and pass 1 see the scaled layer.
   When pass 2 follows, pass 1 needs the layer's outputs only to measure that distance: it
   keeps them for the first `MEASURED_WINDOWS` windows and stops every other window at the
   input of the last target module to run (nothing after it feeds a statistic), which spares
   that module's matmul (SmolLM2's down projection: a quarter of pass 1's linear FLOPs).
The forwards may compute in a lower precision than the weights (`forward_dtype`, bf16 where the
CPU runs it faster): they run under autocast, so the weights stay as loaded (fp32) for the
algorithms, the residual stream stays fp32, and the statistics are accumulated in fp32
(`HessianAccumulator` turns autocast off). Each pass over the windows is one autocast region,
so each weight is cast once per pass: autocast caches the casts inside a region, and weights
change only between passes.
Only one decoder layer's inputs and outputs are held at a time; on a GPU only the current
decoder layer (plus embeddings) is moved there.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from crbench.compress.hessian import HessianAccumulator
from crbench.errors import InputError

# compress_group(layer index, {name: linear} sharing one input, its statistics) -> records
CompressGroup = Callable[[int, dict[str, nn.Linear], torch.Tensor], list[dict]]
# prepare_layer(layer index, layer, its inputs, layer kwargs) -> fields for the layer record:
# changes the layer in place before its statistics are taken (AWQ folds its scales here)
PrepareLayer = Callable[[int, nn.Module, list[torch.Tensor], dict[str, Any]], dict[str, Any]]


MEASURED_WINDOWS = 4  # windows whose dense outputs pass 1 keeps to measure the output error


class _StopForward(Exception):
    """Raised by a hook: nothing after this point of the forward needs to run."""


def forwards_in(dtype: torch.dtype | None, device: torch.device
                ) -> contextlib.AbstractContextManager:
    """The region one pass of forwards runs in: autocast to `dtype`, or as the weights are."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's stack of decoder layers: the ModuleList as long as num_hidden_layers."""
    config = model.config
    text_config = getattr(config, "get_text_config", None)  # multimodal: the language model's
    config = text_config() if callable(text_config) else config
    count = getattr(config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return name, module
    raise InputError(None, "cannot find the decoder layers of this model "
                     f"(no module list of num_hidden_layers={count} layers)")


def move_all_but(module: nn.Module, layers: nn.ModuleList, device: torch.device) -> None:
    """Move everything except the decoder layers (embeddings, rotary, norms) to `device`."""
    for child in module.children():
        if child is layers:
            continue
        if any(inner is layers for inner in child.modules()):
            move_all_but(child, layers, device)
        else:
            child.to(device)


def capture_first_layer_inputs(
    model: nn.Module, layers: nn.ModuleList, windows: torch.Tensor, device: torch.device
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    inputs: list[torch.Tensor] = []
    layer_kwargs: dict[str, Any] = {}

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        inputs.append(args[0] if args else kwargs.pop("hidden_states"))
        # Same length windows, batch 1: these arguments are the same for every window.
        layer_kwargs.update({k: v for k, v in kwargs.items() if k != "hidden_states"})
        raise _StopForward

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for row in windows:
            with contextlib.suppress(_StopForward):
                model(input_ids=row.unsqueeze(0).to(device), use_cache=False)
    finally:
        handle.remove()
    return inputs, layer_kwargs


class InputStatistics:
    """Forward hooks that accumulate X^T X of each linear layer's input. Layers fed the very
    same tensor (q/k/v projections, gate/up projections) share one accumulator: computed once,
    held once."""

    def __init__(self, modules: dict[str, nn.Linear], device: torch.device, diagonal_only: bool):
        self.accumulators: dict[str, HessianAccumulator] = {}
        self.window: dict[int, tuple[torch.Tensor, str]] = {}  # inputs seen in this window
        self.order: list[str] = []  # the modules in the order they ran (first window)
        self.make = lambda columns: HessianAccumulator(columns, device, diagonal_only)
        self.handles = [module.register_forward_pre_hook(
                            lambda mod, args, name=name: self.add(name, args[0]))
                        for name, module in modules.items()]

    def add(self, name: str, x: torch.Tensor) -> None:
        if name not in self.order:
            self.order.append(name)
        seen = self.window.get(id(x))
        if seen is not None and seen[0] is x:
            self.accumulators[name] = self.accumulators[seen[1]]
            return
        self.window[id(x)] = (x, name)  # holding x keeps its id unique within the window
        if name not in self.accumulators:
            self.accumulators[name] = self.make(x.shape[-1])
        self.accumulators[name].add(x)

    def next_window(self) -> None:
        self.window = {}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.window = {}


def run_layer(layer: nn.Module, hidden: torch.Tensor, layer_kwargs: dict[str, Any]) -> torch.Tensor:
    out = layer(hidden, **layer_kwargs)
    return out[0] if isinstance(out, tuple) else out


def first_pass(layer: nn.Module, hidden: torch.Tensor, layer_kwargs: dict[str, Any],
               stats: InputStatistics, modules: dict[str, nn.Linear], keep_output: bool
               ) -> torch.Tensor | None:
    """Pass 1 over one window: the statistics, and the layer's output if `keep_output`; else
    the forward stops once the last target module (as they ran in the first window) has its
    input."""
    if keep_output or not stats.order:
        return run_layer(layer, hidden, layer_kwargs)

    def stop(module: nn.Module, args: tuple) -> None:
        raise _StopForward

    handle = modules[stats.order[-1]].register_forward_pre_hook(stop)  # after the stats hook
    try:
        run_layer(layer, hidden, layer_kwargs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return None


@torch.no_grad()
def calibrate_sequentially(
    model: nn.Module,
    windows: torch.Tensor,
    targets: dict[int, dict[str, nn.Linear]],
    compress_group: CompressGroup,
    *,
    diagonal_only: bool,
    device: torch.device,
    log: Callable[[str], None] | None = None,
    prepare_layer: PrepareLayer | None = None,
    propagate: str = "compressed",
    forward_dtype: torch.dtype | None = None,
) -> tuple[list[dict], list[dict]]:
    """Compress `targets` (layer index -> {name: linear}) layer by layer; returns the module
    records and one record per decoder layer (relative output error, seconds)."""
    _, layers = decoder_layers(model)
    move_all_but(model, layers, device)
    with forwards_in(forward_dtype, device):
        hidden, layer_kwargs = capture_first_layer_inputs(model, layers, windows, device)
    module_records, layer_records = [], []
    for index, layer in enumerate(layers):
        start = time.perf_counter()
        layer.to(device)
        modules = targets.get(index, {})
        record: dict[str, Any] = {"layer": index, "modules": len(modules)}
        reference = None  # outputs of the layer as it came, if pass 1 will not see it so
        if prepare_layer is not None and modules:
            with forwards_in(forward_dtype, device):
                reference = [run_layer(layer, h, layer_kwargs) for h in hidden]
            # not under autocast: AWQ's search changes weights between forwards
            record.update(prepare_layer(index, layer, hidden, layer_kwargs))
        stats = InputStatistics(modules, device, diagonal_only)
        # outputs pass 1 must keep: all (no pass 2, or it is what the next layer gets), none
        # (prepare_layer kept the reference), else a few to measure the output error
        if not modules or (propagate == "dense" and reference is None):
            keep = len(hidden)
        else:
            keep = 0 if reference is not None else MEASURED_WINDOWS
        dense_out: list[torch.Tensor | None] = []
        try:
            with forwards_in(forward_dtype, device):
                for i, h in enumerate(hidden):  # pass 1
                    stats.next_window()
                    dense_out.append(first_pass(layer, h, layer_kwargs, stats, modules,
                                                keep_output=i < keep))
        finally:
            stats.remove()
        shared: dict[int, list[str]] = {}  # modules that saw the same input share statistics
        for name in modules:
            shared.setdefault(id(stats.accumulators[name]), []).append(name)
        for names in shared.values():
            hessian = stats.accumulators[names[0]].value(names[0])
            module_records += compress_group(index, {n: modules[n] for n in names}, hessian)
        del stats
        if modules and propagate == "dense":  # the uncompressed outputs, as they came
            dense_out = dense_out if reference is None else [*reference]
        elif modules:  # pass 2: what the next layer will see
            moved = total = 0.0
            with forwards_in(forward_dtype, device):
                for i, h in enumerate(hidden):
                    out = run_layer(layer, h, layer_kwargs)
                    before = dense_out[i] if reference is None else reference[i]
                    if before is not None:
                        moved += (out - before).float().pow(2).sum().item()
                        total += before.float().pow(2).sum().item()
                    dense_out[i] = out
            record["output_error"] = moved / max(total, 1e-30)
        layer.to("cpu")
        hidden = [out for out in dense_out if out is not None]
        assert len(hidden) == len(dense_out), "every window has its input to the next layer"
        record["seconds"] = round(time.perf_counter() - start, 3)
        layer_records.append(record)
        if log:
            error = f", output error {record['output_error']:.4g}" if modules else ""
            log(f"layer {index + 1}/{len(layers)}: {len(modules)} modules{error}, "
                f"{record['seconds']:.1f} s")
    return module_records, layer_records
