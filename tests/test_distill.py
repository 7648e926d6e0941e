"""`crbench distill` on the real demo model: a few LoRA steps on solver traces lower the
held-out loss; a run SIGKILLed mid-way resumes to the same adapter; bad trace files are one
line; the shipped tiny reasoner matches its manifest and thinks before it answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crbench.distill import distill, parse_recipe
from crbench.distill_data import TracePair, jsonl_pairs, tokenize
from crbench.errors import InputError
from crbench.tasks import synth_arith

# A handful of level-1 arithmetic traces, in the chat style the tiny reasoner uses: short rows
# (about 125 tokens), so each step is a few seconds on a loaded 2-core CPU.
TRAIN_N, STEPS = 8, 6


def arith_pairs(n: int, seed: int) -> list[TracePair]:
    return [TracePair(synth_arith.prompt(item, "chat"), synth_arith.trace(item), item.id)
            for item in synth_arith.generate(n, 1, seed)]


def write_pairs(pairs: list[TracePair], path: Path) -> Path:
    rows = [json.dumps({"prompt": p.prompt, "completion": p.completion}) for p in pairs]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def recipe_for(traces: Path) -> dict:
    return {"student": "demo", "traces": str(traces), "max_steps": STEPS, "batch_size": 1,
            "lr": 3e-3, "warmup_ratio": 0.0, "save_steps": 1, "logging_steps": 1, "seed": 0,
            # fp32: bf16 matmuls differed by ~0.1% in loss between two processes (measured),
            # which would hide whether resuming itself changes anything.
            "precision": "fp32"}


# transformers 5.25 renamed the option that turns checkpointing off; the old name warns
NO_RENAMED_OPTION = pytest.mark.filterwarnings(
    "error:`gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pairs(arith_pairs(TRAIN_N, 7), tmp_path_factory.mktemp("traces") / "t.jsonl")


@pytest.fixture(scope="module")
def trained(traces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted short distillation (shared by the loss and the resume tests)."""
    out = tmp_path_factory.mktemp("distill") / "run"
    return distill(parse_recipe(recipe_for(traces)), out, log=lambda _: None)


def completion_loss(model_dir: str | Path, pairs: list[TracePair]) -> float:
    """Mean cross-entropy of the completion tokens, the quantity SFT lowers."""
    import torch

    from crbench.models import load_causal_lm

    model, tokenizer = load_causal_lm(model_dir, device="cpu")
    total, count = 0.0, 0
    with torch.inference_mode():
        for row in tokenize(pairs, tokenizer, 1024):
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor([[t if m else -100 for t, m in
                                    zip(row["input_ids"], row["completion_mask"], strict=True)]])
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    return total / count


@NO_RENAMED_OPTION
def test_short_distillation_lowers_held_out_loss(trained: Path):
    held_out = arith_pairs(6, 99)
    before = completion_loss("demo", held_out)
    after = completion_loss(trained, held_out)
    assert after < 0.8 * before, (before, after)
    manifest = json.loads((trained / "distill.json").read_text())
    assert manifest["steps"] == STEPS and manifest["examples"] == TRAIN_N
    assert [x["step"] for x in manifest["losses"]] == list(range(1, STEPS + 1))
    assert len(manifest["data_sha256"]) == 64 and manifest["versions"]["trl"]
    assert (trained / "adapter" / "adapter_model.safetensors").is_file()
    assert not (trained / "checkpoints").exists()  # finished: nothing left to resume


