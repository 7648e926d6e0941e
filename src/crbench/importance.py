"""Module importance: which linear modules of a model carry which reasoning behaviour, the way
arXiv 2504.02010 v2 measures it (difference-of-means directions + attribution patching).

For every linear module m (q, k, v, o, gate, up, down) of every decoder layer and every target
behaviour c (backtracking, uncertainty-estimation, example-testing, adding-knowledge):

    positions   a behaviour's positions in a trace: the tokens of its labelled sentences, each
                span from LEAD (5) tokens before its start (`crbench.importance_labels`)
    direction   u = mean output of m over the behaviour's positions (all traces) minus its mean
                over every trace token, rescaled to the norm of that overall mean
    attribution L = mean next-token loss of the predictions made at the behaviour's positions;
                |u . dL/da_t| averaged over those positions t (a = m's output), over all traces
    importance  attribution divided by its sum over modules: each behaviour's table sums to 1;
                "all" = the mean of the behaviours' tables (also sums to 1)
    shift       importance of the parent model (same traces) minus this model's:
                original - compressed, positive where the compressed model lost importance

The model runs in fp32 (on CPU unless told), one trace at a time: one forward pass without
gradients for the means, then one forward and one backward pass per behaviour with gradients
kept on the module outputs only (the weights never get gradients). The result is a typed record
(`ImportanceResult`, `crbench.importance_io`) written as importance.json.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from crbench.cues import TARGET_BEHAVIOURS
from crbench.importance_labels import TraceLabels, labelled_text
from crbench.records import GenerationRecord

if TYPE_CHECKING:
    from transformers import PreTrainedModel

LEAD = 5  # tokens before a span's start that count to it (the study's choice)
ALL = "all"  # the key of the behaviours' mean importance
Tokenizer = Any  # a Hugging Face tokenizer (untyped library object)


@dataclass(frozen=True)
class TokenTrace:
    """A trace as token ids, with the positions of each behaviour and of the trace itself."""

    key: str
    ids: list[int]
    trace_positions: list[int]  # the tokens of what the model wrote (not the prompt)
    behaviour_positions: dict[str, list[int]]  # behaviour -> sorted positions (lead included)


@dataclass(frozen=True)
class LinearModule:
    name: str  # full name, e.g. model.layers.3.mlp.gate_proj
    layer: int
    kind: str  # q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj
    params: int  # weight elements
    module: nn.Linear = field(repr=False, compare=False)


def decoder_linears(model: nn.Module) -> list[LinearModule]:
    """Every linear module inside the decoder layers (what compression touches), layer order."""
    from crbench.compress.layerwise import decoder_layers

    prefix, layers = decoder_layers(model)
    out = []
    for index, layer in enumerate(layers):
        for short, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                out.append(LinearModule(f"{prefix}.{index}.{short}", index,
                                        short.rsplit(".", 1)[-1], module.weight.numel(), module))
    return out


# --- traces as tokens -----------------------------------------------------------------------


def prompt_prefix(g: GenerationRecord, tokenizer: Tokenizer) -> str:
    """The prompt as the model saw it: plain text, or chat messages through the template."""
    import json

    from crbench.probes import chat_text

    text = g.prompt_text
    return text if text is not None else chat_text(tokenizer, json.loads(g.prompt))


def token_trace(g: GenerationRecord, labels: TraceLabels, tokenizer: Tokenizer, max_tokens: int,
                behaviours: Sequence[str] = TARGET_BEHAVIOURS) -> TokenTrace:
    """Tokenize prompt + trace (cut to `max_tokens` tokens) and map labelled sentences onto
    token positions: a token belongs to a sentence when their character ranges overlap."""
    prefix = prompt_prefix(g, tokenizer)
    text = labelled_text(g)
    enc = tokenizer(prefix + text, return_offsets_mapping=True, add_special_tokens=True,
                    truncation=True, max_length=max_tokens)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    start = len(prefix)
    trace = [i for i, (a, b) in enumerate(offsets) if b > start or (a == b and a >= start)]
    positions: dict[str, list[int]] = {}
    for behaviour in behaviours:
        chosen: set[int] = set()
        for s, e in labels.spans(behaviour):
            inside = [i for i, (a, b) in enumerate(offsets) if a < start + e and b > start + s]
            if inside:
                chosen.update(range(max(0, inside[0] - LEAD), inside[-1] + 1))
        positions[behaviour] = sorted(chosen)
    return TokenTrace(g.key, ids, trace, positions)


# --- hooks ----------------------------------------------------------------------------------


class OutputCapture:
    """Forward hooks that keep each linear module's output (and, when gradients are on, make
    it keep its gradient). Used as a context manager so the hooks always come off."""

    def __init__(self, model: PreTrainedModel, modules: Sequence[LinearModule], grads: bool):
        self.model, self.modules, self.grads = model, modules, grads
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> OutputCapture:
        for m in self.modules:
            self.handles.append(m.module.register_forward_hook(self._keeper(m.name)))
        if self.grads:  # the graph starts at the embeddings, the weights stay frozen
            embeddings = self.model.get_input_embeddings()
            self.handles.append(embeddings.register_forward_hook(_needs_grad))
        return self

    def _keeper(self, name: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def keep(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if self.grads and output.requires_grad:
                output.retain_grad()
            self.outputs[name] = output
        return keep

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.outputs.clear()


def _needs_grad(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.detach().requires_grad_(True)


def run_model(model: nn.Module, ids: list[int], device: torch.device) -> torch.Tensor:
    """Logits [T, vocab] of one sequence."""
    batch = torch.tensor([ids], device=device)
    return model(input_ids=batch, use_cache=False).logits[0].float()


# --- the two passes -------------------------------------------------------------------------


@dataclass
class Means:
    """Sums of module outputs over all trace tokens and over each behaviour's positions."""

    total: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0
    by_behaviour: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    behaviour_count: dict[str, int] = field(default_factory=dict)

    def add(self, outputs: dict[str, torch.Tensor], trace: TokenTrace) -> None:
        self.count += len(trace.trace_positions)
        for name, out in outputs.items():
            a = out[0].detach().double()
            _accumulate(self.total, name, a[trace.trace_positions].sum(0))
            for behaviour, pos in trace.behaviour_positions.items():
                if pos:
                    _accumulate(self.by_behaviour.setdefault(behaviour, {}), name,
                                a[pos].sum(0))
        for behaviour, pos in trace.behaviour_positions.items():
            self.behaviour_count[behaviour] = self.behaviour_count.get(behaviour, 0) + len(pos)

    def directions(self) -> dict[str, dict[str, torch.Tensor]]:
        """behaviour -> module -> u (difference of means, rescaled to the overall mean's norm)."""
        out: dict[str, dict[str, torch.Tensor]] = {}
        for behaviour, sums in self.by_behaviour.items():
            n = self.behaviour_count[behaviour]
            for name, s in sums.items():
                overall = self.total[name] / max(self.count, 1)
                diff = s / n - overall
                norm = diff.norm()
                scale = overall.norm() / norm if norm > 0 else torch.zeros((), dtype=diff.dtype)
                out.setdefault(behaviour, {})[name] = (diff * scale).float()
        return out


