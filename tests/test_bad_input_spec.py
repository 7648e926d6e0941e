"""Property tests of spec parsing: whatever a spec file holds (any bytes, any TOML or YAML
text, any nesting of tables, lists and values under the real setting names or others), loading
it gives a valid Spec or an InputError whose one-line message names the file; never another
exception. (Extraction has its own property tests in tests/test_extract.py.)"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crbench.errors import InputError
from crbench.spec import Spec, load_spec

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# The setting names a spec has, so generated specs get deep into validation, plus others.
NAMES = ["models", "variants", "tasks", "sampling", "ppl", "out", "source", "engine", "model",
         "method", "task", "label", "path", "limit", "seed", "style", "options", "temperature",
         "top_p", "max_new_tokens", "repeats", "n", "data", "seqlen", "batch_size", "sparsity",
         "m", "smol", "hf", "openai", "folio"]
keys = st.one_of(st.sampled_from(NAMES), st.text(max_size=8))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["demo", "hf", "openai", "folio", "aime24", "chat", "completion",
                     "http://127.0.0.1:9/v1", "", "0.5", "2:4"]),
    st.text(max_size=20),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)), max_leaves=25)
specs = st.dictionaries(keys, values, max_size=7)


def load(text: str | bytes, suffix: str) -> Spec | None:
    """load_spec on a file holding `text`; None when it is refused as bad input."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"spec{suffix}"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        try:
            return load_spec(path)
        except InputError as exc:
            message = str(exc)
            assert message.startswith(str(path)) and "\n" not in message, message
            return None


@SETTINGS
@given(specs)
def test_any_data_as_yaml_is_a_spec_or_one_input_error(data):
    spec = load(yaml.safe_dump(data, allow_unicode=True), ".yaml")
    if spec is not None:
        assert isinstance(spec, Spec) and spec.models and spec.tasks


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("[]{}=\"'.,#\n \t-_:0123456789abcdemoslt\\")),
               max_size=200))
def test_any_toml_ish_text_is_a_spec_or_one_input_error(text):
    load(text, ".toml")


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from([".toml", ".yaml"]))
def test_any_bytes_are_a_spec_or_one_input_error(data, suffix):
    load(data, suffix)


@SETTINGS
@given(st.fixed_dictionaries(
    {"models": st.dictionaries(keys, st.dictionaries(keys, values, max_size=4), max_size=2),
     "tasks": st.lists(st.dictionaries(keys, values, max_size=4), max_size=3)},
    optional={"sampling": st.dictionaries(keys, scalars, max_size=4),
              "variants": st.dictionaries(keys, st.dictionaries(keys, values, max_size=3),
                                          max_size=2)}))
def test_spec_shaped_data_is_a_spec_or_one_input_error(data):
    """Data with a spec's outline (models, tasks, sampling, variants) and anything inside."""
    load(yaml.safe_dump(data, allow_unicode=True), ".yaml")


def test_task_options_that_are_not_a_table_are_an_input_error():
    """Found by the properties above: `options = 3` in a task once raised TypeError."""
    assert load("models: {m: {source: demo}}\ntasks: [{task: folio, options: 3}]\n",
                ".yaml") is None


# --- valid specs are accepted (so the properties above cannot pass by refusing everything) ---

LABELS = st.text(alphabet=st.sampled_from(list("abcxyz019-_.é")), min_size=1, max_size=10)
MODELS = st.one_of(
    st.fixed_dictionaries({"source": st.just("demo"), "engine": st.just("hf"),
                           "batch_size": st.integers(1, 64)}),
    st.fixed_dictionaries({"source": st.just("http://127.0.0.1:9/v1"),
                           "engine": st.just("openai"), "model": LABELS}),
)
RECIPES = st.one_of(
    st.fixed_dictionaries({"method": st.just("rtn"), "bits": st.integers(2, 8),
                           "group_size": st.sampled_from([0, 32, 64])}),
    st.fixed_dictionaries({"method": st.just("magnitude"),
                           "sparsity": st.floats(0.01, 0.99)}),
    st.fixed_dictionaries({"method": st.just("magnitude"),
                           "pattern": st.sampled_from(["2:4", "4:8", "1:4"])}),
    st.fixed_dictionaries({"method": st.just("gptq"), "bits": st.integers(2, 8),
                           "calib": st.just("hf:wikitext:wikitext-2-raw-v1")}),
)
TASK = st.fixed_dictionaries(
    {"task": st.sampled_from(["aime24", "folio", "musique", "synth_arith", "synth_logic"]),
     "limit": st.integers(1, 100), "style": st.sampled_from(["completion", "chat", "direct"])})
SAMPLING = st.fixed_dictionaries(
    {"temperature": st.floats(0, 2), "top_p": st.floats(0.01, 1),
     "max_new_tokens": st.integers(1, 4096), "repeats": st.integers(1, 5),
     "seed": st.integers(-(2**31), 2**31)})


@st.composite
def valid_specs(draw: st.DrawFn) -> dict:
    labels = draw(st.lists(LABELS, min_size=2, max_size=6, unique=True))
    split = draw(st.integers(1, len(labels) - 1))
    models = {label: draw(MODELS) for label in labels[:split]}
    variants = {label: {"model": draw(st.sampled_from(labels[:split])), **draw(RECIPES)}
                for label in labels[split:]}
    tasks = [{**task, "label": f"t{i}"} for i, task in enumerate(draw(st.lists(TASK, min_size=1,
                                                                             max_size=3)))]
    return {"models": models, "variants": variants, "tasks": tasks, "sampling": draw(SAMPLING)}


@SETTINGS
@given(valid_specs())
def test_valid_specs_are_accepted_as_written(data):
    spec = load(yaml.safe_dump(data, allow_unicode=True), ".yaml")
    assert spec is not None, data
    assert {label: m.source for label, m in spec.models.items()} == {
        label: m["source"] for label, m in data["models"].items()}
    written = {label: {k: x for k, x in v.items() if k != "model"}
               for label, v in data["variants"].items()}
    assert {label: v.recipe for label, v in spec.variants.items()} == written
    assert [(t.task_id, t.label, t.limit, t.style) for t in spec.tasks] == [
        (t["task"], t["label"], t["limit"], t["style"]) for t in data["tasks"]]
    assert spec.sampling.model_dump(include=set(data["sampling"])) == data["sampling"]
