"""Overhead of crbench's vllm engine over calling vLLM directly (target: under 5%).

    python benchmarks/vllm_overhead.py [--model Qwen/Qwen2.5-0.5B-Instruct] [--prompts 256]
        [--max-new-tokens 512] [--rounds 3] [--chunk-size 512]

Needs a GPU and `pip install crbench[vllm]`. One `LLM` serves both sides: "direct" hands vLLM
the token ids and SamplingParams ourselves and takes its RequestOutputs; "crbench" goes
through `make_engine("vllm", ...).generate`, which adds tokenizing with the chat-template
rule, per-prompt seeds, one request per prompt through `LLMEngine.add_request`/`step` (each
result yielded the step it finishes) and the conversion to Generations. The time to the first
finished result is printed too: with no chunk barrier it is far below the total. Prefix
caching is off so that rounds do not speed each other up; the sides alternate. Greedy, so both
must also return the same tokens, which is checked.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, temporal_prompts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="Qwen/Qwen2.5-0.5B-Instruct")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=512)
    args = parser.parse_args()

    from vllm import SamplingParams as VLLMSamplingParams

    from crbench.engines import SamplingParams, make_engine
    from crbench.engines.prompts import encode_prompt
    from crbench.engines.vllm import sampling_arguments

    engine = make_engine("vllm", args.model, chunk_size=args.chunk_size,
                         enable_prefix_caching=False)
    prompts = [p + "\n<think>\n" for p in temporal_prompts(args.prompts)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)

    def direct() -> tuple[float, list[list[int]]]:
        started = time.perf_counter()
        ids = [encode_prompt(engine.tokenizer, p) for p in prompts]
        sampling = [VLLMSamplingParams(**sampling_arguments(params, i)) for i in ids]
        outputs = engine.llm.generate([{"prompt_token_ids": i} for i in ids], sampling,
                                      use_tqdm=False)
        return time.perf_counter() - started, [list(o.outputs[0].token_ids) for o in outputs]

    first_result: list[float] = []

    def ours() -> tuple[float, list[list[int]]]:
        started = time.perf_counter()
        results = {}
        for index, generation in engine.generate(prompts, params):
            if not results:
                first_result.append(time.perf_counter() - started)
            results[index] = generation
        return time.perf_counter() - started, [results[i].token_ids for i in range(len(prompts))]

    direct()  # warm-up: CUDA graphs, allocator
    print(f"machine: {machine()}")
    print(f"{args.model}, {args.prompts} prompts, greedy, max {args.max_new_tokens} new tokens")
    best = {"direct": float("inf"), "crbench": float("inf")}
    tokens = {}
    for round_ in range(1, args.rounds + 1):
        for name, run in (("direct", direct), ("crbench", ours)):
            seconds, token_ids = run()
            best[name] = min(best[name], seconds)
            tokens[name] = token_ids
            count = sum(len(t) for t in token_ids)
            print(f"round {round_} {name:>8}: {seconds:7.2f} s  {count / seconds:9.1f} tok/s  "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    same = sum(a == b for a, b in zip(tokens["direct"], tokens["crbench"], strict=True))
    print(f"identical outputs: {same} of {len(prompts)}")
    print(f"first result after {min(first_result):.2f} s of {best['crbench']:.2f} s")
    print(f"overhead: {best['crbench'] / best['direct'] - 1:+.1%} (best round each)")
    engine.close()


if __name__ == "__main__":
    main()