def _accumulate(sums: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
    sums[name] = sums[name] + value if name in sums else value


def collect_means(model: PreTrainedModel, modules: Sequence[LinearModule],
                  traces: Sequence[TokenTrace], device: torch.device) -> Means:
    means = Means()
    with torch.no_grad(), OutputCapture(model, modules, grads=False) as capture:
        for trace in traces:
            run_model(model, trace.ids, device)
            means.add(capture.outputs, trace)
    return means


def next_token_loss(logits: torch.Tensor, ids: list[int], positions: list[int]) -> torch.Tensor:
    """Mean next-token loss of the predictions made at `positions` (the last has no target)."""
    pos = [p for p in positions if p + 1 < len(ids)]
    target = torch.tensor([ids[p + 1] for p in pos], device=logits.device)
    return nn.functional.cross_entropy(logits[pos], target)


@dataclass
class Attribution:
    """Sums of |u . dL/da_t| over positions, per behaviour and module, and position counts."""

    sums: dict[str, dict[str, float]] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)

    def mean(self, behaviour: str, name: str) -> float:
        return self.sums.get(behaviour, {}).get(name, 0.0) / max(self.positions.get(behaviour,
                                                                                    0), 1)


def attribute(model: PreTrainedModel, modules: Sequence[LinearModule], traces: Sequence[TokenTrace],
              directions: dict[str, dict[str, torch.Tensor]], device: torch.device) -> Attribution:
    result = Attribution()
    with OutputCapture(model, modules, grads=True) as capture:
        for trace in traces:
            wanted = [(b, p) for b, p in trace.behaviour_positions.items()
                      if b in directions and any(q + 1 < len(trace.ids) for q in p)]
            if not wanted:
                continue
            logits = run_model(model, trace.ids, device)
            for i, (behaviour, pos) in enumerate(wanted):
                for m in modules:
                    capture.outputs[m.name].grad = None
                loss = next_token_loss(logits, trace.ids, pos)
                loss.backward(retain_graph=i + 1 < len(wanted))
                sums = result.sums.setdefault(behaviour, {})
                for m in modules:
                    grad = capture.outputs[m.name].grad
                    if grad is None:
                        continue
                    u = directions[behaviour][m.name]
                    value = float((grad[0, pos].float() @ u).abs().sum())
                    sums[m.name] = sums.get(m.name, 0.0) + value
                result.positions[behaviour] = result.positions.get(behaviour, 0) + len(pos)
    return result


def normalised(attribution: Attribution, modules: Sequence[LinearModule],
               behaviours: Sequence[str]) -> dict[str, dict[str, float]]:
    """module -> {behaviour: share of that behaviour's total attribution, "all": their mean}."""
    table: dict[str, dict[str, float]] = {m.name: {} for m in modules}
    present = []
    for behaviour in behaviours:
        raw = {m.name: attribution.mean(behaviour, m.name) for m in modules}
        total = sum(raw.values())
        if total > 0:
            present.append(behaviour)
            for name, value in raw.items():
                table[name][behaviour] = value / total
    for row in table.values():
        row[ALL] = sum(row[b] for b in present) / len(present) if present else 0.0
    return table
