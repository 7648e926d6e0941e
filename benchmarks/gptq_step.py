"""Microbenchmark of the per-layer algorithm step: gptq(), sparsegpt() and inverse_cholesky()
on the four weight stacks of one SmolLM2-135M decoder layer.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/gptq_step.py [--repeats 5] [--tokens 16384]

Shapes (out x in): q/k/v 960 x 576, o 576 x 576, gate/up 3072 x 576, down 576 x 1536. Weights
are random normal; H = X^T X / n from X of `--tokens` rows with correlated columns (X = Z A,
A random with a decaying spectrum), so H is SPD and ill-conditioned like a real layer's.
Each case runs `--repeats` times and the best time is reported: another process may share the
CPU, and the minimum is the least disturbed run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _common  # noqa: E402, F401  (sets OMP_WAIT_POLICY before torch starts its threads)
import torch  # noqa: E402

from crbench.compress.gptq import gptq  # noqa: E402
from crbench.compress.hessian import inverse_cholesky  # noqa: E402
from crbench.compress.sparsegpt import sparsegpt  # noqa: E402

SHAPES = {"qkv": (960, 576), "o": (576, 576), "gate_up": (3072, 576), "down": (576, 1536)}


def layer_hessian(columns: int, tokens: int, seed: int) -> torch.Tensor:
    """SPD H = X^T X / n with correlated columns and a spread of magnitudes."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(columns, columns, generator=gen) / columns**0.5
    mix *= torch.logspace(0, -2, columns).unsqueeze(1)  # decaying spectrum
    mix += torch.eye(columns) * 0.05
    x = torch.randn(tokens, columns, generator=gen) @ mix
    return x.T @ x / tokens


def run_case(case: str, w: torch.Tensor, h: torch.Tensor) -> object:
    if case == "static":  # the benchmark's recipe (llm-compressor's rules)
        return gptq(w, h, bits=4, group_size=64, sym=True, act_order=False, static_groups=True)
    if case == "act_order":  # the recipe default
        return gptq(w, h, bits=4, group_size=64, sym=True, act_order=True)
    if case == "sparsegpt":
        return sparsegpt(w, h, sparsity=0.5)
    return inverse_cholesky(h, 0.01, "benchmark")


def best_of(repeats: int, case: str, w: torch.Tensor, h: torch.Tensor) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run_case(case, w, h)
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--cases", default="static,act_order,sparsegpt,inverse")
    args = parser.parse_args()
    cases = args.cases.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), best of {args.repeats}")
    hessians = {cols: layer_hessian(cols, args.tokens, cols) for cols in (576, 1536)}
    totals: dict[str, float] = {}
    for name, (rows, cols) in SHAPES.items():
        w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows + cols)) * 0.02
        h = hessians[cols]
        line = [f"{name:8s} {rows:4d}x{cols:<4d}"]
        for case in cases:
            seconds = best_of(args.repeats, case, w, h)
            totals[case] = totals.get(case, 0.0) + seconds
            line.append(f"{case} {seconds * 1000:7.1f} ms")
        print("  ".join(line))
    print("total             " + "  ".join(f"{c} {totals[c] * 1000:7.1f} ms" for c in cases))


if __name__ == "__main__":
    main()
