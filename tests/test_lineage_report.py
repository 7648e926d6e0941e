"""Models made elsewhere, declared in a spec, in the report beside their parent (issue #14): the
real SmolLM2 Q4_1 GGUF, the tiny reasoner (a LoRA distillation of the demo model) and a W4A16
checkpoint in the compressed-tensors format (what llm-compressor publishes), each with
`parent = "demo"`, run by `crbench run` and read back from `crbench report`'s CSV and markdown.

Expected bits per weight are worked out from the stored layout of SmolLM2-135M: 106,168,320
decoder linear weights (30 layers x 7 linears), a tied 49,152 x 576 embedding, 61 norms."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
LINEARS, EMBEDDING, NORMS = 106_168_320, 49_152 * 576, 35_136
PARAMS = LINEARS + EMBEDDING + NORMS
GROUP = 64  # SmolLM2's widths (576, 1536) are multiples of 64, not of 128
# llm-compressor's recipe for round-to-nearest W4A16, as it saves it beside the weights.
RECIPE = """default_stage:
  default_modifiers:
    QuantizationModifier:
      targets: [Linear]
      ignore: [lm_head]
      scheme: W4A16
"""


def crbench(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "crbench.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=900)


def write_w4_checkpoint(model: Path, out: Path) -> Path:
    """The demo model quantized to 4 bits (symmetric, groups of 64, round to nearest; lm_head,
    i.e. the tied embedding, left in bf16) and saved packed, by compressed-tensors' own API,
    as llm-compressor does: scales from each group's range, then `ModelCompressor`."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        QuantizationStatus,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dense = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16)
    scheme = preset_name_to_scheme("W4A16", ["Linear"])
    assert scheme.weights is not None
    scheme.weights.group_size = GROUP
    apply_quantization_config(dense, QuantizationConfig(
        config_groups={"group_0": scheme}, ignore=["lm_head"],
        quantization_status=QuantizationStatus.INITIALIZED), show_progress=False)
    quantized = 0
    for module in dense.modules():
        if getattr(module, "quantization_scheme", None) is None:
            continue
        rows, cols = module.weight.shape
        groups = module.weight.detach().float().reshape(rows, cols // GROUP, GROUP)
        scale, zero = calculate_qparams(groups.amin(-1), groups.amax(-1), scheme.weights)
        module.weight_scale.data.copy_(scale)
        module.weight_zero_point.data.copy_(zero)
        module.quantization_status = QuantizationStatus.FROZEN
        quantized += 1
    assert quantized == 210
    compressor = ModelCompressor.from_pretrained_model(dense, "pack-quantized")
    compressor.compress_model(dense)
    dense.save_pretrained(out)
    compressor.update_config(str(out))
    AutoTokenizer.from_pretrained(model).save_pretrained(out)
    (out / "recipe.yaml").write_text(RECIPE, encoding="utf-8")
    return out


def spec_text(w4: Path, gguf: Path, parent: str = "demo") -> str:
    return f"""
[models.demo]
source = "demo"

[models.q4-gguf]
source = "{gguf}"
parent = "{parent}"

[models.reasoner]
source = "tiny-reasoner"
parent = "demo"
method = "distill"

[models.w4]
source = "{w4}"
parent = "demo"

[[tasks]]
task = "aime24"
path = "{DATA / 'aime_mini.jsonl'}"
limit = 2

[sampling]
max_new_tokens = 8
"""


def markdown_rows(report: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header row starts with `first_header`."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("|") and line.strip("| ").startswith(first_header))
    header = [cell.strip() for cell in lines[start].strip().strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip().strip("|").split("|")),
                             strict=True)))
    return rows


@pytest.fixture(scope="module")
def w4_checkpoint(tmp_path_factory, demo_model) -> Path:
    return write_w4_checkpoint(demo_model, tmp_path_factory.mktemp("published") / "w4")


