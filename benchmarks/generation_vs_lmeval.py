"""Generation throughput on a reasoning-like workload: crbench's hf engine against
lm-evaluation-harness's `hf` backend.

    .venv/bin/python benchmarks/generation_vs_lmeval.py [--prompts 64] [--batch-size 32]
        [--max-new-tokens 1024] [--rounds 2] [--dtype auto] [--no-lmeval-best]

The workload: thinking-style generations of widely varying length, as reasoning traces are.
Each prompt is a chat turn whose answer is prefilled with "<think>\\n", from a mix of short
questions, Temporal-Sequences-style puzzles ("think step by step") and long explanations;
greedy decoding until EOS or `--max-new-tokens` (default 1024), so lengths range from a few
tokens to the limit (the spread is printed). Both sides get the same prompts, the demo model
(SmolLM2-135M-Instruct) on the CPU in the same dtype (`--dtype`, default "auto": what
crbench.dtype chooses on this CPU), the same batch size; lm-eval's `HFLM.generate_until` stops
at EOS, as we do. Unless `--no-lmeval-best`, lm-eval also runs in the other dtype (bf16/fp32),
so its best dtype is on the table. Each side runs in a fresh process, in turn, `--rounds`
times; model loading is not timed. Tokens are counted the same way for both: the outputs
re-tokenized with the model's tokenizer.

MFU (model FLOP utilisation): the useful FLOPs of the run (prefill and decode of every prompt,
attention included, from the model's config and each prompt's real lengths; no padding)
divided by time, over the matmul rate this machine reaches at the model's linear shapes in
that dtype (measured here, with as many rows as the batch size: the decode regime; the mean of
the rates measured just before and just after that side's run).

benchmarks/.venv-lmeval is made on first use: lm-eval installed into a venv that sees our
.venv's packages (a .pth file), so both sides run the very same torch and transformers.
Ends with `ratio: X`: our tokens/s over lm-eval's in the same dtype, the geometric mean over
rounds of each round's pair.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from crbench.threads import set_openmp_waiting
except ImportError:  # the lm-eval side's venv: it inherits the wait chosen here in its environment
    pass
else:
    set_openmp_waiting()  # before torch loads; both sides and the matmul rate run under it

HERE = Path(__file__).parent
LMEVAL_VENV = HERE / ".venv-lmeval"
LMEVAL_PYTHON = LMEVAL_VENV / "bin" / "python"


def ensure_lmeval_venv() -> None:
    if LMEVAL_PYTHON.exists() and subprocess.run(
        [str(LMEVAL_PYTHON), "-c", "import lm_eval.models.huggingface"],
        capture_output=True).returncode == 0:
        return
    import site

    import torch
    import transformers

    print(f"creating {LMEVAL_VENV} (lm-eval over our torch and transformers) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(LMEVAL_VENV)], check=True)
    ours = site.getsitepackages()[0]
    theirs = subprocess.run([str(LMEVAL_PYTHON), "-c", "import site; "
                             "print(site.getsitepackages()[0])"], capture_output=True,
                            text=True, check=True).stdout.strip()
    Path(theirs, "crbench-venv.pth").write_text(ours + "\n")  # after its own packages
    pip = [str(LMEVAL_VENV / "bin" / "pip"), "install", "-q"]
    # torch and transformers pinned to ours (already visible: pip installs nothing for them)
    subprocess.run(pip + ["lm-eval", f"torch=={torch.__version__}",
                          f"transformers=={transformers.__version__}"], check=True)


# --- the two sides, each run in its own process ----------------------------------------------


def lmeval_side(model: str, prompts: list[str], batch_size: int, max_new_tokens: int,
                dtype: str) -> dict:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, device="cpu", dtype=dtype, batch_size=batch_size)
    gen_kwargs = {"until": [], "max_gen_toks": max_new_tokens, "do_sample": False}
    requests = [Instance(request_type="generate_until", doc={}, arguments=(p, gen_kwargs),
                         idx=i) for i, p in enumerate(prompts)]
    started = time.perf_counter()
    outputs = lm.generate_until(requests, disable_tqdm=True)
    return {"seconds": time.perf_counter() - started, "outputs": outputs}


def crbench_side(model: str, prompts: list[str], batch_size: int, max_new_tokens: int,
                 dtype: str) -> dict:
    from crbench.engines import SamplingParams, make_engine

    engine = make_engine("hf", model, batch_size=batch_size, dtype=dtype)
    started = time.perf_counter()
    results = dict(engine.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens)))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "outputs": [results[i].text for i in range(len(prompts))]}


def side_main(which: str, job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    run = lmeval_side if which == "lmeval" else crbench_side
    result = run(job["model"], job["prompts"], job["batch_size"], job["max_new_tokens"],
                 job["dtype"])
    Path(job["out"]).write_text(json.dumps(result))


# --- the comparison ------------------------------------------------------------------------


def reasoning_prompts(tokenizer, n: int, seed: int = 0) -> list[str]:
    """Chat prompts with the answer prefilled by "<think>\\n": short questions, puzzles and
    long explanations in turn, so the thinking runs from a few tokens to the limit."""
    import random

    from _common import temporal_prompt

    rng = random.Random(seed)
    topics = ["how a compiler turns source code into machine code", "why the seasons change",
              "how vaccines train the immune system", "how a bicycle stays upright",
              "how public-key cryptography works", "why the sky is blue at noon and red at dusk"]
    questions = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            questions.append(f"What is {a} times {b}? Answer briefly.")
        elif kind == 1:
            questions.append(temporal_prompt(rng))
        else:
            questions.append(f"Explain in detail, step by step, {rng.choice(topics)}.")
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                          add_generation_prompt=True) + "<think>\n"
            for q in questions]


def useful_flops(config, prompt_lengths: list[int], new_lengths: list[int]) -> float:
    """FLOPs of prefill and decode without padding: every linear layer (2 per weight per
    token), attention scores and values (4 x context x query width per token per layer), and
    the LM head once per generated token."""
    layers, hidden = config.num_hidden_layers, config.hidden_size
    q_width = layer_shapes(config)[0][1]
    linear = 2 * layers * sum(fan_in * fan_out for fan_in, fan_out in layer_shapes(config))
    lm_head = 2 * hidden * config.vocab_size
    total = 0.0
    for prompt, new in zip(prompt_lengths, new_lengths, strict=True):
        forwarded = prompt + max(new - 1, 0)  # the last token is sampled, never fed
        total += linear * forwarded + lm_head * new
        total += 4 * q_width * layers * forwarded * (forwarded + 1) / 2  # causal attention
    return total


def layer_shapes(config) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of one decoder layer's linears, in the order a forward runs them:
    q, k, v, o, gate, up, down."""
    hidden, inner = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q_width = config.num_attention_heads * head_dim
    kv_width = config.num_key_value_heads * head_dim
    return [(hidden, q_width), (hidden, kv_width), (hidden, kv_width), (q_width, hidden),
            (hidden, inner), (hidden, inner), (inner, hidden)]


