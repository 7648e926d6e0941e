"""Throughput of crbench's hf engine, and how close it comes to this machine's compute roofline.

    .venv/bin/python benchmarks/hf_throughput.py [--prompts 64] [--max-new-tokens 128]
        [--batch-sizes 1,8,32,64] [--dtype auto] [--json out.json]

Workload: Temporal-Sequences-style questions made up here (benchmarks/_common.py) as plain
completion prompts ending with "<think>\\n" (the paper's style), SmolLM2-135M-Instruct (the
offline demo model), greedy, a fixed max_new_tokens, in `--dtype` (default "auto": what
crbench.dtype chooses on this CPU; the roofline is measured in the same dtype). Batch size 1
runs on the first 8 prompts only (it is slow); the others on all of them.

Roofline: matmul GFLOP/s measured here with torch at the model's own layer shapes; the
model's FLOPs per generated token = 2 x (non-embedding parameters) + 2 x vocab x hidden (the
lm_head, tied to the embedding) + 4 x layers x hidden x context (attention scores and values);
ceiling tok/s = GFLOP/s / GFLOP per token. Prompt tokens cost FLOPs too (prefill, without the
lm_head), so the fraction of the machine's FLOP rate actually used is reported beside the
generated-tokens-only figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, temporal_prompts  # noqa: E402  (sets OMP_WAIT_POLICY first)


def model_flops(config, context: float) -> dict[str, float]:
    """FLOPs per token of a Llama-style decoder at a given context length."""
    d, layers = config.hidden_size, config.num_hidden_layers
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    ffn, vocab = config.intermediate_size, config.vocab_size
    per_layer = d * heads * head_dim * 2 + d * kv_heads * head_dim * 2 + 3 * d * ffn
    linear = 2 * layers * per_layer
    lm_head = 2 * vocab * d
    attention = 4 * layers * heads * head_dim * context
    return {"decode": linear + lm_head + attention, "prefill": linear + attention / 2,
            "linear": linear, "lm_head": lm_head, "attention": attention}


def matmul_gflops(config, rows: int, repeats: int = 5, dtype=None) -> float:
    """GFLOP/s of torch's linear at the model's layer shapes, `rows` tokens at a time, in
    `dtype` (default fp32)."""
    import torch

    dtype = dtype or torch.float32
    d, ffn, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    shapes = [(heads * head_dim, d), (kv_heads * head_dim, d), (kv_heads * head_dim, d),
              (d, heads * head_dim), (ffn, d), (ffn, d), (d, ffn), (vocab, d)]
    weights = [torch.randn(out, inp).to(dtype) for out, inp in shapes]
    inputs = {inp: torch.randn(rows, inp).to(dtype) for _, inp in shapes}
    flops = sum(2 * rows * out * inp for out, inp in shapes)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            for w in weights:
                torch.nn.functional.linear(inputs[w.shape[1]], w)
            best = min(best, time.perf_counter() - started)
    return flops / best / 1e9


def run_engine(engine, prompts, max_new_tokens) -> dict[str, float]:
    from crbench.engines import SamplingParams

    started = time.perf_counter()
    gens = dict(engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens)))
    seconds = time.perf_counter() - started
    generated = sum(g.completion_tokens for g in gens.values())
    prompt_tokens = sum(g.prompt_tokens for g in gens.values())
    return {"prompts": len(prompts), "generated": generated, "prompt_tokens": prompt_tokens,
            "seconds": seconds, "tok_s": generated / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--dtype", default="auto", help="auto | bf16 | fp32")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from crbench.engines import make_engine
    from crbench.models import demo_model_path

    engine = make_engine("hf", str(demo_model_path()), dtype=args.dtype)
    config = engine.model.config
    dtype = engine.model.dtype
    prompts = [p + "\n<think>\n" for p in temporal_prompts(args.prompts)]
    results = {"machine": machine(), "max_new_tokens": args.max_new_tokens,
               "dtype": str(dtype).removeprefix("torch."), "runs": []}
    print(f"machine: {results['machine']}; dtype {results['dtype']} (asked: {args.dtype})")
    print(f"{'batch':>5} {'prompts':>7} {'generated':>9} {'seconds':>8} {'tok/s':>7}  load")
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        engine.batch_size = batch_size
        subset = prompts[:8] if batch_size == 1 else prompts
        run = {"batch_size": batch_size, **run_engine(engine, subset, args.max_new_tokens)}
        import os

        run["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        results["runs"].append(run)
        print(f"{batch_size:>5} {run['prompts']:>7} {run['generated']:>9} "
              f"{run['seconds']:>8.1f} {run['tok_s']:>7.1f}  {run['loadavg']}")

    best = max(results["runs"], key=lambda r: r["tok_s"])
    context = best["prompt_tokens"] / best["prompts"] + args.max_new_tokens / 2
    flops = model_flops(config, context)
    rates = {rows: matmul_gflops(config, rows, dtype=dtype) for rows in (64, 256, 1024)}
    peak = max(rates.values())
    ceiling = peak * 1e9 / flops["decode"]
    used = (best["generated"] * flops["decode"] + best["prompt_tokens"] * flops["prefill"]
            ) / best["seconds"] / 1e9
    results["roofline"] = {
        "matmul_gflops_by_rows": {str(k): round(v, 1) for k, v in rates.items()},
        "gflop_per_generated_token": round(flops["decode"] / 1e9, 4),
        "gflop_per_prompt_token": round(flops["prefill"] / 1e9, 4),
        "mean_context": round(context, 1),
        "ceiling_tok_s": round(ceiling, 1),
        "best_tok_s": round(best["tok_s"], 1),
        "best_fraction_of_ceiling": round(best["tok_s"] / ceiling, 3),
        "gflops_used_incl_prefill": round(used, 1),
        "fraction_of_matmul_rate_used": round(used / peak, 3),
    }
    roof = results["roofline"]
    print(f"matmul GFLOP/s at the model's shapes (rows: rate): {roof['matmul_gflops_by_rows']}")
    print(f"GFLOP per generated token {roof['gflop_per_generated_token']} (context "
          f"{roof['mean_context']}), per prompt token {roof['gflop_per_prompt_token']}")
    print(f"ceiling {roof['ceiling_tok_s']} tok/s; best {roof['best_tok_s']} tok/s "
          f"(batch {best['batch_size']}) = {roof['best_fraction_of_ceiling']:.0%} of it")
    print(f"with prefill counted: {roof['gflops_used_incl_prefill']} GFLOP/s used = "
          f"{roof['fraction_of_matmul_rate_used']:.0%} of the matmul rate")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