@NO_RENAMED_OPTION
def test_sigkill_then_resume_reaches_the_same_adapter(trained: Path, traces: Path,
                                                      tmp_path: Path):
    from safetensors.torch import load_file

    out = tmp_path / "killed"
    code = ("import json, sys\nfrom crbench.distill import distill, parse_recipe\n"
            "distill(parse_recipe(json.loads(sys.argv[1])), sys.argv[2], log=lambda _: None)\n")
    args = [sys.executable, "-c", code, json.dumps(recipe_for(traces)), str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 600
    while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.is_file() and not (out / "distill.json").exists(), \
        "the kill should land mid-training"

    resumed = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = json.loads((out / "distill.json").read_text())
    reference = json.loads((trained / "distill.json").read_text())
    assert manifest["resumed_from"] is not None and manifest["steps"] == reference["steps"]
    assert manifest["data_sha256"] == reference["data_sha256"]
    losses = [x["loss"] for x in manifest["losses"]]
    assert losses == pytest.approx([x["loss"] for x in reference["losses"]], rel=1e-3)
    got = load_file(out / "adapter" / "adapter_model.safetensors")
    want = load_file(trained / "adapter" / "adapter_model.safetensors")
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert (got[name] - tensor).abs().max() <= 1e-5 + 1e-3 * tensor.abs().max(), name


BAD_TRACES = {
    "bad-json": ('{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n', "line 2"),
    "no-completion": ('{"prompt": "a"}\n', "line 1"),
    "prompt-number": ('{"prompt": "a", "completion": "b"}\n' * 2
                      + '{"prompt": 5, "completion": "b"}\n', "line 3"),
    "not-object": ('["a", "b"]\n', "line 1"),
    "empty": ("\n", "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRACES))
def test_bad_trace_file_is_one_line_error(case: str, tmp_path: Path):
    text, where = BAD_TRACES[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        jsonl_pairs(path)
    assert where in str(caught.value) and str(path) in str(caught.value)
    if case == "bad-json":  # and through the CLI: one line, exit 2, nothing written
        out = tmp_path / "out"
        result = subprocess.run(
            [sys.executable, "-m", "crbench.cli", "distill", "--traces", str(path),
             "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and where in lines[0] and path.name in lines[0], lines
        assert not out.exists()


def test_recipe_needs_exactly_one_data_source():
    with pytest.raises(InputError, match="exactly one data source"):
        parse_recipe({"synthetic": "synth_arith:1", "traces": "x.jsonl"})
    with pytest.raises(InputError, match="unknown synthetic family"):
        from crbench.distill import load_pairs

        load_pairs(parse_recipe({"synthetic": "synth_chess:1"}))


def test_shipped_tiny_reasoner_matches_manifest_and_thinks_first():
    from crbench import reasoner
    from crbench.engines.base import SamplingParams
    from crbench.engines.hf import HFEngine
    from crbench.extract import split_thinking

    adapter = reasoner.HERE / reasoner.ADAPTER_FILE
    assert adapter.stat().st_size <= 10_000_000
    manifest = reasoner.manifest()
    assert reasoner.check_adapter() == manifest["adapter_sha256"]
    assert manifest["recipe"]["synthetic"] and manifest["steps"] > 0
    # made by the recipe `crbench distill --recipe tiny-reasoner` runs today, from its data
    from crbench.distill import named_recipe

    recipe = named_recipe("tiny-reasoner")
    assert manifest["recipe"] == recipe.model_dump(mode="json")
    assert manifest["data_source"] == recipe.source()

    # Level-1 arithmetic, where the measured accuracy is 100% (temporal is near chance: see
    # the manifest's evaluation).
    items = synth_arith.generate(4, 1, 0)
    engine = HFEngine("tiny-reasoner", batch_size=8)
    prompts = [synth_arith.prompt(item, "chat") for item in items]
    outputs = dict(engine.generate(prompts, SamplingParams(max_new_tokens=96)))
    correct = 0
    for i, item in enumerate(items):
        text = outputs[i].text
        assert text.startswith("<think>") and split_thinking(text).closed, text
        score = synth_arith.score(item, text)
        assert not score.no_answer and score.rule.endswith("after-think"), (text, score)
        correct += score.correct
    assert correct >= 3, correct


def test_run_store_gives_traces_picked_correct_shortest_or_all(tmp_path: Path):
    from crbench.distill_data import run_pairs
    from crbench.records import GenerationRecord, ScoreRecord
    from crbench.store import connect, insert_generation

    item = synth_arith.generate(2, 1, 0)
    chat = json.dumps(synth_arith.prompt(item[0], "chat"))
    outputs = [  # (item, output, tokens, correct)
        (0, synth_arith.trace(item[0]), 30, True),
        (0, "<think>\nLonger working.\n" + synth_arith.trace(item[0])[8:], 40, True),
        (0, "<think>\nno\n</think>\n\\boxed{0}", 10, False),
        (1, "<think>\nno\n</think>\n\\boxed{0}", 10, False),
    ]
    conn = connect(tmp_path)
    for i, (index, text, tokens, correct) in enumerate(outputs):
        key = f"k{i}"
        generation = GenerationRecord(
            key=key, variant="teacher", base_model="teacher", engine="hf", task="arith",
            task_id="synth_arith", task_options="{}", item_index=index, item_id=str(index),
            repeat=i, seed=0, sampling="{}", prompt=chat, output=text, reasoning=None,
            prompt_tokens=90, completion_tokens=tokens, thinking_tokens=tokens - 5,
            answer_tokens=5, finish_reason="stop", truncated=False, wall_s=0.1)
        score = ScoreRecord(key=key, extracted=None, correct=correct, no_answer=False,
                            truncated=False, rule="boxed-after-think")
        insert_generation(conn, generation, score)
    conn.close()
    assert len(run_pairs(tmp_path, "all")) == 4
    assert len(run_pairs(tmp_path, "correct")) == 2
    (shortest,) = run_pairs(tmp_path, "shortest-correct")
    assert shortest.completion == synth_arith.trace(item[0])
    assert shortest.prompt == synth_arith.prompt(item[0], "chat")  # messages, not JSON text
