"""Recipe validation and module matching: no model needed."""

from __future__ import annotations

import pytest

from crbench.compress.recipe import load_recipe, matches, parse_recipe
from crbench.errors import InputError


def test_quantization_defaults_filled_in():
    recipe = parse_recipe({"method": "rtn"})
    assert (recipe.bits, recipe.group_size, recipe.sym, recipe.act_order) == (4, 0, True, False)
    assert recipe.damp == 0.01 and recipe.seqlen == 512


def test_pattern_implies_sparsity():
    recipe = parse_recipe({"method": "magnitude", "pattern": "2:4"})
    assert recipe.n_m() == (2, 4) and recipe.target_sparsity() == 0.5
    assert parse_recipe({"method": "magnitude", "pattern": "2:8"}).target_sparsity() == 0.75


@pytest.mark.parametrize(
    ("data", "place", "words"),
    [
        ({"method": "sparsegpt", "sparsity": 0.5}, "calib", "needs calibration"),
        ({"method": "magnitude"}, "sparsity", "needs a sparsity"),
        ({"method": "magnitude", "sparsity": 0.5, "bits": 4}, "bits", "does not apply"),
        ({"method": "rtn", "sparsity": 0.5}, "sparsity", "does not apply"),
        ({"method": "rtn", "damp": 0.1}, "damp", "does not apply"),
        ({"method": "rtn", "act_order": True}, "act_order", "gptq"),
        ({"method": "rtn", "static_groups": True}, "static_groups", "gptq"),
        ({"method": "magnitude", "pattern": "4:2"}, "pattern", "0 < N < M"),
        ({"method": "magnitude", "pattern": "2:4", "sparsity": 0.6}, "sparsity",
         "means sparsity 0.5"),
        ({"method": "gptq", "bits": 9, "calib": "x.txt"}, "bits", "less than or equal to 8"),
        ({"method": "prune"}, "method", "Input should be"),
        ({"method": "rtn", "colour": "red"}, "colour", "Extra inputs"),
        ({"method": "rtn", "overrides": [{"match": "x", "sparsity": 0.5}]},
         "overrides.0.sparsity", "does not apply"),
        ({"method": "rtn", "overrides": [{"dense": True}]}, "overrides.0.match", "required"),
    ],
)
def test_bad_recipe_names_the_field(data, place, words):
    with pytest.raises(InputError) as caught:
        parse_recipe(data, "r.toml")
    error = caught.value
    assert error.path == "r.toml" and error.place == place
    assert words in str(error)
    assert "\n" not in str(error)


def test_recipe_file_errors_and_relative_calib(tmp_path):
    good = tmp_path / "recipe.toml"
    good.write_text('method = "gptq"\nbits = 3\ngroup_size = 64\ncalib = "text.txt"\n'
                    'dense = ["layers.-1.mlp.*"]\n')
    recipe = load_recipe(good)
    assert recipe.calib == str(tmp_path / "text.txt")
    assert recipe.dense == ["layers.-1.mlp.*"]

    broken = tmp_path / "broken.toml"
    broken.write_text('method = "gptq"\nbits = \n')
    with pytest.raises(InputError, match="not valid TOML") as caught:
        load_recipe(broken)
    assert caught.value.path == str(broken)
    with pytest.raises(InputError, match="recipe file not found"):
        load_recipe(tmp_path / "missing.toml")


def test_override_settings_replace_only_what_they_set():
    recipe = parse_recipe({"method": "gptq", "bits": 3, "group_size": 64, "calib": "c.txt",
                           "overrides": [{"match": "layers.0.*", "bits": 8}]})
    settings = recipe.settings_for(recipe.overrides[0])
    assert (settings.bits, settings.group_size, settings.sym) == (8, 64, True)
    pruning = parse_recipe({"method": "magnitude", "sparsity": 0.5,
                            "overrides": [{"match": "x", "pattern": "2:4"}]})
    assert pruning.settings_for(pruning.overrides[0]).target_sparsity() == 0.5
    assert pruning.settings_for(pruning.overrides[0]).sparsity is None


