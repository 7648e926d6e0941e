"""Where our GPTQ and llm-compressor's part ways (issue #16): both sides on the same small
calibration, every decoder linear weight and what each GPTQ call was given, compared.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gptq_layer_diff.py [--samples 4]
        [--seqlen 128] [--work /tmp/gptq-layer-diff]

Settings are the benchmark's "gptq" row (benchmarks/compress_vs_llmcompressor.py: W4, group
64, symmetric, no activation order, static groups, damping 0.01, block 128). Each side runs in
its own process (llm-compressor in benchmarks/.venv-llmcompressor) and saves:
  weights   every decoder linear weight after compression
  calls     per GPTQ call (one module, or our q/k/v and gate/up stacks): the weight and the
            Hessian it was given, and the static grid's scales (both sides fit them from the
            original weights before the first column)
Then, per module: fraction of entries equal, max abs difference, ||ours - theirs|| / ||theirs||;
per layer: the relative difference of the q/k/v Hessians (each normalised by its trace, since
the two sides scale H differently and GPTQ does not depend on that scale). Last, our gptq()
run on *their* weight and Hessian of a layer, against their result: the algorithm alone; and
each side's recorded q/k/v Hessians against ones recomputed with the layers before held dense,
at our weights, at theirs: which inputs each side calibrated on. `--rounding-runs` more runs of
ours with H multiplied by 1 + k 1e-7 (GPTQ is invariant to the scale of H: only the float
rounding changes) give the perplexity spread rounding alone causes.
Finding (4 x 128): the same inputs give the same GPTQ loss (to 1e-5) and both sides propagate
through their own compressed weights; H x 1.0000001 moves our weights as far from ours as
theirs are (70% equal entries by layer 15) and our perplexity by 2%.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / "benchmarks" / ".venv-llmcompressor" / "bin" / "python"
sys.path.insert(0, str(ROOT / "benchmarks"))


def decoder_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: module.weight.detach().clone() for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".layers." in name}


def run_ours(model: torch.nn.Module, tokenizer: object, calib: torch.Tensor, calib_file: str,
             calls: dict[str, dict], h_scale: float = 1.0) -> None:
    import compress_vs_llmcompressor as bench

    import crbench.compress.gptq as ours

    plain = ours.gptq

    @functools.wraps(plain)  # run_algorithm passes only the arguments the signature names
    def recording(w: torch.Tensor, h: torch.Tensor, **kwargs: Any) -> tuple:
        static = ours.static_quantizers(w.T.contiguous(), 64, 4, True)
        calls[str(kwargs.get("where"))] = {
            "w": w.clone(), "h": h.clone(),
            # [rows, groups]: each group's scale per output row
            "scale": torch.stack([q.scale for q in static], dim=1)}
        # GPTQ is invariant to the scale of H (the two sides scale it differently): any scale
        # other than 1 changes only the float rounding, to measure what rounding alone does
        return plain(w, h * h_scale if h_scale != 1.0 else h, **kwargs)

    ours.gptq = recording  # run_algorithm looks the function up on the module at each call
    bench.run_crbench(model, tokenizer, "gptq", calib, calib_file)


def run_theirs(model: torch.nn.Module, tokenizer: object, calib: torch.Tensor,
               calls: dict[str, dict]) -> None:
    import compress_vs_llmcompressor as bench
    from llmcompressor.modifiers.gptq import base

    names = {id(m): n for n, m in model.named_modules()}
    plain_prepare, plain_quantize = base.prepare_batch, base.quantize_weight
    current: list[str] = []

    def prepare(batch: list, *args: object) -> tuple:
        current[:] = [names[id(m)] for m in batch]
        return plain_prepare(batch, *args)

    def quantize(*, weights: torch.Tensor, hessians: torch.Tensor, scale: torch.Tensor,
                 **kwargs: object) -> tuple:
        for i, name in enumerate(current):
            calls[name] = {"w": weights[i].clone(), "h": hessians[i].clone(),
                           "scale": scale[i].clone()}
        return plain_quantize(weights=weights, hessians=hessians, scale=scale, **kwargs)

    base.prepare_batch, base.quantize_weight = prepare, quantize
    bench.run_llmcompressor(model, tokenizer, "gptq", calib)


def worker(impl: str, model_dir: str, windows_file: str, calib_file: str, out: str,
           h_scale: str = "1") -> None:
    import compress_vs_llmcompressor as bench
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    windows = torch.load(windows_file)
    calib = windows["calib"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    calls: dict[str, dict] = {}
    if impl == "crbench":
        run_ours(model, tokenizer, calib, calib_file, calls, float(h_scale))
    else:
        run_theirs(model, tokenizer, calib, calls)
    ppl = bench.perplexity(model, windows["eval"])
    torch.save({"weights": decoder_weights(model), "calls": calls, "ppl": ppl}, out)


# our modules that share one input are compressed as one stack of rows, named by its first
SHARED = {"k_proj": ("q_proj", ["q_proj"]), "v_proj": ("q_proj", ["q_proj", "k_proj"]),
          "up_proj": ("gate_proj", ["gate_proj"]), "q_proj": ("q_proj", []),
          "gate_proj": ("gate_proj", [])}


def stacked(calls: dict[str, dict], name: str, rows: dict[str, int]) -> tuple[dict, slice]:
    """Our call that compressed `name`, and the rows of `name` in its stack."""
    layer, leaf = name.rsplit(".", 1)
    first, before = SHARED.get(leaf, (leaf, []))
    start = sum(rows[f"{layer}.{b}"] for b in before)
    return calls[f"{layer}.{first}"], slice(start, start + rows[name])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def normalised(h: torch.Tensor) -> torch.Tensor:
    return h / torch.diagonal(h).sum()


def compare(ours: dict, theirs: dict) -> None:
    from crbench.compress.gptq import gptq

    rows = {name: w.shape[0] for name, w in theirs["weights"].items()}
    print("| module | equal | max abs diff | rel diff | rel diff of H | rel diff of "
          "W given | scales equal |")
    print("|---|---|---|---|---|---|---|")
    for name, w_theirs in theirs["weights"].items():
        w_ours = ours["weights"][name]
        ours_call, part = stacked(ours["calls"], name, rows)
        their_call = theirs["calls"][name]
        h_diff = relative(normalised(ours_call["h"]), normalised(their_call["h"]))
        given = relative(ours_call["w"][part], their_call["w"])
        scales = (ours_call["scale"][part] == their_call["scale"]).float().mean().item()
        print(f"| {name} | {(w_ours == w_theirs).float().mean().item():.6f} | "
              f"{(w_ours - w_theirs).abs().max().item():.3g} | {relative(w_ours, w_theirs):.4g} "
              f"| {h_diff:.3g} | {given:.3g} | {scales:.4f} |")
    # The algorithm alone: our gptq() on their inputs of a few modules, against their output.
    print("\nour gptq() on llm-compressor's own W and H, against its result:")
    for name in list(theirs["calls"])[:7]:
        call = theirs["calls"][name]
        mine, _ = gptq(call["w"], call["h"], bits=4, group_size=64, sym=True, act_order=False,
                       static_groups=True, damp=0.01, block_size=128)
        w_theirs = theirs["weights"][name]
        print(f"  {name}: equal {(mine == w_theirs).float().mean().item():.4f}, "
              f"rel diff {relative(mine, w_theirs):.3g}")


@torch.no_grad()
def q_input_hessians(model: torch.nn.Module, weights: dict[str, torch.Tensor] | None,
                     calib: torch.Tensor) -> dict[str, torch.Tensor]:
    """X^T X of every layer's q_proj input with the decoder weights set to `weights` (None:
    the original ones). Layer L's q_proj input depends only on layers < L, so this is what
    layer L would be calibrated on if the layers before it held these weights."""
    from crbench.compress.hessian import HessianAccumulator

    originals = decoder_weights(model)
    modules = dict(model.named_modules())
    for name, w in (weights or originals).items():
        modules[name].weight.data = w.clone()
    sums: dict[str, HessianAccumulator] = {}
    handles = []
    for name, module in modules.items():
        if name.endswith("q_proj"):
            sums[name] = HessianAccumulator(module.in_features, torch.device("cpu"))
            handles.append(module.register_forward_pre_hook(
                lambda mod, args, name=name: sums[name].add(args[0])))
    for row in calib:
        model(input_ids=row.unsqueeze(0), use_cache=False)
    for handle in handles:
        handle.remove()
    for name, w in originals.items():
        modules[name].weight.data = w
    return {name: acc.value(name) for name, acc in sums.items()}


def propagation_check(ours: dict, theirs: dict, model_dir: str, calib: torch.Tensor) -> None:
    """Which inputs each side calibrated layer L on: its recorded q/k/v Hessian against the
    one recomputed with the layers before L dense, holding our weights, holding theirs."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    recomputed = {label: q_input_hessians(model, weights, calib) for label, weights in
                  (("dense", None), ("ours", ours["weights"]), ("theirs", theirs["weights"]))}
    print("\nrecorded q/k/v Hessian of each side vs recomputed with the layers before it "
          "dense / holding our weights / holding theirs (rel diff, trace-normalised):")
    print("| layer | ours~dense | ours~ours | ours~theirs | theirs~dense | theirs~ours | "
          "theirs~theirs |")
    print("|---|---|---|---|---|---|---|")
    for name in recomputed["dense"]:
        cells = [relative(normalised(side["calls"][name]["h"]),
                          normalised(recomputed[label][name]))
                 for side in (ours, theirs) for label in ("dense", "ours", "theirs")]
        print(f"| {name.split('.')[2]} | " + " | ".join(f"{c:.3g}" for c in cells) + " |")


