"""Variant preparation: the model folder an engine loads for each variant of a plan, what the
variant is (its `VariantRecord`: method, settings, size, perplexity), and its engine.

    check_local_models  refuse a bad local model folder before the store is touched
    prepare_variant     dense: the model itself; otherwise the method registry's `build`
                        (compression, cached) makes the folder; then size and description
    build_state         what a dry run says: cached already, or to be built
    make_variant_engine the engine for one variant, with the spec's engine options

Which model sources exist and how each becomes a folder is `crbench.models.model_source` /
`local_model`; which methods exist and how each builds its folder is
`crbench.compress.methods`. Nothing here decides either by name.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crbench.compress.methods import load
from crbench.engines.base import Engine
from crbench.errors import InputError
from crbench.lineage import Lineage, bits_per_weight, read_lineage, stored_bits
from crbench.models import check_source, local_model
from crbench.plan import JsonDict, Plan, PlannedVariant
from crbench.records import VariantRecord


@dataclass(frozen=True)
class PreparedVariant:
    model_path: str  # what the engine is given (folder, hub id, GGUF file, or server URL)
    record: VariantRecord  # its row of the `variants` table


def check_local_models(plan: Plan) -> None:
    """Refuse a local model folder without config or weights now, naming the spec field.
    (The demo model and GGUF files are converted later, when first needed.)"""
    for variant in plan.variants:
        if variant.recipe is not None:
            continue  # its base model is a dense variant of the plan too
        try:
            check_source(variant.source)
        except InputError as exc:
            raise InputError(exc.path or plan.spec_path, exc.message,
                             exc.place or f"[models.{variant.label}].source") from None


def engine_model(variant: PlannedVariant) -> str:
    """What the engine of a dense variant loads: llama.cpp reads a GGUF file itself, a server
    is its URL; hf and vLLM get a local folder (converted on first use) or a hub id."""
    source = variant.source
    if variant.model.engine == "llamacpp" or source.kind == "server":
        return source.ref
    return local_model(source)


def prepare_variant(plan: Plan, variant: PlannedVariant) -> PreparedVariant:
    """The model path an engine loads for this variant (built on first use, cached by its
    method's `build`) and its row for the `variants` table."""
    if variant.method is None:
        path = engine_model(variant)
        return PreparedVariant(path, describe_model(variant, path))

    def log(message: str) -> None:
        print(f"{variant.method_name} {variant.label}: {message}", file=sys.stderr, flush=True)

    build = load(variant.method.build)
    folder = Path(build(local_model(variant.source), variant.recipe_for_build(), log=log))
    return PreparedVariant(str(folder), describe_built(variant, folder))


def describe_model(variant: PlannedVariant, path: str) -> VariantRecord:
    """A spec model's row. What a local folder or GGUF file is (a GGUF quantization, a GPTQ,
    AWQ or compressed-tensors checkpoint, a distilled model, or dense) is read from the file
    itself (`crbench.lineage`); bits per weight from what is stored. What the spec declares
    (`parent`, `method`, `bits`, `group_size`, `sparsity`) wins over what is read: a hub model
    or a server has nothing to read. A model with a parent is grouped with the model its
    parents start from (`base_model`), so the report shows it beside them."""
    source = variant.source
    lineage = Lineage()
    if source.kind in ("folder", "gguf", "named"):
        try:  # the written source: a GGUF file is what the model is, also once converted
            lineage = read_lineage(source.ref if source.kind != "named" else path)
        except InputError as exc:
            print(f"crbench: {variant.label}: lineage not read ({exc})", file=sys.stderr)
    stored = Path(source.ref if source.kind == "gguf" else path)  # not its converted copy
    return VariantRecord(variant=variant.label, base_model=variant.made_from or variant.base_model,
                         model_path=path, size_bytes=weights_size(stored),
                         teacher=lineage.details.get("teacher"),
                         **{**lineage.record_fields(), **variant.model.lineage})


def describe_built(variant: PlannedVariant, path: Path) -> VariantRecord:
    """A built variant's row: settings from its manifest (the builder's, defaults filled in),
    pruning or quantization columns by the method's kind, and its compact size."""
    method = variant.method
    assert method is not None
    manifest = read_manifest(path) or {}
    settings = {**variant.recipe_for_build(), **manifest.get("recipe", {})}
    prune, quant = method.kind == "prune", method.kind == "quant"
    return VariantRecord(
        variant=variant.label,
        base_model=variant.base_model,
        method=method.name,
        parent=variant.base_model,
        sparsity=settings.get("sparsity") if prune else None,
        pattern=settings.get("pattern") if prune else None,
        bits=settings.get("bits") if quant else None,
        group_size=(settings.get("group_size") or None) if quant else None,
        bits_per_weight=bits_per_weight(path),
        size_bytes=effective_size(path),
        model_path=str(path),
        manifest=json.dumps(manifest, default=str) if manifest else None,
        teacher=settings.get("teacher"),  # distilled variants: what the student learned from
    )


def build_state(variant: PlannedVariant) -> str:
    """Whether a variant's model is built (cached) already; builds nothing. The method's
    registry line says how to look (`cached`); a hub or server model is not looked up."""
    method = variant.method
    if method is None or method.cached is None:
        return "will be built unless cached"
    if variant.source.kind in ("hub", "server"):
        return "will be built unless cached (hub model: cache not checked)"
    path = load(method.cached)(local_model(variant.source), variant.recipe_for_build())
    return f"cached at {path}" if path else "will be built"


def read_manifest(path: Path) -> JsonDict | None:
    from crbench.compress import load_manifest

    try:
        return load_manifest(path)
    except InputError:
        return None


# --- size -----------------------------------------------------------------------------------


def weights_size(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) or None


def effective_size(path: Path) -> int | None:
    """Bytes the weights take stored compactly: the bits `crbench.lineage` counts for bits per
    weight, over 8. crbench saves quantized weights dequantized (fake-quant), so their size on
    disk says nothing: a quantized module counts bits/8 per weight plus a 16-bit scale (and,
    asymmetric, a zero point) per group, any other float tensor at most 2 bytes. Pruned weights
    count dense (sparse formats differ too much to pick one; `sparsity` says how many are 0)."""
    bits, _ = stored_bits(path)
    return int(bits / 8) if bits else weights_size(path)


# --- perplexity and engines -----------------------------------------------------------------


def measure_ppl(plan: Plan, model_path: str, device: str | None) -> float | None:
    """Perplexity of the variant on the spec's [ppl] text, if the spec asks for it."""
    if plan.spec.ppl is None or plan.ppl_data is None:
        return None
    from crbench.ppl import perplexity

    result = perplexity(model_path, str(plan.ppl_data), seqlen=plan.spec.ppl.seqlen,
                        device=device)
    return float(result["ppl"])


def make_variant_engine(plan: Plan, variant: PlannedVariant, model_path: str) -> Engine:
    from crbench.engines import make_engine

    options: dict[str, Any] = dict(variant.model.options)  # Any: engine options, engine's own
    model_arg = model_path
    if variant.model.engine == "openai":
        model_arg = options.pop("model")
        options["base_url"] = variant.source.ref
    try:
        return make_engine(variant.model.engine, model_arg, **options)
    except (TypeError, ValueError, ImportError) as exc:  # an option it does not take, or
        # a bad value, or an engine whose package is not installed
        raise InputError(plan.spec_path, f"engine {variant.model.engine!r}: {exc}",
                         f"[models.{variant.base_model}]") from None

