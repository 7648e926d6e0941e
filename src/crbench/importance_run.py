"""`crbench importance RUN_DIR`: module importance of a variant's model on its stored traces,
checked the direct way, written to RUN_DIR/importance/<variant>/ (`crbench.importance_output`).

    traces    the variant's stored generations, the first `per_task` of each task (item order)
    labels    `crbench.importance_labels` -> RUN_DIR/importance/labels.jsonl
    model     the variant's model as the store records it (or --model), fp32 on CPU by default
    parent    optional: a second model on the same traces; shift = parent - this
    validate  `crbench.importance_validate`: 3-bit RTN of one module at a time, Spearman's rho
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from crbench.cues import PRIORITY, TARGET_BEHAVIOURS
from crbench.errors import InputError
from crbench.importance import (
    LinearModule,
    TokenTrace,
    attribute,
    collect_means,
    decoder_linears,
    normalised,
    token_trace,
)
from crbench.importance_io import ImportanceResult, ModuleRow, Validation
from crbench.importance_labels import LABELS_FILE, AskModel, label_traces
from crbench.records import GenerationRecord
from crbench.store_read import RunData


@dataclass(frozen=True)
class ImportanceSettings:
    variant: str | None = None  # whose traces and model; None: the run's one root variant
    model: str | None = None  # load this instead of the variant's recorded model
    parent: str | None = None  # a variant (its recorded model) or a model, for the shift
    per_task: int = 30  # traces per task (the study: the first 30 per dataset)
    max_tokens: int = 1024  # prompt + trace tokens kept per trace
    validate_layers: str | None = None  # `importance_validate.parse_layers`
    bits: int = 3
    group_size: int = 0
    device: str = "cpu"
    labeller_url: str | None = None  # an OpenAI-compatible server labels instead of the rules
    labeller_model: str = ""
    behaviours: tuple[str, ...] = TARGET_BEHAVIOURS  # the study's four; any of the taxonomy

    def __post_init__(self) -> None:
        unknown = [b for b in self.behaviours if b not in PRIORITY]
        if unknown or not self.behaviours:
            raise InputError(None, f"behaviours of the taxonomy ({', '.join(PRIORITY)}), got "
                                   f"{', '.join(unknown) or 'none'}", "--behaviours")
        if self.per_task < 1:
            raise InputError(None, f"must be at least 1, got {self.per_task}", "--traces")
        if self.max_tokens < 16:
            raise InputError(None, f"must be at least 16, got {self.max_tokens}",
                             "--max-tokens")
        if not 2 <= self.bits <= 8:
            raise InputError(None, f"must be 2..8, got {self.bits}", "--bits")


def choose_variant(run: RunData, wanted: str | None) -> str:
    with_rows = list(dict.fromkeys(r.generation.variant for r in run.rows))
    if wanted is not None:
        if wanted not in with_rows:
            raise InputError(run.path, f"no stored traces of variant {wanted!r} (variants: "
                                       f"{', '.join(with_rows) or 'none'})", "--variant")
        return wanted
    roots = [v for v in with_rows if run.variants.get(v) is None
             or run.variants[v].parent is None]
    if len(with_rows) == 1 or len(roots) == 1:
        return with_rows[0] if len(with_rows) == 1 else roots[0]
    raise InputError(run.path, "several variants; choose one with --variant "
                               f"({', '.join(with_rows)})", "--variant")


def select_traces(run: RunData, variant: str, per_task: int) -> list[GenerationRecord]:
    rows = sorted((r.generation for r in run.rows
                   if r.generation.variant == variant and not r.superseded),
                  key=lambda g: (g.task, g.item_index, g.repeat))
    taken: dict[str, int] = {}
    out = []
    for g in rows:
        if taken.get(g.task, 0) < per_task:
            taken[g.task] = taken.get(g.task, 0) + 1
            out.append(g)
    return out


def model_of(run: RunData, label: str, given: str | None) -> str:
    if given is not None:
        return given
    record = run.variants.get(label)
    if record is not None and record.model_path:
        return record.model_path
    if record is None and label not in {r.generation.variant for r in run.rows}:
        return label  # not a variant of the run: a model (folder, name, hub id)
    raise InputError(run.path, f"the store records no model for variant {label!r}; pass --model")


@dataclass
class ModelImportance:
    model: str
    modules: list[LinearModule]
    table: dict[str, dict[str, float]]  # module -> behaviour/"all" -> share
    positions: dict[str, int]
    seconds: float


def model_importance(model_ref: str, generations: Sequence[GenerationRecord],
                     labels: dict, settings: ImportanceSettings,
                     stream: TextIO) -> tuple[ModelImportance, torch.nn.Module, list[TokenTrace]]:
    from crbench.models import load_causal_lm

    started = time.perf_counter()
    model, tokenizer = load_causal_lm(model_ref, device=settings.device, dtype="float32")
    model.requires_grad_(False)
    traces = [token_trace(g, labels[g.key], tokenizer, settings.max_tokens, settings.behaviours)
              for g in generations]
    modules = decoder_linears(model)
    device = torch.device(settings.device)
    print(f"{model_ref}: means over {len(traces)} traces", file=stream, flush=True)
    means = collect_means(model, modules, traces, device)
    print(f"{model_ref}: attribution ({len(modules)} modules)", file=stream, flush=True)
    attribution = attribute(model, modules, traces, means.directions(), device)
    table = normalised(attribution, modules, settings.behaviours)
    found = ModelImportance(model_ref, modules, table, dict(attribution.positions),
                            time.perf_counter() - started)
    return found, model, traces


def run_importance(run_dir: str | Path, settings: ImportanceSettings, *,
                   ask: AskModel | None = None, stream: TextIO | None = None
                   ) -> ImportanceResult:
    """Compute (and validate) the importance of the variant's modules; nothing is written."""
    from crbench.importance_labels import model_asker
    from crbench.importance_validate import parse_layers, validate
    from crbench.store_read import read_run

    stream = stream or sys.stderr
    if ask is None and settings.labeller_url is not None:
        if not settings.labeller_model:
            raise InputError(None, "--labeller-url needs --labeller-model", "--labeller-model")
        ask = model_asker(settings.labeller_url, settings.labeller_model)
    parse_layers(settings.validate_layers, 10**6)  # a typo is said now, the range once loaded
    run = read_run(run_dir)
    variant = choose_variant(run, settings.variant)
    generations = select_traces(run, variant, settings.per_task)
    labels = label_traces(generations, Path(run_dir) / "importance" / LABELS_FILE, ask=ask,
                          model_name=settings.labeller_model)
    found = Counter(s.label for g in generations for s in labels[g.key].sentences)
    if not any(found[b] for b in settings.behaviours):
        raise InputError(run.path, f"no sentence of the {len(generations)} traces of {variant!r} "
                         f"shows {', '.join(settings.behaviours)} (labels found: "
                         + (", ".join(f"{k} {n}" for k, n in found.most_common()) or "none")
                         + "); see --behaviours", "--behaviours")
    main, model, traces = model_importance(model_of(run, variant, settings.model), generations,
                                           labels, settings, stream)
    if not main.positions:
        raise InputError(run.path, f"no behaviour was found in the {len(traces)} traces of "
                                   f"{variant!r} (nothing to attribute)")
    seconds = {"importance": main.seconds}
    validation: Validation | None = None
    increases: dict[str, dict[str, float]] = {}
    layers = parse_layers(settings.validate_layers, 1 + max(m.layer for m in main.modules))
    if layers:
        print(f"validating: {len(layers) * 7} modules at {settings.bits} bits", file=stream,
              flush=True)
        validation, increases = validate(model, main.modules, traces, main.table, layers,
                                         torch.device(settings.device), bits=settings.bits,
                                         group_size=settings.group_size)
        seconds["validation"] = validation.seconds
    del model
    parent = None
    if settings.parent is not None:
        parent, _, _ = model_importance(model_of(run, settings.parent, None), generations,
                                        labels, settings, stream)
        seconds["parent"] = parent.seconds
    return build_result(main, variant, settings, generations, labels, traces, validation,
                        increases, parent, seconds)


def build_result(main: ModelImportance, variant: str, settings: ImportanceSettings,
                 generations: Sequence[GenerationRecord], labels: dict,
                 traces: Sequence[TokenTrace], validation: Validation | None,
                 increases: dict[str, dict[str, float]], parent: ModelImportance | None,
                 seconds: dict[str, float]) -> ImportanceResult:
    rows = []
    for m in main.modules:
        mine = main.table[m.name]
        theirs = parent.table.get(m.name) if parent is not None else None
        rows.append(ModuleRow(
            name=m.name, layer=m.layer, kind=m.kind, params=m.params, importance=mine,
            parent_importance=theirs,
            shift={k: theirs[k] - v for k, v in mine.items() if k in theirs} if theirs else None,
            loss_increase=increases.get(m.name)))
    behaviours = [b for b in settings.behaviours if b in main.positions]
    labellers = sorted({labels[g.key].labeller for g in generations})
    return ImportanceResult(
        model=main.model, variant=variant, parent=settings.parent, labeller=",".join(labellers),
        traces=len(traces), trace_tokens=sum(len(t.trace_positions) for t in traces),
        max_tokens=settings.max_tokens, behaviours=behaviours, positions=main.positions,
        modules=rows, validation=validation, seconds=seconds)