def main() -> None:
    import argparse

    import compress_vs_llmcompressor as bench

    from crbench.models import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--calib", default=str(ROOT / "tests/fixtures/compress_calib.txt"))
    parser.add_argument("--eval", default=str(ROOT / "tests/fixtures/compress_heldout.txt"))
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--work", default="/tmp/gptq-layer-diff")
    parser.add_argument("--reuse", action="store_true", help="compare the saved runs again")
    parser.add_argument("--rounding-runs", type=int, default=3,
                        help="extra runs of ours with H scaled by 1 + k 1e-7 (rounding only)")
    args = parser.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model(args.model)
    windows = work / "windows.pt"
    runs = {"crbench": (Path(sys.executable), "crbench", "1"),
            "llmcompressor": (VENV_PYTHON, "llmcompressor", "1")}
    for k in range(1, args.rounding_runs + 1):
        runs[f"crbench-h{k}"] = (Path(sys.executable), "crbench", f"{1 + k * 1e-7:.7f}")
    outs = {label: work / f"{label}.pt" for label in runs}
    if not args.reuse:
        bench.make_windows(model_dir, args.calib, args.eval, args.samples, args.seqlen, windows)
        for label, (python, impl, h_scale) in runs.items():
            done = subprocess.run([python, __file__, "worker", impl, model_dir, str(windows),
                                   args.calib, str(outs[label]), h_scale],
                                  env={**os.environ, "PYTHONPATH": ""}, capture_output=True,
                                  text=True)
            if done.returncode != 0:
                print(f"{label} failed:\n{done.stderr[-3000:]}")
                sys.exit(1)
    saved = {label: torch.load(out) for label, out in outs.items() if out.is_file()}
    ours, theirs = saved["crbench"], saved["llmcompressor"]
    print(f"calibration {args.samples} x {args.seqlen}; perplexity on the held-out windows "
          "(H scale: ours with H multiplied by it, which changes only the rounding):")
    for label, run in saved.items():
        print(f"  {label:14s} H scale {runs[label][2]}  ppl {run['ppl']:.3f}  "
              f"vs llm-compressor {100 * (run['ppl'] / theirs['ppl'] - 1):+.2f}%")
    compare(ours, theirs)
    propagation_check(ours, theirs, model_dir, torch.load(windows)["calib"])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(*sys.argv[2:8])
    else:
        main()