@pytest.mark.parametrize(
    ("pattern", "hit"),
    [
        ("layers.-1.mlp.*", True),
        ("model.layers.29.mlp.up_proj", True),
        ("*.up_proj", True),
        ("layers.2*.mlp.*", True),
        ("layers.-2.mlp.*", False),
        ("mlp.up", False),
        (r"re:layers\.29\.mlp\.(gate|up|down)_proj", True),
        (r"re:self_attn", False),
    ],
)
def test_module_patterns(pattern, hit):
    names = ["model.layers.29.mlp.up_proj", "model.layers.-1.mlp.up_proj"]
    assert matches(pattern, names) is hit


# --- the method registry: the one list recipes, the pipeline and the CLI derive from ---------


def test_registry_drives_recipe_checks():
    from crbench.compress import methods

    for name in methods.names(compressing=True):
        method = methods.get_method(name)
        module = __import__(method.module, fromlist=[name])
        assert callable(getattr(module, name)) and hasattr(module, "NEEDS")
    with pytest.raises(InputError) as caught:
        parse_recipe({"method": "wanda", "sparsity": 0.5, "calib": "c.txt", "bits": 4}, "r")
    assert str(caught.value) == (f"r:bits: does not apply to method 'wanda' (only to "
                                 f"{', '.join(methods.takers('bits'))})")
    assert "rtn" in methods.takers("bits") and "gptq" in methods.takers("bits")
    # Defaults are filled in but stay unset: what was written round-trips.
    assert parse_recipe({"method": "rtn"}).model_dump(exclude_unset=True) == {"method": "rtn"}


TOY_METHOD = '''
"""A toy pruning method: zero every other input column."""

NEEDS = None  # no calibration statistics


def halves(w, *, sparsity, pattern=None):
    out = w.clone()
    out[:, ::2] = 0
    return out, {"toy": True}
'''


def test_a_new_method_is_one_file_and_one_registry_line(tmp_path, monkeypatch, demo_model):
    """A method module on the path plus its `Method` line: recipes accept it, the pipeline
    runs it on the real demo model, other methods' settings are refused for it."""
    from crbench.compress import methods
    from crbench.compress.pipeline import compress_loaded
    from crbench.models import load_causal_lm

    (tmp_path / "toy_halves.py").write_text(TOY_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(methods.METHODS, "halves", methods.Method(
        "halves", "toy_halves", "prune", False, methods.PRUNE_FIELDS))
    with pytest.raises(InputError, match="does not apply to method 'halves'"):
        parse_recipe({"method": "halves", "sparsity": 0.5, "bits": 4})
    recipe = parse_recipe({"method": "halves", "sparsity": 0.5, "dense": ["layers.-1.*"]})
    model, tokenizer = load_causal_lm(demo_model, device="cpu")
    result = compress_loaded(model, tokenizer, recipe, device="cpu")
    done = [m for m in result["modules"] if not m["kept_dense"]]
    assert done and all(m["sparsity"] >= 0.5 and m["toy"] for m in done)
    assert all(m["layer"] == len(model.model.layers) - 1 for m in result["modules"]
               if m["kept_dense"])
    weight = model.model.layers[0].mlp.up_proj.weight
    assert (weight[:, ::2] == 0).all() and (weight[:, 1::2] != 0).any()
    # every module record carries its weight count, kept dense or not (the report's share)
    sizes = dict(model.named_parameters())
    assert all(m["params"] == sizes[m["module"] + ".weight"].numel() for m in result["modules"])
    assert sum(m["params"] for m in result["modules"] if m["kept_dense"]) == sum(
        p.numel() for n, p in model.model.layers[-1].named_parameters()
        if n.endswith("proj.weight"))
