"""The plan (no generation): generation keys stable across releases, recipes checked when the
spec loads, paths resolved once relative to the spec, one model-source rule, shards that
partition the work."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crbench import plan as planning
from crbench import runner
from crbench.errors import InputError
from crbench.models import model_source

DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
CALIB = "The miller opened the sluice and the wheel turned.\n" * 20

# A spec touching every part of a key: engine options (one left out of keys), a variant with a
# relative calibration file, task options, a chat task with few-shot examples, sampling.
KEYED_SPEC = f"""
[models.smol]
source = "demo"
batch_size = 4
dtype = "float32"

[variants.smol-gptq4]
model = "smol"
method = "gptq"
bits = 4
group_size = 64
calib = "calib.txt"

[[tasks]]
task = "aime24"
label = "aime"
path = "{DATA / 'aime_mini.jsonl'}"
limit = 2

[[tasks]]
task = "synth_arith"
label = "arith"
difficulty = 2
style = "chat"
shots = 1
limit = 2

[sampling]
temperature = 0.6
top_p = 0.95
max_new_tokens = 32
repeats = 2
seed = 3
"""


def write(folder: Path, text: str, name: str = "spec.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def keyed_spec(folder: Path) -> Path:
    (folder / "calib.txt").parent.mkdir(parents=True, exist_ok=True)
    (folder / "calib.txt").write_text(CALIB, encoding="utf-8")
    return write(folder, KEYED_SPEC)


def test_generation_keys_equal_those_of_the_release_before_the_split(tmp_path):
    """Computed with the runner of commit 72b1cdb (before plan.py existed) on this spec: a
    store written then keeps its keys, so nothing stored is generated again."""
    plan = planning.build_plan(keyed_spec(tmp_path), tmp_path / "out")
    keys = [w.key for w in plan.work]
    assert len(keys) == 16
    assert keys[0] == "bae10add66a684df530e8409d6ca2d99ae3dbc296d9b69488d45551933c24c39"
    assert hashlib.sha256("".join(keys).encode()).hexdigest() == (
        "f6ad312c09eb63f85b833f40fff4bb646046934d13e89af195f708019de4fc05")


def test_keys_depend_on_the_calibration_text_not_on_where_the_spec_lives(tmp_path):
    here = [w.key for w in planning.build_plan(keyed_spec(tmp_path / "a"), tmp_path).work]
    moved = [w.key for w in planning.build_plan(keyed_spec(tmp_path / "b" / "c"), tmp_path).work]
    assert here == moved
    (tmp_path / "a" / "calib.txt").write_text(CALIB + "One more line.\n", encoding="utf-8")
    changed = [w.key for w in planning.build_plan(tmp_path / "a" / "spec.toml", tmp_path).work]
    dense = 8  # the dense model's half of the plan does not use the calibration text
    assert changed[:dense] == here[:dense] and not set(changed[dense:]) & set(here[dense:])


def test_paths_are_resolved_once_relative_to_the_spec(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "aime.jsonl").write_bytes((DATA / "aime_mini.jsonl").read_bytes())
    (folder / "data" / "ppl.txt").write_text("text " * 50, encoding="utf-8")
    (folder / "calib.txt").write_text(CALIB, encoding="utf-8")
    write(folder, '[models.m]\nsource = "demo"\n'
                  '[variants.w]\nmodel = "m"\nmethod = "wanda"\nsparsity = 0.5\n'
                  'calib = "calib.txt"\n'
                  '[[tasks]]\ntask = "aime24"\npath = "data/aime.jsonl"\n'
                  '[ppl]\ndata = "data/ppl.txt"\n')
    monkeypatch.chdir(tmp_path)  # not the spec's folder
    plan = planning.build_plan(Path("study") / "spec.toml")
    (task,) = plan.tasks
    assert task.load_options["path"] == str(folder / "data" / "aime.jsonl")
    assert plan.ppl_data is not None and plan.ppl_data.resolve() == folder / "data" / "ppl.txt"
    wanda = plan.variants[1]
    assert wanda.calib is not None and wanda.calib.resolve() == folder / "calib.txt"
    assert wanda.recipe_for_build()["calib"] == str(wanda.calib)
    assert wanda.recipe == {"method": "wanda", "sparsity": 0.5, "calib": "calib.txt"}


def test_a_bad_recipe_on_the_last_variant_fails_before_anything_runs(tmp_path, monkeypatch):
    """Checked when the spec loads: neither a run nor a dry run gets as far as a store, an
    engine or a compression."""
    import crbench.engines

    def refuse(*args, **kwargs):
        raise AssertionError("an engine was built")

    monkeypatch.setattr(crbench.engines, "make_engine", refuse)
    spec = write(tmp_path, '[models.m]\nsource = "demo"\n'
                           '[variants.ok]\nmodel = "m"\nmethod = "rtn"\nbits = 4\n'
                           '[variants.bad]\nmodel = "m"\nmethod = "rtn"\nbits = 4\nsparsity = 0.5\n'
                           f'[[tasks]]\ntask = "aime24"\npath = "{DATA / "aime_mini.jsonl"}"\n')
    out = tmp_path / "run"
    for dry_run in (True, False):
        with pytest.raises(InputError) as err:
            runner.run(spec, out, dry_run=dry_run, stream=io.StringIO())
        assert str(err.value) == (f"{spec}:[variants.bad].sparsity: does not apply to method "
                                  "'rtn' (only to sparsegpt, wanda, magnitude)")
        assert not out.exists()
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "run", str(spec), "--dry-run"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "[variants.bad].sparsity" in proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("variant", "place", "words"),
    [
        ('method = "prune"\n', "[variants.v].method", "unknown method 'prune'; known: sparsegpt"),
        ('method = "gptq"\nbits = 4\n', "[variants.v].calib", "needs calibration text"),
        ('method = "magnitude"\n', "[variants.v].sparsity", "needs a sparsity"),
        ('method = "rtn"\nbits = 12\n', "[variants.v].bits", "less than or equal to 8"),
        ('method = "rtn"\ncolour = "red"\n', "[variants.v].colour", "Extra inputs"),
        ('method = "wanda"\nsparsity = 0.5\ncalib = "nowhere.txt"\n', "[variants.v].calib",
         "calibration file not found"),
    ],
)
def test_recipe_errors_name_the_variant_and_field(tmp_path, variant, place, words):
    spec = write(tmp_path, f'[models.m]\nsource = "demo"\n[variants.v]\nmodel = "m"\n{variant}'
                           f'[[tasks]]\ntask = "aime24"\npath = "{DATA / "aime_mini.jsonl"}"\n')
    with pytest.raises(InputError) as err:
        planning.build_plan(spec, tmp_path / "run")
    assert str(err.value).startswith(f"{spec}:{place}: ") and words in str(err.value)


@pytest.mark.parametrize(
    ("written", "engine", "kind", "ref"),
    [
        ("demo", "hf", "named", "demo"),
        ("smollm2-135m-instruct", "hf", "named", "smollm2-135m-instruct"),
        ("http://127.0.0.1:8000/v1", "hf", "server", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1", "openai", "server", "http://127.0.0.1:8000/v1"),
        ("models/r1.gguf", "llamacpp", "gguf", "{base}/models/r1.gguf"),
        ("./models/r1", "hf", "folder", "{base}/models/r1"),
        ("/abs/r1", "vllm", "folder", "/abs/r1"),
        ("existing", "hf", "folder", "{base}/existing"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "hf", "hub",
         "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
    ],
)
def test_one_rule_for_model_sources(tmp_path, written, engine, kind, ref):
    (tmp_path / "existing").mkdir()
    source = model_source(written, base=tmp_path, engine=engine)
    assert (source.kind, source.ref) == (kind, ref.format(base=tmp_path))


def test_a_bad_local_model_folder_is_refused_before_the_store(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    spec = write(tmp_path, '[models.m]\nsource = "./model"\n'
                           f'[[tasks]]\ntask = "aime24"\npath = "{DATA / "aime_mini.jsonl"}"\n')
    with pytest.raises(InputError) as err:
        runner.run(spec, tmp_path / "run", stream=io.StringIO())
    assert str(err.value) == (f"{tmp_path / 'model'}:[models.m].source: model folder has no "
                              "weights (*.safetensors)")
    assert not (tmp_path / "run").exists()


def test_shards_partition_the_plan(tmp_path):
    spec = keyed_spec(tmp_path)
    whole = planning.build_plan(spec, tmp_path / "run")
    shares = [planning.build_plan(spec, None, planning.Shard(k, 3)) for k in (1, 2, 3)]
    keys = [[w.key for w in share.work] for share in shares]
    assert sorted(sum(keys, [])) == sorted(w.key for w in whole.work)
    assert all(keys) and len(set(sum(keys, []))) == len(whole.work)
    assert [share.run_dir.name for share in shares] == [f"spec-shard-{k}-of-3" for k in (1, 2, 3)]
    assert str(planning.parse_shard(" 2/3 ")) == "2/3"
    for bad in ("0/3", "4/3", "2", "a/b", "1/0"):
        with pytest.raises(InputError, match=r"^--shard: must be K/N"):
            planning.parse_shard(bad)


def test_shard_dry_run_counts_only_its_share(tmp_path):
    spec = keyed_spec(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    counts = []
    for k in (1, 2):
        proc = subprocess.run([sys.executable, "-m", "crbench.cli", "run", str(spec), "--dry-run",
                               "--shard", f"{k}/2", "--out", str(tmp_path / f"s{k}")],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert f"(shard {k}/2: its share only)" in proc.stdout
        total = next(line for line in proc.stdout.splitlines() if line.startswith("total: "))
        counts.append(int(total.split()[1]))
    assert sum(counts) == 16 and all(counts)


def test_a_variant_of_a_served_model_is_refused(tmp_path):
    spec = write(tmp_path, '[models.srv]\nsource = "http://127.0.0.1:9/v1"\nengine = "openai"\n'
                           'model = "x"\n[variants.v]\nmodel = "srv"\nmethod = "rtn"\n'
                           f'[[tasks]]\ntask = "aime24"\npath = "{DATA / "aime_mini.jsonl"}"\n')
    with pytest.raises(InputError, match=r":\[variants\.v\]\.model: 'srv' is served over HTTP"):
        planning.build_plan(spec, tmp_path / "run")


# A method that is not compression (as `method = "distill"` will be): one registry line naming
# its own check and build functions. Here: a "copy" variant, the base model's folder as is.

def check_copy(recipe: dict, source: object) -> dict:
    for name in recipe:
        if name not in ("method", "note"):
            raise InputError(None, "unknown setting", name)
    return recipe


def build_copy(base_model: str, recipe: dict, *, log) -> str:
    log(f"copied ({recipe['note']})")
    return base_model


def test_a_method_of_another_kind_is_one_registry_line(tmp_path, monkeypatch, capsys,
                                                       demo_model):
    from crbench import prepare
    from crbench.compress import methods

    monkeypatch.setitem(methods.METHODS, "copy", methods.Method(
        "copy", "test_plan", "other", False, frozenset({"note"}), build="test_plan:build_copy",
        check="test_plan:check_copy", cached=None))
    task = f'[[tasks]]\ntask = "aime24"\npath = "{DATA / "aime_mini.jsonl"}"\n'
    bad = write(tmp_path, '[models.m]\nsource = "demo"\n[variants.v]\nmodel = "m"\n'
                          f'method = "copy"\ncolour = 1\n{task}')
    with pytest.raises(InputError, match=r"spec\.toml:\[variants\.v\]\.colour: unknown setting"):
        planning.build_plan(bad, tmp_path / "run")
    spec = write(tmp_path, '[models.m]\nsource = "demo"\n[variants.v]\nmodel = "m"\n'
                           f'method = "copy"\nnote = "n"\n{task}')
    plan = planning.build_plan(spec, tmp_path / "run")
    prepared = prepare.prepare_variant(plan, plan.variants[1])
    assert prepared.model_path == str(demo_model)
    record = prepared.record
    assert (record.variant, record.method, record.parent, record.base_model) == (
        "v", "copy", "m", "m")
    assert record.size_bytes and record.bits is None and record.sparsity is None
    assert "copy v: copied (n)" in capsys.readouterr().err
    stream = io.StringIO()
    runner.print_plan(plan, {}, stream)
    assert 'copy v: {"method":"copy","note":"n"}: will be built unless cached' in stream.getvalue()


def test_a_spec_model_is_described_by_what_its_file_is(tmp_path, demo_model):
    """The demo model (a converted folder) is dense at 32 bits per weight; the GGUF file it
    came from, run by llama.cpp, is a 4-bit GGUF model (read from its header)."""
    from crbench import prepare
    from crbench.models import demo_gguf_path

    gguf = demo_gguf_path()
    spec = write(tmp_path, '[models.demo]\nsource = "demo"\n'
                           f'[models.q4]\nsource = "{gguf}"\nengine = "llamacpp"\n'
                           f'[[tasks]]\ntask = "aime24"\npath = "{DATA / "aime_mini.jsonl"}"\n')
    plan = planning.build_plan(spec, tmp_path / "run")
    dense, q4 = (prepare.prepare_variant(plan, v) for v in plan.variants)
    assert (dense.record.method, dense.record.bits, dense.record.bits_per_weight) == (
        "dense", None, 32)
    assert q4.model_path == str(gguf)  # llama.cpp reads the file itself: nothing converted
    assert (q4.record.method, q4.record.bits) == ("gguf", 4)
    assert q4.record.bits_per_weight is not None and 4 < q4.record.bits_per_weight < 6
    assert q4.record.size_bytes == gguf.stat().st_size


def test_lineage_keys_describe_a_model_without_changing_what_is_generated(tmp_path):
    """Declared lineage is not an engine option and not part of any key: the keyed spec with
    lineage on its model plans the very same generations."""
    plain = planning.build_plan(keyed_spec(tmp_path / "plain"), tmp_path / "out")
    declared = keyed_spec(tmp_path / "declared")
    declared.write_text(KEYED_SPEC.replace(
        'dtype = "float32"\n', 'dtype = "float32"\nmethod = "qat"\nbits = 4\ngroup_size = 32\n'
                               'sparsity = 0.25\n'), encoding="utf-8")
    plan = planning.build_plan(declared, tmp_path / "out")
    assert [w.key for w in plan.work] == [w.key for w in plain.work]
    model = plan.variants[0].model
    assert model.options == {"batch_size": 4, "dtype": "float32"}
    assert model.lineage == {"method": "qat", "bits": 4, "group_size": 32, "sparsity": 0.25}


def test_declared_lineage_wins_and_pairs_a_hub_model_with_its_parent(tmp_path):
    """A hub model has nothing to read: what the spec declares is its row, grouped with the
    model its parents start from (a variant's parent is its model)."""
    from crbench import prepare

    spec = write(tmp_path, '[models.demo]\nsource = "demo"\n'
                           '[variants.demo-rtn]\nmodel = "demo"\nmethod = "rtn"\nbits = 8\n'
                           '[models.awq]\nsource = "org/model-AWQ"\nparent = "demo-rtn"\n'
                           'method = "awq"\nbits = 4\ngroup_size = 128\n'
                           f'[[tasks]]\ntask = "aime24"\npath = "{DATA / "aime_mini.jsonl"}"\n')
    plan = planning.build_plan(spec, tmp_path / "run")
    awq = next(v for v in plan.variants if v.label == "awq")
    assert (awq.base_model, awq.made_from) == ("awq", "demo")  # keys keep its own label
    record = prepare.prepare_variant(plan, awq).record
    assert (record.base_model, record.parent, record.method, record.bits, record.group_size,
            record.sparsity) == ("demo", "demo-rtn", "awq", 4, 128, None)


@pytest.mark.parametrize(
    ("models", "place", "words"),
    [
        ('[models.a]\nsource = "demo"\nparent = "b"\n', "[models.a].parent",
         "'b' is not a model or variant of this spec (known: a)"),
        ('[models.a]\nsource = "demo"\nparent = "a"\n', "[models.a].parent",
         "parents form a cycle: a -> a"),
        ('[models.a]\nsource = "demo"\n[models.b]\nsource = "demo"\nparent = "c"\n'
         '[models.c]\nsource = "demo"\nparent = "b"\n', "[models.b].parent",
         "parents form a cycle: b -> c -> b"),
        ('[models.a]\nsource = "demo"\nparent = "v"\n[variants.v]\nmodel = "a"\n'
         'method = "rtn"\nbits = 4\n', "[models.a].parent", "parents form a cycle: a -> v -> a"),
        ('[models.a]\nsource = "demo"\nbits = 0\n', "[models.a].bits", "greater than 0"),
    ],
)
def test_bad_lineage_is_refused_naming_the_model_and_key(tmp_path, models, place, words):
    task = f'[[tasks]]\ntask = "aime24"\npath = "{DATA / "aime_mini.jsonl"}"\n'
    spec = write(tmp_path, models + task)
    with pytest.raises(InputError) as error:
        planning.build_plan(spec, tmp_path / "run")
    assert error.value.place == place and words in error.value.message
