"""The demo's spec and the paper specs are ordinary, valid specs shipped with the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from crbench.demo import demo_spec_path
from crbench.spec import load_spec

SPECS = sorted(demo_spec_path().parent.glob("*.toml"))


def test_package_ships_demo_and_paper_specs():
    names = {p.name for p in SPECS}
    assert "demo.toml" in names
    paper = {"paper_quantization.toml", "paper_sparsity.toml", "paper_distill_and_gguf.toml"}
    assert paper <= names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_spec_is_valid(path: Path):
    spec = load_spec(path)
    assert spec.tasks and spec.models


# SmolLM2-135M's decoder linear weights by module kind (hidden 576, MLP 1536, 3 of 9 heads
# for k/v): what a `dense = [...]` list keeps in 16-bit, counted exactly.
SMOLLM2_PARAMS = {"q_proj": 576 * 576, "k_proj": 576 * 192, "v_proj": 576 * 192,
                  "o_proj": 576 * 576, "gate_proj": 576 * 1536, "up_proj": 576 * 1536,
                  "down_proj": 1536 * 576}


def kept_params(dense: list[str]) -> int:
    return sum(SMOLLM2_PARAMS[name.rsplit(".", 1)[-1]] for name in dense)


def test_demo_spec_covers_the_study_the_issues_ask_for():
    """The demo: the tiny reasoner (a distilled model that thinks first) and compressed variants
    of it -- AWQ at 4 and 3 bits; at 3 bits nothing protected, the paper's keep-last-MLP and
    protect-by-importance at no more than the same share of weights (what fits 15 minutes;
    demo_full.toml adds GPTQ, RTN and pruning) -- with
    thinking prompts, two difficulty levels, 48 items a task, multihop open and closed
    (temporal is left out: see the spec's comment)."""
    spec = load_spec(demo_spec_path())
    assert spec.models["dense"].source == "tiny-reasoner"
    recipes = {label: v.recipe for label, v in spec.variants.items()}
    awq_bits = {r["bits"] for r in recipes.values() if r["method"] == "awq"}
    assert awq_bits == {3, 4}
    w3 = [r for r in recipes.values() if r["method"] == "awq" and r["bits"] == 3]
    keep_last = [r for r in w3 if r.get("dense") == ["layers.-1.mlp.*"]]
    protect = [r for r in w3 if r.get("dense") and r.get("dense") != ["layers.-1.mlp.*"]]
    assert keep_last and protect and any(not r.get("dense") for r in w3)
    # equal bits: protect-by-importance keeps at most the last MLP's weights, and nearly all
    last_mlp = 3 * SMOLLM2_PARAMS["up_proj"]
    assert 0.95 * last_mlp <= kept_params(protect[0]["dense"]) <= last_mlp
    assert {r["group_size"] for r in w3} == {64}
    assert {t.task_id for t in spec.tasks} == {"synth_arith", "synth_logic", "synth_multihop"}
    assert all(t.style == "chat" and t.options["n"] >= 48 for t in spec.tasks)
    assert len({t.options["difficulty"] for t in spec.tasks if t.task_id == "synth_arith"}) >= 2
    assert {t.options["mode"] for t in spec.tasks if t.task_id == "synth_multihop"} == {
        "open", "closed"}
    assert spec.ppl is not None and (demo_spec_path().parent / spec.ppl.data).is_file()


def test_the_full_demo_holds_every_method_and_the_demo_s_keys():
    """demo_full.toml: every method at the demo's settings; the variants both specs share are
    the same variants (same recipes), so their stored generations are shared."""
    full = load_spec(demo_spec_path().parent / "demo_full.toml")
    demo = load_spec(demo_spec_path())
    methods = {v.recipe["method"] for v in full.variants.values()}
    assert {"rtn", "gptq", "awq", "sparsegpt", "wanda", "magnitude"} <= methods
    assert any(v.recipe.get("pattern") == "2:4" for v in full.variants.values())
    for label, variant in demo.variants.items():
        assert full.variants[label].recipe == variant.recipe
    assert full.tasks == demo.tasks and full.sampling == demo.sampling