def matmul_rate(config, rows: int, dtype_name: str, seconds: float = 1.0) -> float:
    """FLOP/s of this machine on the model's linear shapes (one layer's and the LM head,
    weighted by their FLOPs) with `rows` rows in `dtype_name`; best of several slices, and in
    bf16 the better of torch's linear and the linear with its weight packed for oneDNN (what
    the hf engine runs where faster), so a faster kernel raises the bar with the speed."""
    import torch

    from crbench.engines import hf_packed

    dtype = getattr(torch, dtype_name)
    hidden = config.hidden_size
    shapes = layer_shapes(config)
    best: dict[tuple[int, int], float] = {}
    with torch.inference_mode():
        for _ in range(5):
            for fan_in, fan_out in set(shapes + [(hidden, config.vocab_size)]):
                x = torch.randn(rows, fan_in).to(dtype)
                w = torch.randn(fan_out, fan_in).to(dtype)
                kernels = [lambda x=x, w=w: torch.nn.functional.linear(x, w)]
                if dtype == torch.bfloat16 and hf_packed.available():
                    packed = hf_packed.pack_weight(w, 128)
                    kernels.append(lambda x=x, p=packed: hf_packed.packed_linear(x, p))
                for kernel in kernels:
                    kernel()
                    calls, started = 0, time.perf_counter()
                    while (elapsed := time.perf_counter() - started) < seconds / 40 or calls < 2:
                        kernel()
                        calls += 1
                    rate = 2 * rows * fan_in * fan_out * calls / elapsed
                    best[fan_in, fan_out] = max(best.get((fan_in, fan_out), 0.0), rate)
    weights = [(s, 2 * s[0] * s[1] * config.num_hidden_layers) for s in shapes]
    weights.append(((hidden, config.vocab_size), 2 * hidden * config.vocab_size))
    flops = sum(f for _, f in weights)
    return flops / sum(f / best[s] for s, f in weights)


def memory_rate(seconds: float = 1.0) -> float:
    """Bytes/s this machine reads: the best of several sums over a 1 GiB tensor (past any
    cache: the 2-core VMs measured here had up to 480 MB of L3)."""
    import torch

    data = torch.ones(256 * 2**20)  # 1 GiB of fp32
    best, started = 0.0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        begun = time.perf_counter()
        data.sum()
        best = max(best, data.numel() * data.element_size() / (time.perf_counter() - begun))
    return best


