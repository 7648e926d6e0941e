"""`crbench importance`: behaviour labels beside the traces, directions and normalisation by
hand, the gradient the attribution reads checked by finite differences on the real demo model,
and a real importance run (validation included) on two short traces."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch

from crbench.errors import InputError
from crbench.importance import (
    ALL,
    Attribution,
    LinearModule,
    Means,
    OutputCapture,
    TokenTrace,
    decoder_linears,
    next_token_loss,
    normalised,
    run_model,
    token_trace,
)
from crbench.importance_labels import (
    LABELS_FILE,
    label_traces,
    label_with_model,
    labelled_text,
    read_labels,
)
from crbench.records import GenerationRecord, VariantRecord

TRACES = [
    "Okay, so we need to multiply 12 by 3. Let me check: 12 times 3 is 36. Wait, that is not "
    "right, let me reconsider. Hmm, maybe it is 36 after all. I recall the rule for multiplying "
    "by 3. For example, 10 times 3 is 30 and 2 times 3 is 6.\n</think>\nThe answer is 36.",
    "We are given two numbers. Perhaps the sum is 15. Let me verify by substituting 7 and 8. "
    "By definition the sum adds them. Actually, I made a mistake: 7 plus 8 is 15, so it holds.\n"
    "</think>\nThe answer is 15.",
]


def generation(i: int, output: str, reasoning: str | None = None) -> GenerationRecord:
    return GenerationRecord(
        key=f"k{i}", variant="dense", base_model="dense", engine="hf", task="arith",
        task_id="aime24", task_options="{}", item_index=i, item_id=f"q{i}", repeat=0, seed=0,
        sampling="{}", prompt=f"Question {i}: compute it.\n<think>\n", output=output,
        reasoning=reasoning, prompt_tokens=8, completion_tokens=60, thinking_tokens=50,
        answer_tokens=10, finish_reason="stop", truncated=False, wall_s=0.1)


# --- labels ---------------------------------------------------------------------------------


def test_rule_labels_are_stored_beside_the_traces(tmp_path: Path) -> None:
    gens = [generation(0, TRACES[0]), generation(1, "ok", reasoning="Wait, no. So 2.")]
    path = tmp_path / "importance" / LABELS_FILE
    labels = label_traces(gens, path)
    assert read_labels(path) == labels
    first = {labelled_text(gens[0])[s.start:s.end]: s.label for s in labels["k0"].sentences}
    assert first["Wait, that is not right, let me reconsider."] == "backtracking"
    assert first["Hmm, maybe it is 36 after all."] == "uncertainty-estimation"
    assert first["I recall the rule for multiplying by 3."] == "adding-knowledge"
    served = labels["k1"]  # a server's separate reasoning is labelled inside its think tags
    text = labelled_text(gens[1])
    assert text.startswith("<think>\nWait, no.")
    assert [(text[s.start:s.end], s.label) for s in served.sentences][:3] == [
        ("<think>", "other"), ("Wait, no.", "backtracking"), ("So 2.", "deduction")]
    label_traces([generation(2, "Maybe.")], path)  # merged, not replaced
    assert sorted(read_labels(path)) == ["k0", "k1", "k2"]


def test_bad_labels_file_is_one_input_error(tmp_path: Path) -> None:
    path = tmp_path / LABELS_FILE
    good = {"key": "k", "variant": "v", "labeller": "rules",
            "sentences": [{"start": 0, "end": 3, "label": "backtracking"}]}
    path.write_text(json.dumps(good) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        read_labels(path)
    path.write_text(json.dumps({**good, "sentences": [{"start": 0, "end": 3, "label": "x"}]}))
    with pytest.raises(InputError, match="bad sentence"):
        read_labels(path)


def test_model_labels_read_leniently() -> None:
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "1: initializing\n2. backtracking\nnoise\n3) nonsense\n"

    labels = label_with_model(generation(0, "We need x. Wait, no. So y. Then z."), ask, "m")
    assert "1. We need x." in asked[0] and "backtracking" in asked[0]
    assert [s.label for s in labels.sentences] == ["initializing", "backtracking", "other",
                                                   "other"]
    assert labels.labeller == "model:m"


def test_model_labels_come_over_a_real_http_server(tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from crbench.importance_labels import model_asker

    asked: list[dict[str, Any]] = []

    class Labeller(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            asked.append({"path": self.path, **body})
            answer = {"choices": [{"message": {"content": "1: adding-knowledge\n2: backtracking"},
                                   "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 9, "completion_tokens": 9}}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Labeller)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        labels = label_traces([generation(0, "I recall x. Wait, no.")], tmp_path / LABELS_FILE,
                              ask=model_asker(url, "judge"), model_name="judge")
    finally:
        server.shutdown()
    assert [s.label for s in labels["k0"].sentences] == ["adding-knowledge", "backtracking"]
    assert labels["k0"].labeller == "model:judge"
    assert asked[0]["path"] == "/v1/chat/completions" and asked[0]["model"] == "judge"
    assert "1. I recall x.\n2. Wait, no." in asked[0]["messages"][0]["content"]
    again = label_traces([generation(0, "I recall x. Wait, no.")], tmp_path / LABELS_FILE,
                         ask=lambda prompt: "", model_name="judge")
    assert again == labels and len(asked) == 1  # stored labels of that labeller are reused


# --- by hand ----------------------------------------------------------------------------------


def test_direction_is_the_rescaled_difference_of_means() -> None:
    means = Means()
    outputs = {"m": torch.tensor([[[1.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.0, 4.0]]])}
    means.add(outputs, TokenTrace("k", [0, 1, 2, 3], [0, 1, 2, 3], {"backtracking": [2, 3]}))
    u = means.directions()["backtracking"]["m"]
    # overall mean (2, 1), behaviour mean (3, 2): difference (1, 1) scaled to |(2, 1)| = sqrt 5
    expected = torch.tensor([1.0, 1.0]) / math.sqrt(2) * math.sqrt(5)
    assert torch.allclose(u, expected)


def test_importance_sums_to_one_per_behaviour_and_all() -> None:
    mods = [LinearModule(n, 0, n, 4, torch.nn.Linear(2, 2)) for n in ("a", "b")]
    attribution = Attribution({"backtracking": {"a": 3.0, "b": 1.0},
                               "example-testing": {"a": 0.0, "b": 2.0}},
                              {"backtracking": 2, "example-testing": 1})
    table = normalised(attribution, mods, ["backtracking", "example-testing",
                                           "adding-knowledge"])
    assert table["a"] == {"backtracking": 0.75, "example-testing": 0.0, ALL: 0.375}
    assert table["b"] == {"backtracking": 0.25, "example-testing": 1.0, ALL: 0.625}


# --- the real model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> tuple[Any, Any]:  # Any: a Hugging Face model and tokenizer
    from crbench.models import load_causal_lm

    model, tokenizer = load_causal_lm("demo", device="cpu", dtype="float32")
    model.requires_grad_(False)
    return model, tokenizer


def test_spans_map_onto_tokens_with_a_lead(demo: tuple[Any, Any], tmp_path: Path) -> None:
    _, tokenizer = demo
    g = generation(0, TRACES[0])
    labels = label_traces([g], tmp_path / LABELS_FILE)["k0"]
    trace = token_trace(g, labels, tokenizer, max_tokens=512)
    prompt_tokens = len(tokenizer(g.prompt)["input_ids"])
    assert trace.trace_positions[0] in (prompt_tokens - 1, prompt_tokens)
    assert trace.trace_positions[-1] == len(trace.ids) - 1
    positions = trace.behaviour_positions["backtracking"]
    assert positions == list(range(positions[0], positions[-1] + 1))  # one span
    text = tokenizer.decode(trace.ids[positions[0] + 5: positions[-1] + 1])
    assert text.strip() == "Wait, that is not right, let me reconsider."
    short = token_trace(g, labels, tokenizer, max_tokens=20)  # cut: later spans fall away
    assert len(short.ids) == 20 and short.behaviour_positions["backtracking"] == []


def test_gradient_read_by_attribution_matches_finite_differences(demo: tuple[Any, Any],
                                                                 tmp_path: Path) -> None:
    model, tokenizer = demo
    g = generation(0, TRACES[0])
    trace = token_trace(g, label_traces([g], tmp_path / LABELS_FILE)["k0"], tokenizer, 512)
    positions = trace.behaviour_positions["backtracking"]
    modules = [m for m in decoder_linears(model) if m.name.endswith("20.mlp.gate_proj")]
    device = torch.device("cpu")
    with OutputCapture(model, modules, grads=True) as capture:
        loss = next_token_loss(run_model(model, trace.ids, device), trace.ids, positions)
        loss.backward()
        grad = capture.outputs[modules[0].name].grad
    assert grad is not None
    t = positions[3]
    u = torch.randn(grad.shape[-1], generator=torch.Generator().manual_seed(0))
    predicted = float(grad[0, t] @ u)

    def loss_with(eps: float) -> float:
        def nudge(_m: torch.nn.Module, _i: tuple, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[0, t] += eps * u
            return out
        handle = modules[0].module.register_forward_hook(nudge)
        try:
            with torch.no_grad():
                return float(next_token_loss(run_model(model, trace.ids, device), trace.ids,
                                             positions))
        finally:
            handle.remove()

    eps = 1e-2
    measured = (loss_with(eps) - loss_with(-eps)) / (2 * eps)
    assert measured == pytest.approx(predicted, rel=0.05, abs=1e-6)


def write_run(run: Path) -> Path:
    from crbench import store

    conn = store.connect(run)
    store.put_variant(conn, VariantRecord("dense", "dense", model_path="demo"))
    for i, output in enumerate(TRACES):
        store.insert_generation(conn, generation(i, output), None)
    conn.close()
    return run


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from crbench.importance_output import variant_folder, write_outputs
    from crbench.importance_run import ImportanceSettings, run_importance

    run = write_run(tmp_path_factory.mktemp("importance") / "run")
    result = run_importance(run, ImportanceSettings(max_tokens=256, validate_layers="-1"))
    write_outputs(result, variant_folder(run, result.variant))
    return run, result


def test_real_importance_is_normalised_and_validated(measured: tuple[Path, Any]) -> None:
    from crbench.importance_io import read_importance

    run, result = measured
    assert result.variant == "dense" and result.traces == 2 and result.labeller == "rules"
    assert result.behaviours == ["backtracking", "uncertainty-estimation", "example-testing",
                                 "adding-knowledge"]
    assert len(result.modules) == 30 * 7
    for key in [*result.behaviours, ALL]:
        column = [r.importance[key] for r in result.modules]
        assert all(math.isfinite(v) and v >= 0 for v in column)
        assert sum(column) == pytest.approx(1.0, abs=1e-9)
        assert max(column) < 0.5  # spread over modules, not one spike
    v = result.validation
    assert v is not None and v.layers == [29] and v.modules == 7 and v.bits == 3
    rho = v.spearman[ALL]
    assert rho is not None and -1 <= rho <= 1
    swept = [r for r in result.modules if r.loss_increase]
    assert {r.layer for r in swept} == {29} and len(swept) == 7
    assert all(r.loss_increase and math.isfinite(r.loss_increase[ALL]) for r in swept)
    folder = run / "importance" / "dense"
    assert read_importance(folder) == result
    for name in ("importance.csv", "heatmap_all.png", "heatmap_all.svg",
                 "heatmap_backtracking.png"):
        assert (folder / name).stat().st_size > 0
    assert (run / "importance" / LABELS_FILE).is_file()


def test_protect_recipe_names_the_pipeline_modules(measured: tuple[Path, Any],
                                                   demo: tuple[Any, Any]) -> None:
    from crbench.compress.pipeline import plan_modules
    from crbench.compress.recipe import parse_recipe
    from crbench.protect import protect

    _, result = measured
    plan = protect(result, Fraction(2, 100))
    total = sum(m.weight.numel() for m in (x.module for x in decoder_linears(demo[0])))
    assert plan.total_params == total and plan.kept_params <= total * 2 // 100
    recipe = parse_recipe({"method": "rtn", "bits": 3, "dense": list(plan.dense)})
    _, kept = plan_modules(demo[0], recipe)
    assert sorted(k["module"] for k in kept) == sorted(plan.dense)


def test_report_section_reads_the_importance_file(measured: tuple[Path, Any]) -> None:
    from crbench.report.context import ReportContext
    from crbench.report.importance import build
    from crbench.report.results import load_results

    run, result = measured
    section = build(ReportContext(load_results(run), None))
    assert section is not None and section.title == "Module importance"
    titles = [item.title for item in section.items]
    assert titles[:2] == ["Importance against the direct check", "What protecting by "
                          "importance keeps"]
    assert any(t.startswith("Most important modules: dense") for t in titles)
    top = max(result.modules, key=lambda r: r.importance[ALL])
    assert top.name in json.dumps([getattr(i, "rows", []) for i in section.items])


def test_report_shows_the_largest_losses_against_the_parent(tmp_path: Path) -> None:
    from crbench import store
    from crbench.importance_io import ImportanceResult, ModuleRow
    from crbench.importance_output import write_outputs
    from crbench.report.context import ReportContext
    from crbench.report.document import Table
    from crbench.report.importance import build
    from crbench.report.results import load_results

    run = tmp_path / "run"
    conn = store.connect(run)
    store.insert_generation(conn, generation(0, TRACES[0]), None)
    conn.close()
    mine = {"a": 0.5, "b": 0.3, "c": 0.2}
    theirs = {"a": 0.2, "b": 0.5, "c": 0.3}  # b lost 0.2, c lost 0.1, a gained
    rows = [ModuleRow(name=f"model.layers.0.mlp.{n}_proj", layer=0, kind=f"{n}_proj", params=10,
                      importance={"backtracking": v, ALL: v},
                      parent_importance={"backtracking": theirs[n], ALL: theirs[n]},
                      shift={"backtracking": theirs[n] - v, ALL: theirs[n] - v})
            for n, v in mine.items()]
    result = ImportanceResult(model="m", variant="w3", parent="dense", labeller="rules",
                              traces=1, trace_tokens=9, max_tokens=64,
                              behaviours=["backtracking"], positions={"backtracking": 4},
                              modules=rows)
    written = write_outputs(result, run / "importance" / "w3")
    assert {p.name for p in written} >= {"heatmap_shift_all.png", "heatmap_all.svg"}
    section = build(ReportContext(load_results(run), None))
    assert section is not None
    shift = next(i for i in section.items if i.title.startswith("Importance lost"))
    assert isinstance(shift, Table)
    assert [row[0] for row in shift.rows] == ["model.layers.0.mlp.b_proj",
                                              "model.layers.0.mlp.c_proj"]
    assert shift.rows[0][1] == "20.00"  # percentage points


def test_traces_without_the_behaviours_are_refused_before_any_model_loads(
        tmp_path: Path) -> None:
    from crbench import store
    from crbench.importance_run import ImportanceSettings, run_importance

    run = tmp_path / "run"
    conn = store.connect(run)
    store.put_variant(conn, VariantRecord("dense", "dense", model_path=str(tmp_path / "none")))
    store.insert_generation(conn, generation(0, "Free: 9am to 10am.\n</think>\nAnswer: (A)"),
                            None)
    conn.close()
    with pytest.raises(InputError, match="no sentence of the 1 traces of 'dense' shows"):
        run_importance(run, ImportanceSettings())
    with pytest.raises(InputError, match="--behaviours"):
        ImportanceSettings(behaviours=("backtracking", "daydreaming"))
    with pytest.raises(InputError, match="--validate-layers"):
        run_importance(run, ImportanceSettings(validate_layers="last"))


def test_cli_refuses_an_unknown_variant_in_one_line(measured: tuple[Path, Any]) -> None:
    run, _ = measured
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "crbench.cli", "importance", str(run),
                           "--variant", "nope"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no stored traces of variant 'nope'" \
        in done.stderr
