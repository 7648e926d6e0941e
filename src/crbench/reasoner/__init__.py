"""The tiny reasoner: SmolLM2-135M-Instruct (the demo model) with a LoRA adapter, shipped here,
that makes it think before answering on crbench's generated reasoning families.

    adapter_model.safetensors   the LoRA weights (made by `crbench distill --recipe tiny-reasoner`)
    adapter_config.json         peft's description of the adapter
    manifest.json               the distillation manifest (recipe, data sha256, losses, wall
                                time, versions) and the adapter file's sha256

`merged_path()` is the model folder: the demo model with the adapter merged into its weights
(plain safetensors, loads in any engine), written once into the cache, named by the adapter's
sha256 so a new adapter gives a new folder. `crbench.models` resolves the name "tiny-reasoner"
to it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from crbench.errors import InputError

NAME = "tiny-reasoner"
HERE = Path(__file__).parent
ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
MANIFEST_FILE = "manifest.json"


def manifest() -> dict[str, Any]:
    try:
        data = json.loads((HERE / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(HERE / MANIFEST_FILE, f"the tiny reasoner's manifest: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(HERE / MANIFEST_FILE, "should be a JSON object")
    return data


def adapter_sha256() -> str:
    try:
        return hashlib.sha256((HERE / ADAPTER_FILE).read_bytes()).hexdigest()
    except OSError as exc:
        raise InputError(HERE / ADAPTER_FILE, f"the tiny reasoner's adapter: {exc}") from None


def check_adapter() -> str:
    """The adapter's sha256, after checking it is the one the manifest describes."""
    digest = adapter_sha256()
    if manifest().get("adapter_sha256") != digest:
        raise InputError(HERE / ADAPTER_FILE, "does not match the sha256 in manifest.json")
    return digest


def merged_path() -> Path:
    """The demo model with the shipped adapter merged in, built into the cache on first use."""
    from crbench.models import cache_dir, is_converted

    digest = check_adapter()
    out = cache_dir() / "models" / f"{NAME}-{digest[:12]}"
    if not is_converted(out):
        merge_into(out)
    return out


def merge_into(out: Path) -> Path:
    """Write base + adapter, merged, to `out` (through a temporary folder and a rename)."""
    from peft import PeftModel

    from crbench.models import load_causal_lm

    base, tokenizer = load_causal_lm("demo", device="cpu", dtype="float32")
    merged = PeftModel.from_pretrained(base, str(HERE)).merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