def model_pass_seconds(config, rows: int, dtype_name: str, passes: int = 5) -> float:
    """Seconds of one pass through all of the model's linear layers (distinct weights, in
    layer order, the LM head last) over `rows` rows in `dtype_name`, as a decode step runs
    them: the weights come from memory, not from a cache holding one matrix. Packed for
    oneDNN in bf16 where available, as the hf engine runs them. Best of `passes`."""
    import torch

    from crbench.engines import hf_packed

    dtype = getattr(torch, dtype_name)
    shapes = (layer_shapes(config) * config.num_hidden_layers
              + [(config.hidden_size, config.vocab_size)])
    pack = dtype == torch.bfloat16 and hf_packed.available()
    weights = []
    for fan_in, fan_out in shapes:
        w = torch.randn(fan_out, fan_in).to(dtype)
        weights.append((fan_in, hf_packed.pack_weight(w, 128) if pack else w))
    inputs = {n: torch.randn(rows, n).to(dtype) for n in {fan_in for fan_in, _ in shapes}}
    kernel = hf_packed.packed_linear if pack else torch.nn.functional.linear
    best = float("inf")
    with torch.inference_mode():
        for _ in range(passes + 1):  # the first pass warms up
            started = time.perf_counter()
            for fan_in, w in weights:
                kernel(inputs[fan_in], w)
            best = min(best, time.perf_counter() - started)
    return best


