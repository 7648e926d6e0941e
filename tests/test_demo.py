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


def test_demo_spec_covers_the_study_the_issue_asks_for():
    """The demo: the tiny reasoner (a distilled model that thinks first) and compressed variants
    of it -- quantization by each quantizer, the paper's keep-last-MLP 3-bit variant, pruning --
    with thinking prompts, two difficulty levels, 48 items a task, multihop open and closed
    (temporal is left out: the tiny reasoner loops there; see the spec's comment)."""
    spec = load_spec(demo_spec_path())
    assert spec.models["dense"].source == "tiny-reasoner"
    recipes = [v.recipe for v in spec.variants.values()]
    methods = {r["method"] for r in recipes}
    assert {"rtn", "gptq", "awq", "sparsegpt"} <= methods
    assert any(r.get("dense") == ["layers.-1.mlp.*"] and r.get("bits") == 3 for r in recipes)
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
