"""Which dtype models compute in: `dtype = "auto"` (the default everywhere) or an explicit one.

    resolve_dtype("auto" | "bf16" | "fp16" | "fp32" | torch names, device) -> torch.dtype

On a GPU "auto" is bf16 (fp16 where the GPU has no bf16). On a CPU it is what this CPU runs
faster: a short probe (0.4 s of matmuls) times fp32 and bf16 matmuls at a model's linear
shapes (16 and 256 rows, the decode and prefill regimes), and bf16 wins when it is at least
`MARGIN` faster (geometric mean of the two). CPUs with AVX512-BF16 or AMX usually run bf16
2-4x faster; CPUs without emulate it and run it slower. The result is cached per machine (CPU
model and bf16 flags, torch version, threads, shape) in `<crbench cache>/dtype-probe.json`;
`crbench env` shows it.

The same probe times bf16 matmuls with the weight packed once for oneDNN
(`crbench.engines.hf_packed`); the hf engine packs a bf16 model's linear layers where that
measured at least `PACK_MARGIN` faster than torch's plain bf16 linear.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from crbench import threads

ALIASES = {
    "auto": "auto",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "fp32": "float32", "float32": "float32", "float": "float32",
}
MARGIN = 1.15  # bf16 must be this much faster (geometric mean over the sizes) to be chosen
PACK_MARGIN = 1.05  # packed bf16 must be this much faster than plain bf16 to be used
PROBE_ROWS = (16, 256)
DEFAULT_SHAPE = (576, 1536)  # SmolLM2-135M's MLP (hidden, intermediate)
PROBE_FILE = "dtype-probe.json"


@dataclass(frozen=True)
class Probe:
    """A measured fp32-vs-bf16 matmul comparison on this CPU, and the choice it implies."""

    machine: str  # the cache key: CPU model, bf16 flags, torch version, shape
    shape: tuple[int, int]
    threads: int
    fp32_gflops: dict[int, float]  # rows -> GFLOP/s
    bf16_gflops: dict[int, float]
    choice: str  # "bfloat16" | "float32"
    packed_gflops: dict[int, float]  # bf16 with the weight packed for oneDNN; {}: unavailable

    @property
    def packed_linear(self) -> bool:
        """Whether bf16 linear layers run faster with their weights packed once."""
        if not self.packed_gflops:
            return False
        gain = math.prod(self.packed_gflops[rows] / self.bf16_gflops[rows] for rows in PROBE_ROWS)
        return gain ** (1 / len(PROBE_ROWS)) >= PACK_MARGIN

    @property
    def speedups(self) -> dict[int, float]:
        return {rows: self.bf16_gflops[rows] / self.fp32_gflops[rows] for rows in PROBE_ROWS}

    def describe(self) -> str:
        sizes = ", ".join(f"{rows} rows: fp32 {self.fp32_gflops[rows]:.1f}, bf16 "
                          f"{self.bf16_gflops[rows]:.1f} GFLOP/s ({self.speedups[rows]:.2f}x)"
                          for rows in PROBE_ROWS)
        packed = ("unavailable" if not self.packed_gflops else ", ".join(
            f"{rows} rows {self.packed_gflops[rows]:.1f} GFLOP/s" for rows in PROBE_ROWS)
            + f": {'used' if self.packed_linear else 'not used'}")
        return (f"dtype auto on this CPU: {self.choice} (linear {self.shape[0]}x{self.shape[1]}, "
                f"{self.threads} threads; {sizes}); bf16 with packed weights: {packed}")


def canonical(name: str | torch.dtype | None) -> str:
    """"auto" or a torch dtype name; ValueError for anything else."""
    if isinstance(name, torch.dtype):
        return str(name).removeprefix("torch.")
    key = (name or "auto").lower().removeprefix("torch.")
    if key not in ALIASES:
        raise ValueError(f"dtype must be one of auto, bf16, fp16, fp32 (got {name!r})")
    return ALIASES[key]


def resolve_dtype(name: str | torch.dtype | None, device: str | torch.device,
                  shape: tuple[int, int] | None = None) -> torch.dtype:
    """The torch dtype to compute in on `device`; `shape` (hidden, intermediate) is the model's
    linear shape for the CPU probe (default: SmolLM2-135M's)."""
    chosen = canonical(name)
    if chosen != "auto":
        return getattr(torch, chosen)
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return getattr(torch, cpu_probe(shape or DEFAULT_SHAPE).choice)


def model_shape(config: Any) -> tuple[int, int] | None:
    """(hidden, intermediate) of a transformers config, when it has them."""
    hidden = getattr(config, "hidden_size", None)
    inner = getattr(config, "intermediate_size", None)
    if isinstance(hidden, int) and isinstance(inner, int):
        return hidden, inner
    return None


def shape_of_folder(path: str | Path) -> tuple[int, int] | None:
    """(hidden, intermediate) from a model folder's config.json (None: not a folder/unknown)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    hidden, inner = config.get("hidden_size"), config.get("intermediate_size")
    return (hidden, inner) if isinstance(hidden, int) and isinstance(inner, int) else None


def environment(refresh: bool = False) -> list[str]:
    """Lines for `crbench env`: versions, devices, the probe's figures and the decision."""
    import transformers

    lines = [f"torch {torch.__version__}, transformers {transformers.__version__}, "
             f"{torch.get_num_threads()} CPU threads",
             f"CPU: {cpu_model()} (bf16 flags: "
             f"{', '.join(sorted(f for f in cpu_flags() if 'bf16' in f or 'amx' in f)) or 'none'})"]
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        lines.append(f"GPU: {name}; dtype auto there: "
                     f"{canonical(resolve_dtype('auto', 'cuda'))}")
    else:
        lines.append("GPU: none")
    lines.append(cpu_probe(refresh=refresh).describe())
    lines.append(threads.describe())
    lines.append(f"probe cache: {probe_file()} (crbench env --refresh measures again)")
    return lines


# --- the CPU probe -----------------------------------------------------------------------------


def machine_key(shape: tuple[int, int]) -> str:
    flags = sorted(f for f in cpu_flags() if f in ("avx512_bf16", "amx_bf16", "amx_tile"))
    return (f"{cpu_model()} | {','.join(flags) or 'no bf16 flags'} | torch {torch.__version__}"
            f" | {torch.get_num_threads()} threads | {shape[0]}x{shape[1]}")


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def probe_file() -> Path:
    from crbench.models import cache_dir

    return cache_dir() / PROBE_FILE


def cpu_probe(shape: tuple[int, int] = DEFAULT_SHAPE, refresh: bool = False) -> Probe:
    """This machine's probe for `shape`: from the cache, or measured now and cached."""
    key = machine_key(shape)
    cached = _read_cache()
    if not refresh and key in cached:
        try:
            return _from_json(cached[key])
        except (KeyError, TypeError, ValueError):
            pass  # an entry from another version of this file: measure again
    probe = measure(shape, key)
    cached[key] = asdict(probe)
    _write_cache(cached)
    return probe


def measure(shape: tuple[int, int], key: str = "", seconds: float = 0.6) -> Probe:
    """Time `linear` at `shape` in fp32, bf16 and bf16 with the weight packed for oneDNN (where
    available) for PROBE_ROWS rows, `seconds` in all. The cases take turns in short slices and
    each keeps its best slice, so a busy machine (other processes taking the cores now and
    then) slows all alike instead of one."""
    from crbench.engines import hf_packed

    hidden, inner = shape
    generator = torch.Generator().manual_seed(0)
    weight32 = torch.randn(inner, hidden, generator=generator)
    weight16 = weight32.to(torch.bfloat16)
    packed = hf_packed.pack_weight(weight16, 128) if hf_packed.available() else None
    cases: dict[tuple[str, int], Callable[[], object]] = {}
    for rows in PROBE_ROWS:
        x32 = torch.randn(rows, hidden, generator=generator)
        x16 = x32.to(torch.bfloat16)
        cases["float32", rows] = partial(torch.nn.functional.linear, x32, weight32)
        cases["bfloat16", rows] = partial(torch.nn.functional.linear, x16, weight16)
        if packed is not None:
            cases["packed", rows] = partial(hf_packed.packed_linear, x16, packed)
    best = dict.fromkeys(cases, 0.0)
    with torch.inference_mode():
        for call in cases.values():  # warm up (kernel selection, caches)
            for _ in range(3):
                call()
        rounds = 5
        for _ in range(rounds):
            for (name, rows), call in cases.items():
                flops = 2 * rows * hidden * inner
                rate = _gflops(call, flops, seconds / rounds / len(cases))
                best[name, rows] = max(best[name, rows], rate)
    rates = {name: {rows: best[name, rows] for rows in PROBE_ROWS if (name, rows) in best}
             for name in ("float32", "bfloat16", "packed")}
    return Probe(key, shape, torch.get_num_threads(), rates["float32"], rates["bfloat16"],
                 decide(rates["float32"], rates["bfloat16"]), rates["packed"])


def decide(fp32: dict[int, float], bf16: dict[int, float]) -> str:
    """bf16 when its rate is at least MARGIN times fp32's (geometric mean over the sizes)."""
    speedup = math.prod(bf16[rows] / fp32[rows] for rows in fp32)
    return "bfloat16" if speedup ** (1 / len(fp32)) >= MARGIN else "float32"


def _gflops(call: Callable[[], object], flops: int, seconds: float) -> float:
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 2:
        call()
        calls += 1
    return flops * calls / elapsed / 1e9


def _from_json(data: dict[str, Any]) -> Probe:
    return Probe(
        machine=str(data["machine"]), shape=(int(data["shape"][0]), int(data["shape"][1])),
        threads=int(data["threads"]),
        fp32_gflops={int(k): float(v) for k, v in data["fp32_gflops"].items()},
        bf16_gflops={int(k): float(v) for k, v in data["bf16_gflops"].items()},
        choice=str(data["choice"]),
        packed_gflops={int(k): float(v) for k, v in data["packed_gflops"].items()},
    )


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(probe_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(data: dict[str, Any]) -> None:
    """Written to a temporary file and renamed: a crash or a parallel writer never leaves half
    a file. A cache that cannot be written (read-only home) is only a lost speed-up."""
    target = probe_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=PROBE_FILE, dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, target)
    except OSError:
        pass
