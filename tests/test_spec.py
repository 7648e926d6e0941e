"""The experiment spec: parsing TOML/YAML, defaults, and one-line errors naming file and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crbench.errors import InputError
from crbench.spec import default_out, load_spec, resolve_path

GOOD = """
out = "runs/x"

[models.smol]
source = "demo"
engine = "hf"
batch_size = 4
dtype = "float32"

[models.server]
source = "http://127.0.0.1:8000/v1"
engine = "openai"
model = "r1-distill"
api_key_env = "MY_KEY"

[variants.smol-wanda50]
model = "smol"
method = "wanda"
sparsity = 0.5
calib_samples = 16
calib = "data/calib.txt"

[[tasks]]
task = "aime24"
path = "data/aime.jsonl"
limit = 5

[[tasks]]
task = "synth_arith"
label = "arith-hard"
difficulty = 4
style = "chat"

[sampling]
temperature = 0.6
top_p = 0.95
max_new_tokens = 512
repeats = 3
seed = 7

[ppl]
data = "data/wiki.txt"
"""


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_spec_parses_with_options_recipes_and_defaults(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.models["smol"].options == {"batch_size": 4, "dtype": "float32"}
    assert spec.models["server"].engine == "openai"
    assert spec.variants["smol-wanda50"].recipe == {
        "method": "wanda", "sparsity": 0.5, "calib_samples": 16, "calib": "data/calib.txt"}
    aime, arith = spec.tasks
    assert (aime.label, aime.task_id, aime.style, aime.limit, aime.options) == (
        "aime24", "aime24", "completion", 5, {})
    assert (arith.label, arith.task_id, arith.style, arith.options) == (
        "arith-hard", "synth_arith", "chat", {"difficulty": 4})
    assert arith.load_options() == {"path": None, "limit": None, "seed": 0, "difficulty": 4}
    assert (spec.sampling.repeats, spec.sampling.seed, spec.sampling.temperature) == (3, 7, 0.6)
    assert spec.ppl.data == "data/wiki.txt"
    assert default_out(tmp_path / "spec.toml", spec) == Path("runs/x")


def test_defaults_and_out_from_the_file_stem(tmp_path):
    path = write(tmp_path, '[models.m]\nsource = "demo"\n[[tasks]]\ntask = "folio"\n',
                 "my-study.toml")
    spec = load_spec(path)
    assert spec.sampling.repeats == 1 and spec.sampling.temperature == 0.0
    assert spec.models["m"].engine == "hf"
    assert default_out(path, spec) == Path("runs/my-study")
    assert resolve_path(path, "data/f.jsonl") == str(tmp_path / "data/f.jsonl")
    assert resolve_path(path, "/abs/f.jsonl") == "/abs/f.jsonl"


def test_yaml_spec_is_the_same_data(tmp_path):
    path = write(tmp_path, "models:\n  m: {source: demo}\ntasks:\n  - {task: folio, limit: 2}\n"
                 "sampling: {max_new_tokens: 16}\n", "s.yaml")
    spec = load_spec(path)
    assert spec.tasks[0].limit == 2 and spec.sampling.max_new_tokens == 16


MINIMAL = '[models.m]\nsource = "demo"\n[[tasks]]\ntask = "folio"\n'


@pytest.mark.parametrize(
    ("text", "place", "words"),
    [
        (MINIMAL + "[sampling]\ntemperature = -1\n", "[sampling].temperature", "greater than"),
        (MINIMAL + "[sampling]\ntemprature = 0.5\n", "[sampling].temprature", "unknown setting"),
        (MINIMAL + "[sampling]\nmax_new_tokens = \"many\"\n", "[sampling].max_new_tokens",
         "integer"),
        (MINIMAL + "[sampling]\nrepeats = 0\n", "[sampling].repeats", "greater than"),
        (MINIMAL + "[[tasks]]\ntask = \"folio\"\n", "[[tasks]] #2.label", "used twice"),
        (MINIMAL + "[[tasks]]\ntask = \"aime24\"\nlimit = 0\n", "[[tasks]] #2.limit",
         "greater than"),
        (MINIMAL + "[[tasks]]\ntask = \"aime24\"\nstyle = \"fancy\"\n", "[[tasks]] #2.style",
         "completion"),
        (MINIMAL + "[variants.v]\nmodel = \"nope\"\nmethod = \"rtn\"\n", "[variants.v].model",
         "not in [models]"),
        (MINIMAL + "[variants.v]\nmodel = \"m\"\n", "[variants.v].method", "missing"),
        (MINIMAL + "[models.s]\nsource = \"http://x/v1\"\nengine = \"openai\"\n", "[models.s]",
         "model ="),
        (MINIMAL + "[models.s]\nsource = \"x\"\nengine = \"tgi\"\n", "[models.s].engine", "hf"),
        ('[models.m]\nsource = "demo"\n', "[[tasks]]", "missing"),
        ("colour = 'blue'\n" + MINIMAL, "colour", "unknown setting"),
    ],
)
def test_spec_errors_name_file_and_field(tmp_path, text, place, words):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_spec(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{place}: "), message
    assert words in message
    assert "\n" not in message


def test_syntax_errors_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="not valid TOML"):
        load_spec(write(tmp_path, "[models.m\nsource = 1\n"))
    with pytest.raises(InputError, match=r"s\.yml:line \d+: not valid YAML"):
        load_spec(write(tmp_path, "models:\n  m: [unclosed\n", "s.yml"))
    with pytest.raises(InputError, match="spec file not found"):
        load_spec(tmp_path / "absent.toml")


def test_yaml_is_data_only(tmp_path):
    """A YAML tag that would construct a Python object is refused, never executed."""
    marker = tmp_path / "pwned"
    text = (f"models: !!python/object/apply:os.system ['touch {marker}']\n"
            "tasks: [{task: folio}]\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_spec(write(tmp_path, text, "evil.yaml"))
    assert not marker.exists()


def test_cli_spec_error_is_one_line_exit_2(tmp_path):
    path = write(tmp_path, MINIMAL + "[sampling]\ntop_p = 2\n")
    proc = subprocess.run([sys.executable, "-m", "crbench.cli", "run", str(path), "--dry-run"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"crbench: error: {path}:[sampling].top_p: Input should be less than or equal to 1 (got 2)")
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()