def mfu_ceiling(config, prompt_lengths: list[int], new_lengths: list[int], dtype_name: str,
                flop_rate: float, byte_rate: float, batch_size: int,
                pass_seconds: dict[int, float]) -> float:
    """The highest MFU a decoder without drafts reaches here, on these lengths with
    `batch_size` slots. What it cannot avoid:
    - prefill: the prompts' FLOPs at the matmul rate;
    - decode steps: one pass through every linear layer per step, costing a fixed part (the
      weights read from memory, the calls) plus a part per row: the straight line through the
      two passes measured (`pass_seconds`, rows -> seconds; below the fewer rows it
      underestimates a pass, as a pass costs much the same at any few rows). Without drafts
      a row gains one token a step, so there are at least max(tokens / batch_size, longest
      row) steps;
    - attention: one read of the row's keys and values (all layers) per generated token at
      the memory rate.
    Nothing else (norms, copies, sampling, Python) costs anything. Drafts (our speculation)
    gain several tokens a step and share one read of the keys and values among them, but feed
    rejected tokens through the matmuls, so they move this bar."""
    import torch

    head_dim = getattr(config, "head_dim", None) or (config.hidden_size
                                                     // config.num_attention_heads)
    itemsize = torch.empty(0, dtype=getattr(torch, dtype_name)).element_size()
    per_position = 2 * config.num_key_value_heads * head_dim * itemsize * config.num_hidden_layers
    contexts = sum(new * prompt + new * (new - 1) / 2
                   for prompt, new in zip(prompt_lengths, new_lengths, strict=True))
    (few, few_seconds), (many, many_seconds) = sorted(pass_seconds.items())
    per_row = max(many_seconds - few_seconds, 0.0) / (many - few)
    per_step = max(few_seconds - few * per_row, 0.0)
    fed = sum(max(new - 1, 0) for new in new_lengths)  # decode positions (the first is prefill's)
    steps = max(-(-fed // batch_size), max(new_lengths) - 1)
    prefill = useful_flops(config, prompt_lengths, [0] * len(prompt_lengths)) / flop_rate
    fastest = (prefill + steps * per_step + fed * per_row
               + contexts * per_position / byte_rate)
    return useful_flops(config, prompt_lengths, new_lengths) / flop_rate / fastest


def run_side(which: str, job: dict, workdir: Path) -> dict:
    out = workdir / f"{which}.json"
    job_file = workdir / "job.json"
    job_file.write_text(json.dumps({**job, "out": str(out)}))
    python = str(LMEVAL_PYTHON) if which == "lmeval" else sys.executable
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    load_before = os.getloadavg()
    subprocess.run([python, __file__, "--side", which, str(job_file)], check=True, env=env)
    result = json.loads(out.read_text())
    result["loadavg"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", default="auto", help="auto | bf16 | fp32 (both sides)")
    parser.add_argument("--no-lmeval-best", dest="lmeval_best", action="store_false",
                        help="skip lm-eval in the other dtype")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("job", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return side_main(args.side, args.job)

    sys.path.insert(0, str(HERE))
    from _common import machine
    from transformers import AutoConfig, AutoTokenizer

    from crbench.dtype import canonical, resolve_dtype, shape_of_folder
    from crbench.models import resolve_model

    ensure_lmeval_venv()
    model = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    config = AutoConfig.from_pretrained(model)
    dtype = canonical(resolve_dtype(args.dtype, "cpu", shape_of_folder(model)))
    other = "float32" if dtype == "bfloat16" else "bfloat16"
    prompts = reasoning_prompts(tokenizer, args.prompts)
    prompt_lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    print(f"machine: {machine()}")
    print(f"{args.prompts} reasoning-style prompts ({min(prompt_lengths)}-{max(prompt_lengths)} "
          f"tokens), batch {args.batch_size}, greedy, up to {args.max_new_tokens} new tokens, "
          f"CPU, dtype {dtype} (asked: {args.dtype})")
    # the machine's matmul rate moved by 20% within minutes here: MFU takes the mean of the
    # rates measured just before and just after each side's run
    rates_at = {d: matmul_rate(config, args.batch_size, d) for d in (dtype, other)}
    print("matmul rate at the model's shapes, " + ", ".join(
        f"{d}: {r / 1e9:.1f} GFLOP/s" for d, r in rates_at.items())
        + f" ({args.batch_size} rows; measured again around each run)")
    sides = [("lmeval", dtype), ("crbench", dtype)] + ([("lmeval", other)] if args.lmeval_best
                                                       else [])
    print(f"{'round':>5} {'backend':>8} {'dtype':>8} {'tokens':>7} {'seconds':>8} {'tok/s':>7} "
          f"{'MFU':>5}  load (1/5/15 min before; after); matmul rate before / after")
    rates: dict[tuple[str, str], list[float]] = {side: [] for side in sides}
    outputs: dict[tuple[str, str], list[str]] = {}
    lengths: dict[tuple[str, str], list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(1, args.rounds + 1):
            for which, side_dtype in sides:
                job = {"model": model, "prompts": prompts, "batch_size": args.batch_size,
                       "max_new_tokens": args.max_new_tokens, "dtype": side_dtype}
                before = matmul_rate(config, args.batch_size, side_dtype)
                result = run_side(which, job, Path(tmp))
                after = matmul_rate(config, args.batch_size, side_dtype)
                new = [len(tokenizer(t, add_special_tokens=False)["input_ids"])
                       for t in result["outputs"]]
                rate = sum(new) / result["seconds"]
                mfu = (useful_flops(config, prompt_lengths, new) / result["seconds"]
                       / ((before + after) / 2))
                rates[which, side_dtype].append(rate)
                outputs[which, side_dtype] = result["outputs"]
                lengths[which, side_dtype] = new
                print(f"{round_:>5} {which:>8} {side_dtype:>8} {sum(new):>7} "
                      f"{result['seconds']:>8.1f} {rate:>7.1f} {mfu:>5.0%}  "
                      f"{result['loadavg'][:3]}; {result['loadavg'][3:]}; matmul "
                      f"{before / 1e9:.1f} / {after / 1e9:.1f} GFLOP/s", flush=True)
    ours = sorted(lengths["crbench", dtype])
    byte_rate = memory_rate()
    passes = {rows: model_pass_seconds(config, rows, dtype)
              for rows in (args.batch_size // 2, args.batch_size)}
    ceiling = mfu_ceiling(config, prompt_lengths, lengths["crbench", dtype], dtype,
                          rates_at[dtype], byte_rate, args.batch_size, passes)
    measured = ", ".join(f"{seconds * 1e3:.1f} ms at {rows} rows"
                         for rows, seconds in sorted(passes.items()))
    print(f"MFU ceiling here without drafts: {ceiling:.0%} (prefill at "
          f"{rates_at[dtype] / 1e9:.0f} GFLOP/s; a decode step's pass through all linear "
          f"layers {measured}; keys and values read once per token at "
          f"{byte_rate / 1e9:.1f} GB/s; nothing else costs anything)")
    print(f"new tokens per prompt (crbench): min {ours[0]}, median {ours[len(ours) // 2]}, "
          f"max {ours[-1]}; {sum(n >= 512 for n in ours)} of {len(ours)} at 512 or more")
    same = sum(a == b for a, b in zip(outputs["lmeval", dtype], outputs["crbench", dtype],
                                      strict=True))
    print(f"identical outputs ({dtype}): {same} of {len(prompts)}")
    if args.lmeval_best:
        best = max(statistics.geometric_mean(rates["lmeval", d]) for d in (dtype, other))
        print(f"lm-eval's best dtype: {best:.1f} tok/s; ours over it: "
              f"{statistics.geometric_mean(rates['crbench', dtype]) / best:.2f}")
    pairs = [ours_ / theirs for ours_, theirs in zip(rates["crbench", dtype],
                                                     rates["lmeval", dtype], strict=True)]
    print("per-round ratios: " + ", ".join(f"{r:.2f}" for r in pairs))
    print(f"ratio: {statistics.geometric_mean(pairs):.2f}")


if __name__ == "__main__":
    main()
