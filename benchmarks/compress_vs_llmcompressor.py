"""Our SparseGPT, GPTQ and AWQ against llm-compressor's, on the same model and calibration windows.

    .venv/bin/python benchmarks/compress_vs_llmcompressor.py [--model demo] [--rounds 2]
        [--calib tests/fixtures/compress_calib.txt]
        [--eval tests/fixtures/compress_heldout.txt,tests/fixtures/compress_heldout_more.txt]
        [--samples 32] [--seqlen 512] [--dtype auto]

llm-compressor lives in its own venv, benchmarks/.venv-llmcompressor (made on first use:
torch==2.13.0 first, so pip does not pull a CUDA torch, then llmcompressor==0.14.0.1, which
pins its own transformers). Settings on both sides: SparseGPT 50% unstructured; GPTQ W4,
group 64, symmetric min-max grid, no activation order; damping 0.01, block 128; AWQ W4, group
64, asymmetric grid, duo scaling, 20-point grid, no clip search (llm-compressor has none), its
AWQModifier followed by a QuantizationModifier; the same
calibration windows (token ids made here with crbench's sampler, checked equal on our side);
the same perplexity code over the same held-out windows of 512 tokens. Runs alternate between
the two (ABBA over rounds) because the machine is shared; the load average is recorded.
Timed: the compression call alone, calibration forward passes included, model loading not.
Both sides load the model in `--dtype` (default auto: what crbench's measured probe picks on
this machine, `crbench env`; bf16 where the CPU runs it faster), so the calibration forwards
run in it on both; both keep Hessians and updates in fp32. Perplexity is evaluated in fp32 on
both (the compressed model cast up), comparable across dtypes.

Setting against setting (the rows the ratio is over) uses llm-compressor's rules where ours
differ by default: GPTQ fits every group's grid up front from the original weights
(`static_groups`; ours by default fits a grid when GPTQ reaches its group), and AWQ calibrates
each layer on the uncompressed model's outputs (`propagate = "dense"`, as AutoAWQ and
llm-compressor's AWQ do, whose sequential pipeline runs with quantization disabled; ours by
default calibrates on the outputs of the layers quantized so far). Our own rules are rows of
their own, set against the same llm-compressor run and not counted in the ratio:
`gptq-dynamic` and `awq-compressed`. `gptq-jitter1` to `gptq-jitter9` are the `gptq` row on
both sides with the Hessians scaled by 1 + 2^-23 ... 1 + 9 x 2^-23 (1 to 9 ulps in fp32, so
every draw is a different multiplier): float rounding changes only, which
moves GPTQ's perplexity by percents; with them the report adds the mean over all draws on
each side (`--methods sparsegpt,gptq,gptq-jitter1,gptq-jitter2`), the like-for-like perplexity.

Default against default (not counted in the ratio either): `gptq-default` is each side's GPTQ
with only bits, group 64 and the grid's symmetry given (ours: activation order; theirs:
actorder "static"); `awq-default` is ours with its defaults (clip search on) against
llm-compressor's `awq` run above, whose defaults are those settings.

Ends with `ratio: X` = llm-compressor's total time / ours (> 1: we are faster).
The same file is the worker each run executes (`... worker IMPL METHOD ...`), in either venv.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

try:
    from crbench.threads import set_openmp_waiting
except ImportError:  # the llm-compressor worker's venv: it inherits the wait chosen here
    pass
else:
    set_openmp_waiting()  # before torch loads
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "benchmarks" / ".venv-llmcompressor"
LLMCOMPRESSOR = "llmcompressor==0.14.0.1"


DAMP, BLOCK, SPARSITY, BITS, GROUP = 0.01, 128, 0.5, 4, 64
# row -> their row it is set against
OURS_ONLY = {"gptq-dynamic": "gptq", "awq-compressed": "awq", "awq-default": "awq"}
# `gptq-jitterK`: the `gptq` row, on both sides, with every Hessian scaled by 1 + K * 2^-23. GPTQ
# does not depend on H's scale, so this changes float rounding only, and rounding alone moves
# perplexity by percents (GPTQ carries a weight's rounding flip along its row). The report sets
# the mean over `gptq` and its jitters on one side against the same mean on the other: the
# perplexity each implementation gives, rather than that of one draw of its rounding.
JITTER = {f"gptq-jitter{k}": k * 2.0**-23 for k in range(1, 10)}  # k fp32 ulps of 1: distinct
GPTQ_STATIC = {"method": "gptq", "bits": BITS, "group_size": GROUP, "sym": True,
               "act_order": False, "static_groups": True}
OURS = {  # method -> our recipe settings (windows, damping and block added in run_crbench)
    "sparsegpt": {"method": "sparsegpt", "sparsity": SPARSITY},
    "gptq": GPTQ_STATIC,
    "gptq-dynamic": {"method": "gptq", "bits": BITS, "group_size": GROUP, "sym": True,
                     "act_order": False},
    **{name: GPTQ_STATIC for name in JITTER},
    "gptq-default": {"method": "gptq", "bits": BITS, "group_size": GROUP, "sym": True},
    "awq": {"method": "awq", "bits": BITS, "group_size": GROUP, "sym": False, "clip": False,
            "duo": True, "grid": 20, "propagate": "dense"},
    "awq-compressed": {"method": "awq", "bits": BITS, "group_size": GROUP, "sym": False,
                       "clip": False, "duo": True, "grid": 20},
    "awq-default": {"method": "awq", "bits": BITS, "group_size": GROUP},
}
HESSIAN = ("sparsegpt", "gptq")  # methods that take damp and block_size
# the ratio is over setting-against-setting rows, one draw each
NOT_IN_RATIO = {*OURS_ONLY, *JITTER, "gptq-default"}


@torch.no_grad()
def perplexity(model, windows: torch.Tensor) -> float:
    nll = 0.0
    for row in windows:
        logits = model(input_ids=row.unsqueeze(0)).logits[0, :-1].float()
        nll += torch.nn.functional.cross_entropy(logits, row[1:], reduction="sum").item()
    return math.exp(nll / (windows.shape[0] * (windows.shape[1] - 1)))


def run_crbench(model, tokenizer, method: str, calib: torch.Tensor, calib_file: str,
                dtype: str) -> None:
    from crbench.compress.calibration import calibration_windows, load_source
    from crbench.compress.hessian import HessianAccumulator
    from crbench.compress.pipeline import compress_loaded
    from crbench.compress.recipe import parse_recipe

    if method in JITTER:
        unscaled = HessianAccumulator.value
        HessianAccumulator.value = (  # type: ignore[method-assign]
            lambda self, where: unscaled(self, where) * (1 + JITTER[method]))

    samples, seqlen = calib.shape
    settings = dict(OURS[method])
    if settings["method"] in HESSIAN:
        settings.update(damp=DAMP, block_size=BLOCK)
    recipe = parse_recipe({**settings, "calib": calib_file, "calib_samples": samples,
                           "seqlen": seqlen, "seed": 0, "dtype": dtype})
    source = load_source(calib_file)
    ours, _ = calibration_windows(tokenizer, source, samples, seqlen, 0)
    assert torch.equal(ours, calib), "crbench would calibrate on other windows"
    compress_loaded(model, tokenizer, recipe, source=source)


def run_llmcompressor(model, tokenizer, method: str, calib: torch.Tensor) -> None:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.pruning import SparseGPTModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    if not torch.cuda.is_available():  # AWQ pins its cache for GPU copies; CPU-only it raises
        from llmcompressor.pipelines.cache import IntermediatesCache

        IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    ignore = ["re:.*lm_head"]  # "lm_head" alone misses it

    def groups(sym: bool) -> dict:
        weights = QuantizationArgs(num_bits=BITS, type="int", symmetric=sym, strategy="group",
                                   group_size=GROUP)
        return {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}

    modifier: object
    if method == "sparsegpt":
        modifier = SparseGPTModifier(sparsity=SPARSITY, mask_structure="0:0", block_size=BLOCK,
                                     dampening_frac=DAMP, targets=["Linear"], ignore=ignore)
    elif method == "gptq" or method in JITTER:
        if method in JITTER:
            import llmcompressor.modifiers.gptq.base as gptq_base

            unjittered = gptq_base.quantize_weight
            gptq_base.quantize_weight = (  # type: ignore[assignment]
                lambda hessians, **kw: unjittered(hessians=hessians * (1 + JITTER[method]), **kw))
        modifier = GPTQModifier(config_groups=groups(True), ignore=ignore, block_size=BLOCK,
                                dampening_frac=DAMP, actorder=None)
    elif method == "gptq-default":
        modifier = GPTQModifier(config_groups=groups(True), ignore=ignore)
    else:  # awq: the scales, then the quantization they were searched for
        modifier = [AWQModifier(duo_scaling=True, n_grid=20),
                    QuantizationModifier(config_groups=groups(False), ignore=ignore)]
    data = Dataset.from_dict({"input_ids": calib.tolist(),
                              "attention_mask": torch.ones_like(calib).tolist()})
    oneshot(model=model, tokenizer=tokenizer, dataset=data, recipe=modifier,
            num_calibration_samples=calib.shape[0], max_seq_length=calib.shape[1],
            shuffle_calibration_samples=False, pipeline="sequential")


def worker(impl: str, method: str, model_dir: str, windows_file: str, result_file: str,
           calib_file: str, dtype: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    windows = torch.load(windows_file)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    if impl == "crbench":
        run_crbench(model, tokenizer, method, windows["calib"], calib_file, dtype)
    else:
        run_llmcompressor(model, tokenizer, method, windows["calib"])
    seconds = time.perf_counter() - started
    model.float()  # evaluated in fp32 whatever the calibration ran in
    linear = [m for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and ".layers." in n]
    zeros = sum((m.weight == 0).sum().item() for m in linear)
    result = {
        "impl": impl, "method": method, "dtype": dtype, "seconds": round(seconds, 2),
        "ppl": perplexity(model, windows["eval"]),
        "sparsity": zeros / sum(m.weight.numel() for m in linear),
        "loadavg_before": round(load_before, 2), "loadavg_after": round(os.getloadavg()[0], 2),
        "torch_threads": torch.get_num_threads(),
    }
    Path(result_file).write_text(json.dumps(result), encoding="utf-8")


def setup_venv() -> str | None:
    """Make the llm-compressor venv if it is missing; None when ready, else why it failed."""
    python = VENV / "bin" / "python"
    if python.is_file() and subprocess.run([python, "-c", "import llmcompressor"],
                                           capture_output=True).returncode == 0:
        return None
    steps = [[sys.executable, "-m", "venv", str(VENV)],
             [python, "-m", "pip", "install", "-q", "torch==2.13.0"],  # CPU torch first
             [python, "-m", "pip", "install", "-q", LLMCOMPRESSOR]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            return f"{' '.join(map(str, step))} failed: {done.stderr.strip()[-2000:]}"
    return None


def versions(python: Path) -> dict:
    code = ("import json, importlib.metadata as m\n"
            "names = ['torch', 'transformers', 'llmcompressor', 'compressed-tensors', 'crbench']\n"
            "out = {}\n"
            "for n in names:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True,
                                     check=True).stdout)


def make_windows(model_dir: str, calib: str, heldout: str, samples: int, seqlen: int,
                 out: Path) -> None:
    from transformers import AutoTokenizer

    from crbench.compress.calibration import calibration_windows, load_source, read_text, tokenize

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    windows, _ = calibration_windows(tokenizer, load_source(calib), samples, seqlen, 0)
    stream = tokenize(tokenizer, "\n\n".join(read_text(path) for path in heldout.split(",")))
    count = len(stream) // 512
    torch.save({"calib": windows, "eval": stream[: count * 512].reshape(count, 512)}, out)


def main() -> None:
    import argparse

    from crbench.models import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--calib", default=str(ROOT / "tests/fixtures/compress_calib.txt"))
    parser.add_argument("--eval", default=",".join(  # held-out text files, comma-separated
        str(ROOT / "tests/fixtures" / name)
        for name in ("compress_heldout.txt", "compress_heldout_more.txt")))
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    # AWQ's search runs its blocks ~60 times a layer: give it fewer windows, a run of its own
    # (--methods awq,awq-compressed,awq-default --samples 4 --seqlen 256)
    parser.add_argument("--methods", default="sparsegpt,gptq,gptq-dynamic,gptq-default")
    parser.add_argument("--work", default="/tmp/crbench-vs-llmcompressor")
    parser.add_argument("--dtype", default="auto", help="auto | bf16 | fp32: both sides")
    args = parser.parse_args()
    from crbench.dtype import canonical, resolve_dtype

    dtype = canonical(resolve_dtype(args.dtype, "cpu"))

    failed = setup_venv()
    if failed:
        print(f"llm-compressor could not be installed: {failed}")
        sys.exit(1)
    model_dir = resolve_model(args.model)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    windows = work / "windows.pt"
    make_windows(model_dir, args.calib, args.eval, args.samples, args.seqlen, windows)
    pythons = {"crbench": Path(sys.executable), "llmcompressor": VENV / "bin" / "python"}
    print(f"model {model_dir}; calibration {args.samples} x {args.seqlen} tokens of "
          f"{args.calib}; model and forwards in {dtype} on both sides; "
          f"loadavg at start {os.getloadavg()}")
    for impl, python in pythons.items():
        print(f"{impl} venv: {versions(python)}")

    results: list[dict] = []
    for round_index in range(args.rounds):
        order = list(pythons) if round_index % 2 == 0 else list(pythons)[::-1]  # ABBA
        for method in args.methods.split(","):
            for impl in order:
                if method in OURS_ONLY and impl != "crbench":
                    continue
                out = work / f"{impl}-{method}-{round_index}.json"
                env = {**os.environ, "PYTHONPATH": ""}
                done = subprocess.run(
                    [pythons[impl], __file__, "worker", impl, method, model_dir, str(windows),
                     str(out), args.calib, dtype], env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{impl} {method} failed:\n{done.stderr[-3000:]}")
                    sys.exit(1)
                result = json.loads(out.read_text())
                results.append(result)
                print(f"  round {round_index} {method:9s} {impl:13s} {result['seconds']:7.1f} s  "
                      f"ppl {result['ppl']:.3f}  load {result['loadavg_before']:.1f}"
                      f"->{result['loadavg_after']:.1f}", flush=True)
    report(results)


def report(results: list[dict]) -> None:
    def mean(method: str, impl: str, key: str) -> float:
        values = [r[key] for r in results if r["method"] == method and r["impl"] == impl]
        return sum(values) / len(values)

    methods = sorted({r["method"] for r in results}, reverse=True)
    print("\n| method | crbench s | llm-compressor s | time ratio | crbench ppl | "
          "llm-compressor ppl | ppl diff |")
    print("|---|---|---|---|---|---|---|")
    for method in methods:
        against = OURS_ONLY.get(method, method)
        ours, theirs = mean(method, "crbench", "ppl"), mean(against, "llmcompressor", "ppl")
        seconds = mean(method, "crbench", "seconds"), mean(against, "llmcompressor", "seconds")
        print(f"| {method} | {seconds[0]:.1f} | {seconds[1]:.1f} | "
              f"{seconds[1] / seconds[0]:.2f} | {ours:.3f} | {theirs:.3f} | "
              f"{100 * (ours / theirs - 1):+.2f}% |")
    jittered = [m for m in ("gptq", *JITTER) if m in methods]
    if len(jittered) > 1:  # rounding noise averaged out on both sides
        ours, theirs = (sum(mean(m, impl, "ppl") for m in jittered) / len(jittered)
                        for impl in ("crbench", "llmcompressor"))
        print(f"| gptq, mean over {', '.join(jittered)} | | | | {ours:.3f} | {theirs:.3f} | "
              f"{100 * (ours / theirs - 1):+.2f}% |")
    results = [r for r in results if r["method"] not in NOT_IN_RATIO]
    ours_total = sum(r["seconds"] for r in results if r["impl"] == "crbench")
    theirs_total = sum(r["seconds"] for r in results if r["impl"] == "llmcompressor")
    print(f"loadavg at end {os.getloadavg()}")
    if ours_total:
        print(f"ratio: {theirs_total / ours_total:.2f}")
    else:  # only rows outside the ratio were run (jitter draws, ours-only rows)
        print("ratio: none (no setting-against-setting row was run)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(*sys.argv[2:9])
    else:
        main()