def test_models_made_elsewhere_sit_beside_their_parent(tmp_path, w4_checkpoint):
    from crbench.models import demo_gguf_path

    w4 = w4_checkpoint
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text(w4, demo_gguf_path()), encoding="utf-8")
    run = crbench("run", spec, "--out", tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    report = crbench("report", tmp_path / "run", "--format", "md,csv")
    assert report.returncode == 0, report.stderr[-3000:]

    with (tmp_path / "run" / "report" / "csv" / "main.csv").open(encoding="utf-8") as f:
        rows = {row["variant"]: row for row in csv.DictReader(f)}
    # Grouped with their parent: the dense model first, then what was made from it.
    assert list(rows)[0] == "demo" and set(rows) == {"demo", "q4-gguf", "reasoner", "w4"}
    assert {name: row["base_model"] for name, row in rows.items()} == dict.fromkeys(rows, "demo")
    lineage = {name: (row["parent"], row["method"], float(row["bits"]) if row["bits"] else None)
               for name, row in rows.items()}
    assert lineage == {"demo": ("", "dense", None), "q4-gguf": ("demo", "gguf", 4),
                       "reasoner": ("demo", "distill", None), "w4": ("demo", "rtn", 4)}
    bits = {name: float(row["bits_per_weight"]) for name, row in rows.items()}
    # GGUF: Q4_1 linears (5 bits with their block scale and minimum), Q8_0 embedding (8.5),
    # F32 norms; the header says so.
    gguf = (LINEARS * 5 + EMBEDDING * 8.5 + NORMS * 32) / PARAMS
    assert 4.5 < bits["q4-gguf"] < 6 and bits["q4-gguf"] == pytest.approx(gguf, abs=0.01)
    # W4A16: 4 bits + a bf16 scale per 64 weights, the embedding and norms in bf16, and a
    # 2-number int64 shape per packed linear; the 16-bit embedding is a fifth of the model.
    w4_bits = (LINEARS * (4 + 16 / GROUP) + (EMBEDDING + NORMS) * 16 + 210 * 2 * 64) / PARAMS
    assert bits["w4"] == pytest.approx(w4_bits, abs=0.01) and 6.5 < bits["w4"] < 7
    assert bits["demo"] == bits["reasoner"] == 32.0  # stored fp32, nothing quantized
    # The GGUF's size is the file's, not that of the fp32 folder the hf engine loads.
    assert float(rows["q4-gguf"]["size_gb"]) == demo_gguf_path().stat().st_size / 1e9

    page = markdown_rows((tmp_path / "run" / "report" / "report.md").read_text(
        encoding="utf-8"), "variant")
    shown = {row["variant"]: (row["parent"], row["method"], row["bits"], row["bits/weight"])
             for row in page}
    assert shown == {"demo": ("—", "dense", "16", "32.00"),
                     "q4-gguf": ("demo", "gguf", "4", f"{bits['q4-gguf']:.2f}"),
                     "reasoner": ("demo", "distill", "16", "32.00"),
                     "w4": ("demo", "rtn", "4", f"{bits['w4']:.2f}")}


def test_an_unknown_parent_is_one_line(tmp_path):
    from crbench.models import demo_gguf_path

    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text(tmp_path, demo_gguf_path(), parent="dmeo"), encoding="utf-8")
    result = crbench("run", spec, "--dry-run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert f"{spec}:[models.q4-gguf].parent:" in result.stderr
    assert "'dmeo' is not a model or variant" in result.stderr


def test_the_checkpoint_is_what_transformers_loads(w4_checkpoint, demo_model):
    """The control for the run above: the folder is the published format, and what the hf
    engine's loader makes of it is the demo model rounded to 4 bits, not the dense weights."""
    import torch

    from crbench.lineage import read_lineage
    from crbench.models import load_causal_lm

    config = json.loads((w4_checkpoint / "config.json").read_text(encoding="utf-8"))
    quantization = config["quantization_config"]
    assert (quantization["quant_method"], quantization["format"]) == (
        "compressed-tensors", "pack-quantized")
    lineage = read_lineage(w4_checkpoint)
    assert (lineage.method, lineage.bits, lineage.group_size) == ("rtn", 4, GROUP)
    assert lineage.details["ignore"] == ["lm_head"]

    model, tokenizer = load_causal_lm(w4_checkpoint, device="cpu")
    dense, _ = load_causal_lm(demo_model, device="cpu")
    with torch.no_grad():  # compressed-tensors unpacks the weights on the first forward pass
        model(**tokenizer("Two and two", return_tensors="pt"))
    loaded = model.model.layers[0].self_attn.q_proj.weight.float()
    original = dense.model.layers[0].self_attn.q_proj.weight.to(torch.bfloat16).float()
    rows, cols = original.shape
    groups = original.reshape(rows, cols // GROUP, GROUP)
    step = groups.abs().amax(-1, keepdim=True) / 7.5  # symmetric: levels -8..7 x max/7.5
    error = (loaded.reshape(rows, cols // GROUP, GROUP) - groups).abs() / step
    assert error.mean() > 0.1  # rounded, not the dense weights
    # to the nearest level: half a step, plus the bf16 scale's rounding (2^-8) at level 8
    assert error.max() <= 0.5 + 8 / 2**8
