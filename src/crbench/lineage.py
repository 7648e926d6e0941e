"""What a model is, read from the model itself: method, nominal bits, group size, effective bits
per weight and sparsity, for models crbench did not make as well as for its own.

    GGUF file        tensor types from the header (gguf's GGUFReader): the dominant quantized
                     type gives the nominal bits and block size; bits per weight are the stored
                     bytes over the parameter count of every tensor
    checkpoint       config.json `quantization_config`: AWQ (quant_method "awq": bits,
                     group_size, zero_point), GPTQ ("gptq": bits, group_size, desc_act, sym),
                     compressed-tensors (config_groups' weights: num_bits, group_size, format;
                     ignore list; sparsity_config; the method from llm-compressor's recipe.yaml
                     when it is there), fp8, bitsandbytes
    crbench folder   compression.json (the manifest): the recipe's method and settings,
                     measured sparsity of the compressed layers
    distilled folder distill.json (`crbench distill`'s manifest): method "distill", its teacher
    anything else    dense, bits per weight from the stored dtype

Effective bits per weight come from what is stored: every tensor (embeddings, norms, kept-dense
modules) at its stored size, group scales, zero points and group indices included, over the
number of parameters. crbench's own compressed folders are counted as a packed export would
store them, since crbench saves them in the dtype it computed in (fp32 on a CPU): a quantized
module at `bits` per weight plus a 16-bit scale (and, asymmetric, a 16-bit zero point) per
group, every float tensor that was not quantized at 16 bits (at most: min(stored, 16)). Dense
and distilled folders, GGUF files and published checkpoints count what is stored.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crbench.errors import InputError
from crbench.records import DENSE

JsonDict = dict[str, Any]
DTYPE_BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "U32": 32,
              "I16": 16, "U16": 16, "I8": 8, "U8": 8, "BOOL": 8, "F8_E4M3": 8, "F8_E5M2": 8}
SCALE_BITS = 16  # a 16-bit scale (and zero point) per quantization group
EXPORT_FLOAT_BITS = 16  # crbench's compressed folders: an unquantized float tensor, exported
FLOATS = ("F64", "F32", "F16", "BF16")
# Packed low-bit weights: several weights per stored integer.
PACKED = ("qweight", "weight_packed")
# Stored beside a quantized weight; counted in the bits, not in the parameters.
AUXILIARY = ("scales", "qzeros", "g_idx", "weight_scale", "weight_zero_point", "weight_shape",
             "weight_g_idx", "weight_global_scale", "input_scale", "input_global_scale",
             "weight_scale_inv")
MODIFIERS = {"AWQModifier": "awq", "GPTQModifier": "gptq", "SparseGPTModifier": "sparsegpt",
             "WandaPruningModifier": "wanda", "MagnitudePruningModifier": "magnitude",
             "QuantizationModifier": "rtn"}


@dataclass(frozen=True)
class Lineage:
    """The `crbench.records.VariantRecord` fields a model tells about itself, plus details."""

    method: str = DENSE
    bits: float | None = None  # nominal weight bits (None: 16/32-bit)
    group_size: int | None = None
    bits_per_weight: float | None = None
    sparsity: float | None = None
    pattern: str | None = None
    details: JsonDict = field(default_factory=dict)  # zero_point, desc_act, format, ignore, ...

    def record_fields(self) -> JsonDict:
        """The fields as `VariantRecord(**...)` takes them (details left out)."""
        fields = asdict(self)
        fields.pop("details")
        return fields


def read_lineage(path: str | Path) -> Lineage:
    """The lineage of a GGUF file or a model folder (see the module docstring)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return gguf_lineage(path)
    if not path.is_dir():
        raise InputError(path, "not a model folder or a .gguf file")
    if (path / "compression.json").is_file():
        return crbench_lineage(path)
    from crbench.distill import MANIFEST as DISTILL_MANIFEST

    if (path / DISTILL_MANIFEST).is_file():
        return distilled_lineage(path / DISTILL_MANIFEST)
    config = read_json(path / "config.json") if (path / "config.json").is_file() else {}
    quantization = config.get("quantization_config")
    if quantization is None:
        return Lineage(bits_per_weight=bits_per_weight(path))
    if not isinstance(quantization, dict):
        raise InputError(path / "config.json", "is not a table", "quantization_config")
    return checkpoint_lineage(path, quantization)


