"""Compression: one module per algorithm, applied layer by layer with calibration data.

    sparsegpt.py  SparseGPT: OBS-style pruning (unstructured or N:M) with weight updates
    wanda.py      Wanda: prune by |W| * ||X||, per output row
    magnitude.py  magnitude pruning (no calibration)
    gptq.py       GPTQ: quantization with error feedback through the inverse Hessian
    rtn.py        round-to-nearest quantization (no calibration)
    awq.py        AWQ: activation-aware scales folded into the layer, then RTN or GPTQ
    quant.py      the min-max integer grid;  hessian.py  X^T X, damping, dead inputs
    calibration.py  text sources and windows;  layerwise.py  sequential calibration
    recipe.py     the recipe (validated);  pipeline.py  plan, compress, save, manifest
    methods.py    the method registry: the one list every other module derives from

Entry points: `compress_model(base_model, recipe, out_dir)` (what `crbench compress` runs),
`compress_cached(base_model, recipe_dict)` (what the runner calls), `cached_path(base_model,
recipe_dict)` (the cached folder if it exists: what a dry run reports), `load_manifest(folder)`.
Importing this package is cheap (no torch): the pipeline is imported when first used.

Recipe fields (TOML file for `crbench compress --recipe`, or a dict for `compress_cached`):

    method        a method of the registry, `crbench.compress.methods` (required):
                  "sparsegpt" | "wanda" | "magnitude" (prune), "gptq" | "rtn" | "awq"
                  (quantize)
    sparsity      pruning: fraction of weights set to zero, 0 < s < 1
    pattern       pruning: "N:M", keep N of every M consecutive inputs ("2:4", "4:8");
                  implies sparsity 1 - N/M
    bits          quantization: 2..8 (default 4)
    group_size    quantization: inputs per grid; 0 = one grid per output channel (default 0;
                  awq 128, as AutoAWQ).
                  Must divide every target layer's input size, else an error (SmolLM2's
                  hidden size 576 takes 64, not 128)
    sym           quantization: symmetric grid (default true; awq false); false = asymmetric
                  (zero point)
    act_order     gptq: quantize inputs in order of decreasing Hessian diagonal (default true,
                  as llm-compressor's and AutoGPTQ's recommended settings; a packed export of
                  it needs a group index per input, or static_groups)
    static_groups gptq: fit every group's grid up front from the original weights, as
                  llm-compressor does (default false: fit each when GPTQ reaches it)
    damp          sparsegpt/gptq: Hessian damping, fraction of its mean diagonal (default 0.01);
                  raised x10 up to 10 when the Hessian is not positive definite, then an
                  error; the value used is recorded per module
    block_size    sparsegpt/gptq: columns per lazy-update block (default 128)
    then          awq: "rtn" (default) or "gptq": how the scaled weights are quantized; with
                  "gptq", act_order/static_groups/damp/block_size apply as for gptq
    duo           awq: scale x^a / (w^(1-a) + 1e-4) (default true), false: x^a alone
    clip          awq: search a clamp range per output row and group, not q/k (default true)
    grid          awq: exponents a tried, 0, 1/grid, ... (default 20)
    calib         sparsegpt/wanda/gptq/awq: calibration text: a .txt file, a .jsonl/.json of rows
                  (`text`, or task `prompt` + model `output` reasoning traces), or
                  `hf:NAME[:CONFIG[:SPLIT]]`; a relative path in a TOML recipe is taken from
                  the recipe's folder, in a dict from the working directory
    calib_samples windows of calibration text (default 32)
    seqlen        tokens per window (default 512)
    seed          which windows (default 0); same recipe + seed -> identical weights
    propagate     calibrated methods: what each next layer is calibrated on: "compressed"
                  (default: the outputs of the layers compressed so far, as the GPTQ and
                  SparseGPT reference code does) or "dense" (the uncompressed model's outputs,
                  as AutoAWQ and llm-compressor's AWQ do; saves one forward per layer)
    dtype         calibrated methods: what the calibration forward passes compute in: "auto"
                  (default: bf16 where this CPU runs bf16 matmuls faster, see `crbench env`;
                  bf16/fp16 on a GPU), "bf16", "fp16" or "fp32". The weights, Hessians and
                  the GPTQ/SparseGPT/AWQ updates stay fp32 whatever it is; the dtype used is
                  in the manifest (`forward_dtype`)
    dense         list of module patterns kept dense (16-bit), e.g. the last layer's MLP:
                      dense = ["layers.-1.mlp.*"]
    overrides     list of {match = pattern or list, dense = true | other settings}, e.g.
                      overrides = [{match = "layers.0.*", bits = 8}]
                  the last matching override wins; `dense` wins over overrides

Patterns: a glob matched against a module's full name or a dotted suffix of it
(`layers.-1.mlp.*`, `*.down_proj`), or `re:` + a regex searched in the name. Layer indices may
count from the end (-1 is the last layer). Only linear layers inside the decoder layers are
compressed; embeddings and lm_head stay dense.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crbench.compress.recipe import Recipe, load_recipe, parse_recipe

__all__ = ["cached_path", "compress_cached", "compress_model", "load_manifest", "load_recipe",
           "parse_recipe", "Recipe"]

CACHE_VERSION = 1  # bump when an algorithm changes what it writes
MANIFEST = "compression.json"  # the pipeline's name for it; here so a cache check needs no torch
JsonDict = dict[str, Any]


def compress_model(base_model: str | Path, recipe: Recipe, out_dir: str | Path, **kwargs: Any
                   ) -> Path:
    """See `crbench.compress.pipeline.compress_model` (imported here on first use)."""
    from crbench.compress.pipeline import compress_model as compress

    return compress(base_model, recipe, out_dir, **kwargs)


def load_manifest(path: str | Path) -> JsonDict:
    """See `crbench.compress.pipeline.load_manifest`."""
    from crbench.compress.pipeline import load_manifest as load

    return load(path)


def cache_entry(base_model: str, recipe: dict[str, Any], cache_root: Path | None = None
                ) -> tuple[Path, Path, Recipe, JsonDict]:
    """(the cache folder for `base_model` compressed by `recipe`, the local base model folder,
    the parsed recipe, the cache key). The folder's name holds a hash of the base model (path
    or hub id, config and a weights fingerprint), the recipe (defaults filled in) and the
    calibration text's sha256, so a changed model, recipe or calibration file gives a new
    entry. Both `compress_cached` and `cached_path` use this one computation."""
    from crbench.compress.calibration import load_source
    from crbench.models import cache_dir

    parsed = parse_recipe(recipe, "recipe")
    model_dir = local_model_folder(base_model)
    key_fields = parsed.model_dump(mode="json")
    if parsed.calib:
        key_fields["calib"] = load_source(parsed.calib)[1]["text_sha256"]
    key = {"version": CACHE_VERSION, "model": model_fingerprint(model_dir), "recipe": key_fields}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_root) if cache_root is not None else cache_dir() / "compressed"
    out = root / f"{Path(str(base_model).rstrip('/')).name}-{parsed.method}-{digest}"
    return out, model_dir, parsed, key


def compress_cached(base_model: str, recipe: dict[str, Any], cache_root: Path | None = None,
                    log: Callable[[str], None] | None = None) -> Path:
    """The folder of `base_model` compressed by `recipe`, compressing it on first use."""
    out, model_dir, parsed, key = cache_entry(base_model, recipe, cache_root)
    if (out / MANIFEST).is_file():
        return out
    return compress_model(model_dir, parsed, out, log=log, extra={"cache_key": key})


def cached_path(base_model: str, recipe: dict[str, Any], cache_root: Path | None = None
                ) -> Path | None:
    """The cached compressed folder if it exists already, else None; compresses nothing.
    (The base model is still resolved: a GGUF or the demo model may be converted once.)"""
    out = cache_entry(base_model, recipe, cache_root)[0]
    return out if (out / MANIFEST).is_file() else None


def local_model_folder(base_model: str) -> Path:
    """A local folder for the model: as given, converted, or the hub snapshot (downloaded)."""
    from crbench.models import resolve_model

    resolved = resolve_model(base_model)
    if Path(resolved).is_dir():
        return Path(resolved)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(resolved, allow_patterns=["*.json", "*.safetensors", "*.txt",
                                                            "*.model", "*.jinja"]))


def model_fingerprint(folder: Path, chunks: int = 16, chunk_bytes: int = 1 << 16) -> JsonDict:
    """Config plus, for each weight file, its size and a hash of its header and of `chunks`
    evenly spaced slices: content-sensitive without reading many GB."""
    files = {}
    for weights in sorted(folder.glob("*.safetensors")):
        size = weights.stat().st_size
        digest = hashlib.sha256()
        with weights.open("rb") as f:
            header_size = int.from_bytes(f.read(8), "little")
            digest.update(f.read(min(header_size, size)))
            for i in range(chunks):
                f.seek(size * i // chunks)
                digest.update(f.read(chunk_bytes))
        files[weights.name] = {"bytes": size, "sampled_sha256": digest.hexdigest()}
    config = (folder / "config.json").read_bytes()
    return {"path": str(folder.resolve()), "config_sha256": hashlib.sha256(config).hexdigest(),
            "weights": files}