def bits_per_weight(path: str | Path) -> float | None:
    """Effective bits per weight of what is stored in a folder or GGUF file; None without
    weights (or without parameters)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return gguf_lineage(path).bits_per_weight
    bits, params = stored_bits(path)
    return bits / params if params else None


def stored_bits(folder: Path) -> tuple[float, float]:
    """(bits, parameters) of a model folder's weights, counted as the module docstring says
    ((0, 0) for a folder without safetensors files)."""
    if not folder.is_dir():
        return 0.0, 0.0
    modules: dict[str, JsonDict] = {}
    nominal: float | None = None
    float_cap: int | None = None
    if (folder / "compression.json").is_file():
        manifest = read_json(folder / "compression.json")
        modules = {f"{m['module']}.weight": m for m in manifest.get("modules", [])
                   if isinstance(m, dict) and not m.get("kept_dense") and m.get("bits")}
        float_cap = EXPORT_FLOAT_BITS
    elif (folder / "config.json").is_file():
        quantization = read_json(folder / "config.json").get("quantization_config")
        if isinstance(quantization, dict):
            nominal = checkpoint_lineage(folder, quantization, measure=False).bits
    bits = params = 0.0
    for name, shape, dtype in stored_tensors(folder):
        tensor_bits, tensor_params = tensor_cost(name, shape, dtype, modules.get(name), nominal,
                                                 float_cap)
        bits += tensor_bits
        params += tensor_params
    return bits, params


def tensor_cost(name: str, shape: list[int], dtype: str, module: JsonDict | None,
                nominal: float | None, float_cap: int | None = None) -> tuple[float, float]:
    """(stored bits, parameters) of one stored tensor. `module`: its compression.json record
    when crbench quantized it; `nominal`: a published checkpoint's bits (packed tensors);
    `float_cap`: the most bits an unquantized float tensor counts (crbench's own folders)."""
    numel = math.prod(shape)
    stored = numel * DTYPE_BITS.get(dtype, 32)
    short = name.rsplit(".", 1)[-1]
    if short in AUXILIARY:
        return stored, 0.0
    if short in PACKED and nominal and dtype in ("I32", "U32", "I16", "U16", "I8", "U8"):
        return stored, stored / nominal  # each stored integer holds bits/nominal weights
    if module is not None and len(shape) == 2:  # crbench's fake-quantized weight
        rows, cols = shape
        groups = rows * math.ceil(cols / (module.get("group_size") or cols))
        per_group = SCALE_BITS * (1 if module.get("sym", True) else 2)
        return numel * float(module["bits"]) + groups * per_group, float(numel)
    if float_cap is not None and dtype in FLOATS:
        return numel * min(DTYPE_BITS[dtype], float_cap), float(numel)
    return stored, float(numel)


def stored_tensors(folder: Path) -> list[tuple[str, list[int], str]]:
    """(name, shape, dtype) of every tensor in the folder's safetensors files (headers only)."""
    found = []
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with file.open("rb") as f:
                size = int.from_bytes(f.read(8), "little")
                if size <= 0 or size > file.stat().st_size:
                    raise ValueError("bad header size")
                header = json.loads(f.read(size))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(file, f"not a safetensors file ({exc})") from None
        for name, info in header.items():
            if name != "__metadata__" and isinstance(info, dict):
                found.append((name, list(info.get("shape", [])), str(info.get("dtype"))))
    return found


def read_json(file: Path) -> JsonDict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(file, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(file, f"not valid JSON: {exc.msg}", f"line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise InputError(file, "expected a JSON object")
    return data


# --- published checkpoints --------------------------------------------------------------------


def checkpoint_lineage(folder: Path, config: JsonDict, measure: bool = True) -> Lineage:
    """From a `quantization_config` (AWQ, GPTQ, compressed-tensors, fp8, bitsandbytes)."""
    where = folder / "config.json"
    kind = str(config.get("quant_method", "")).lower()
    bits: float | None
    group: int | None = None
    details: JsonDict = {}
    method, pattern, sparsity = kind or "quantized", None, None
    if kind in ("awq", "gptq"):
        bits = number(config, ("bits", "w_bit"), where)
        group = group_size(config.get("group_size", config.get("q_group_size")))
        keys = ("zero_point", "version") if kind == "awq" else ("desc_act", "sym", "static_groups")
        details = {k: config[k] for k in keys if k in config}
        ignored = config.get("modules_to_not_convert")
        if ignored:
            details["ignore"] = ignored
    elif kind == "compressed-tensors":
        bits, group, details = compressed_tensors_weights(config, where)
        method = llmcompressor_method(folder) or kind
        sparse = config.get("sparsity_config") or {}
        if isinstance(sparse, dict) and sparse.get("global_sparsity") is not None:
            sparsity = float(sparse["global_sparsity"])
            structure = str(sparse.get("sparsity_structure", ""))
            pattern = structure if re.fullmatch(r"\d+:\d+", structure) else None
    elif kind == "fp8":
        bits, details = 8, {k: config[k] for k in ("weight_block_size",) if k in config}
    elif kind == "bitsandbytes":
        bits = 4 if config.get("load_in_4bit") else 8 if config.get("load_in_8bit") else None
    else:
        bits = number(config, ("bits",), where) if "bits" in config else None
    lineage = Lineage(method, bits, group, None, sparsity, pattern, details)
    if not measure:
        return lineage
    return Lineage(**{**asdict(lineage), "bits_per_weight": bits_per_weight(folder)})


def compressed_tensors_weights(config: JsonDict, where: Path
                               ) -> tuple[float | None, int | None, JsonDict]:
    """(bits, group size, details) from compressed-tensors' config_groups."""
    groups = config.get("config_groups") or {}
    if not isinstance(groups, dict):
        raise InputError(where, "is not a table", "quantization_config.config_groups")
    weights = [g["weights"] for g in groups.values()
               if isinstance(g, dict) and isinstance(g.get("weights"), dict)]
    details: JsonDict = {k: config[k] for k in ("format", "ignore") if config.get(k)}
    if not weights:
        return None, None, details
    place = "quantization_config.config_groups"
    all_bits = {number(w, ("num_bits",), where, place) for w in weights}
    sizes = {group_size(w.get("group_size")) if w.get("strategy", "group") == "group" else None
             for w in weights}
    details.update({k: weights[0][k] for k in ("type", "symmetric", "strategy", "actorder")
                    if k in weights[0]})
    return (all_bits.pop() if len(all_bits) == 1 else None,
            sizes.pop() if len(sizes) == 1 else None, details)


def llmcompressor_method(folder: Path) -> str | None:
    """The algorithm named in llm-compressor's recipe.yaml beside the weights, if any."""
    recipe = folder / "recipe.yaml"
    if not recipe.is_file():
        return None
    text = recipe.read_text(encoding="utf-8", errors="replace")
    found = [method for name, method in MODIFIERS.items() if re.search(rf"\b{name}\b", text)]
    return found[0] if found else None


def number(config: JsonDict, keys: tuple[str, ...], where: Path,
           place: str = "quantization_config") -> float:
    for key in keys:
        value = config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return value
    raise InputError(where, f"needs a positive number in {' or '.join(keys)}", place)


def group_size(value: object) -> int | None:
    """A group size as stored (-1, 0, None: per output channel)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


# --- GGUF files and crbench's own folders ----------------------------------------------------


def gguf_lineage(path: Path) -> Lineage:
    """From the tensor types in a GGUF header (no tensor data is read)."""
    from gguf import GGML_QUANT_SIZES, GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, KeyError) as exc:
        raise InputError(path, f"not a readable GGUF file ({exc})") from None
    bits = params = 0.0
    by_type: dict[str, int] = {}
    for tensor in reader.tensors:
        bits += 8 * int(tensor.n_bytes)
        params += int(tensor.n_elements)
        by_type[tensor.tensor_type.name] = by_type.get(tensor.tensor_type.name, 0) + int(
            tensor.n_elements)
    quantized = {name: count for name, count in by_type.items() if nominal_bits(name)}
    main = max(quantized, key=lambda name: quantized[name]) if quantized else None
    block = None
    if main is not None:
        from gguf import GGMLQuantizationType

        block = GGML_QUANT_SIZES[GGMLQuantizationType[main]][0]
    return Lineage("gguf", nominal_bits(main) if main else None, block,
                   bits / params if params else None, None, None,
                   {"tensor_types": {name: by_type[name] for name in sorted(by_type)},
                    "main_type": main})


def nominal_bits(type_name: str | None) -> int | None:
    """Q4_1 -> 4, Q6_K -> 6, IQ2_XXS -> 2, TQ1_0 -> 1; float types -> None."""
    found = re.match(r"^(?:I|T)?Q(\d)", type_name or "")
    return int(found[1]) if found else None


def distilled_lineage(manifest_file: Path) -> Lineage:
    """From `crbench distill`'s manifest: a distilled model, its teacher (bits as stored)."""
    manifest = read_json(manifest_file)
    details = {key: str(manifest[key]) for key in ("teacher", "student") if manifest.get(key)}
    return Lineage("distill", bits_per_weight=bits_per_weight(manifest_file.parent),
                   details=details)


def crbench_lineage(folder: Path) -> Lineage:
    """From crbench's compression.json: the recipe's settings, measured sparsity."""
    from crbench.compress import methods

    manifest = read_json(folder / "compression.json")
    recipe = manifest.get("recipe") or {}
    method = str(manifest.get("method") or recipe.get("method") or DENSE)
    known = methods.METHODS.get(method)
    quantizes = known is not None and known.kind == "quant"
    sparsity = None
    if known is not None and known.kind == "prune":
        sizes = {name: math.prod(shape) for name, shape, _ in stored_tensors(folder)}
        records = [m for m in manifest.get("modules", []) if isinstance(m, dict)]
        counted = [(sizes.get(f"{m['module']}.weight", 0), m.get("sparsity") or 0.0)
                   for m in records]
        total = sum(size for size, _ in counted)
        sparsity = sum(size * s for size, s in counted) / total if total else None
    return Lineage(method, recipe.get("bits") if quantizes else None,
                   (recipe.get("group_size") or None) if quantizes else None,
                   bits_per_weight(folder), sparsity,
                   recipe.get("pattern") if not quantizes else None,
                   {"base_model": (manifest.get("base_model") or {}).get("name")})
