"""The experiment spec: which models and compressed variants, on which tasks, sampled how.

A spec is a TOML (or YAML) file; it is data and is never executed. Example:

    out = "runs/smoke"                      # optional; default runs/<spec file stem>

    [models.smol]                           # label -> where the weights come from
    source = "demo"                         # HF id, local folder, .gguf file, "demo", server URL
    engine = "hf"                           # hf | openai | vllm | llamacpp
    batch_size = 8                          # every other key is an engine option

    [models.smol-q4]                        # a model made elsewhere, paired with its parent
    source = "smol.Q4_K_M.gguf"             # method and bits are read from the file itself
    parent = "smol"                         # lineage: parent, method, bits, group_size,
                                            # sparsity (declared wins over what is read)

    [variants.smol-wanda50]                 # label -> base model label + compression recipe
    model = "smol"
    method = "wanda"
    sparsity = 0.5

    [[tasks]]
    task = "aime24"                         # registry id (in code: TaskSpec.task_id)
    label = "aime"                          # default: the task id; must be unique
    path = "examples/data/aime_mini.jsonl"  # omitted: the Hugging Face hub
    limit = 5
    style = "completion"                    # or "chat"

    [sampling]
    temperature = 0.0
    top_p = 1.0
    max_new_tokens = 256
    repeats = 3                             # repeat r samples with seed + r
    seed = 0
    n = 1                                   # samples per prompt per repeat (stored separately)

    [ppl]                                   # optional: perplexity of every variant
    data = "examples/data/ppl.txt"

Every model is also its own "dense" variant under its own label. Lineage keys describe a model
for the report (its parent, and where it sits on the bits and sparsity axes); they are not
engine options and do not change what is generated. Engine options: hf takes
batch_size, device, dtype, trust_remote_code; servers (engine "openai", source = the base URL)
take model (the name the server knows), api_key_env, concurrency, timeout, max_retries. A task
key other than task/label/path/limit/seed/style (mode, difficulty, ...) goes to the task's
`load`. File paths (task data, [ppl] data, a variant's `calib`, local models) are relative to
the spec file. Errors name the file and the field, e.g.
`spec.toml:[sampling].temperature: Input should be greater than or equal to 0 (got -1)`.

A spec is checked whole when it loads: every field, every label reference, and every variant's
recipe by its method's own check (`crbench.compress.methods`), so a bad recipe on the last
variant stops the run (and `--dry-run`) before anything is generated. In code a task has
`task_id` (the registry id, the TOML key `task`) and `label` (always set: the id by default).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from crbench.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Engine options that change how fast outputs arrive but not what they are: left out of the key.
THROUGHPUT_OPTIONS = frozenset({
    "batch_size", "concurrency", "api_key_env", "timeout_s", "max_attempts", "backoff_s",
    "max_backoff_s", "chunk_size", "tensor_parallel_size", "data_parallel_size",
    "gpu_memory_utilization", "endpoints", "speculate", "step_tokens",
})
# A model's declared lineage (ModelSpec): described in the report, never passed to the engine.
LINEAGE_KEYS = ("parent", "method", "bits", "group_size", "sparsity")
# Task options that choose which items are run, not what one item is: left out of the key
# (an item is identified by its index, id and rendered prompt, so a bigger `limit` reuses the
# generations already stored for the smaller one).
ITEM_SELECTION_OPTIONS = frozenset({"path", "limit", "seed"})


def one_of(value: str, known: tuple[str, ...]) -> str:
    """`value` if it is one of `known` (a registry's keys), else pydantic's kind of message."""
    if value not in known:
        raise ValueError(f"Input should be {', '.join(map(repr, known[:-1]))} or {known[-1]!r}")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(BaseModel):
    """A model: its source and engine, its declared lineage, and any other key is an option
    for the engine.

    Lineage (all optional; the report reads them, generation does not): `parent`, the label of
    the model it was made from (another model or variant of the spec; checked by the plan);
    `method`, `bits`, `group_size`, `sparsity`, which override what is read from the model's
    file (`crbench.lineage`), e.g. for a hub model or a server, where there is nothing to read.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    source: str = Field(min_length=1)
    engine: str = "hf"  # a key of the engine registry, `crbench.engines.ENGINES`
    parent: str | None = Field(default=None, min_length=1)
    method: str | None = Field(default=None, min_length=1)  # "distill", "gguf", "awq", ...
    bits: float | None = Field(default=None, gt=0, le=32)  # nominal weight bits
    group_size: int | None = Field(default=None, ge=1)
    sparsity: float | None = Field(default=None, ge=0, lt=1)  # fraction of weights that are 0

    @property
    def options(self) -> dict[str, Any]:
        """The engine's options: every key that is not source, engine or lineage."""
        return dict(self.model_extra or {})

    @property
    def lineage(self) -> dict[str, Any]:
        """The lineage keys the spec sets, as `VariantRecord` fields."""
        return {key: value for key in LINEAGE_KEYS if (value := getattr(self, key)) is not None}

    @field_validator("engine")
    @classmethod
    def _registered_engine(cls, value: str) -> str:
        from crbench.engines import ENGINES

        return one_of(value, tuple(ENGINES))

    @model_validator(mode="after")
    def _server_needs_model_name(self) -> ModelSpec:
        if self.engine == "openai" and "model" not in self.options:
            raise ValueError("engine 'openai' needs `model = \"<name the server knows>\"`")
        return self


class VariantSpec(BaseModel):
    """A variant made from a model: `model` names the base model; `method` (a line of the
    method registry) and every other key are its recipe."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model: str = Field(min_length=1)
    method: str = Field(min_length=1)

    @property
    def recipe(self) -> dict[str, Any]:
        return {"method": self.method, **(self.model_extra or {})}


class TaskSpec(Strict):
    task: str = Field(min_length=1)  # the registry id; `task_id` in code
    label: str = Field(min_length=1)  # filled with the task id when not given
    path: str | None = None
    limit: int | None = Field(default=None, ge=1)
    seed: int = 0
    style: str = "completion"  # a prompt style of `crbench.tasks.common.STYLES`
    shots: int = Field(default=0, ge=0, le=16)  # few-shot examples (generated families only)
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the task's `load`

    @model_validator(mode="before")
    @classmethod
    def _collect_options(cls, data: Any) -> Any:
        """Unknown keys (mode, difficulty, ...) are options for the task's `load`; a label
        not given (or empty) is the task id."""
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields)
        extra = {k: v for k, v in data.items() if k not in known}
        kept = {k: v for k, v in data.items() if k in known}
        if not isinstance(kept.get("options", {}), dict):
            return data  # pydantic then says that `options` must be a table
        kept["options"] = {**kept.get("options", {}), **extra}
        if kept.get("label") in (None, "") and "task" in kept:
            kept["label"] = kept["task"]
        return kept

    @field_validator("style")
    @classmethod
    def _known_style(cls, value: str) -> str:
        from crbench.tasks.common import STYLES

        return one_of(value, STYLES)

    @property
    def task_id(self) -> str:
        """The task's registry id (`crbench.tasks.TASK_MODULES`)."""
        return self.task

    def load_options(self) -> dict[str, Any]:
        """Everything `load` gets, as stored in the `task_options` column."""
        return {"path": self.path, "limit": self.limit, "seed": self.seed, **self.options}


class SamplingSpec(Strict):
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=256, ge=1)
    repeats: int = Field(default=1, ge=1)
    seed: int = 0
    # Samples per prompt per repeat (vLLM's `n`). Each sample is stored as its own generation,
    # so a cell holds repeats * n samples per item, sample i seeded with seed + i.
    n: int = Field(default=1, ge=1)
    # Budget forcing (crbench/engines/budget.py): close the thinking after this many thinking
    # tokens / replace an end of thinking before this many by "Wait". None: off.
    thinking_budget: int | None = Field(default=None, ge=0)
    min_thinking: int | None = Field(default=None, ge=0)

    @property
    def samples(self) -> int:
        return self.repeats * self.n


class PplSpec(Strict):
    data: str = Field(min_length=1)
    seqlen: int = Field(default=512, ge=8)


class Spec(Strict):
    models: dict[str, ModelSpec] = Field(min_length=1)
    variants: dict[str, VariantSpec] = Field(default_factory=dict)
    tasks: list[TaskSpec] = Field(min_length=1)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    ppl: PplSpec | None = None
    out: str | None = None

    def check_references(self, path: Path) -> None:
        """What one field cannot check alone: unique labels, variants naming real models."""
        seen: set[str] = set()
        for number, task in enumerate(self.tasks, 1):
            if task.label in seen:
                raise InputError(path, f"task label {task.label!r} is used twice; give one a "
                                       "`label`", f"[[tasks]] #{number}.label")
            seen.add(task.label)
        for label, variant in self.variants.items():
            if label in self.models:
                raise InputError(path, "a variant cannot share its label with a model",
                                 f"[variants.{label}]")
            if variant.model not in self.models:
                raise InputError(path, f"{variant.model!r} is not in [models] "
                                       f"(known: {', '.join(self.models)})",
                                 f"[variants.{label}].model")

    def check_recipes(self, path: Path) -> None:
        """Every variant's recipe, by its method's check (the method registry's `check`)."""
        from crbench.compress import methods

        for label, variant in self.variants.items():
            place = f"[variants.{label}]"
            method = methods.get_method(variant.method, path, f"{place}.method")
            try:
                methods.load(method.check)(variant.recipe, path)
            except InputError as exc:
                inner = f".{exc.place}" if exc.place else ""
                raise InputError(path, exc.message, place + inner) from None


def read_spec_file(path: Path) -> dict[str, Any]:
    """Parse TOML (or YAML for .yaml/.yml) into plain data; nothing in it is executed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "spec file not found") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise InputError(path, "not UTF-8 text", f"line {line}") from None
    except OSError as exc:
        raise InputError(path, f"cannot read spec: {exc}") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            place = f"line {mark.line + 1}" if mark else None
            problem = getattr(exc, "problem", exc)
            raise InputError(path, f"not valid YAML: {problem}", place) from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(path, f"not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(path, "a spec must be a table of settings")
    return data


def field_place(loc: tuple[Any, ...]) -> str:
    """Pydantic's error location as the user wrote it: ('sampling', 'temperature') ->
    `[sampling].temperature`, ('tasks', 1, 'limit') -> `[[tasks]] #2.limit`."""
    if not loc:
        return "(top level)"
    head, rest = str(loc[0]), list(loc[1:])
    if head == "tasks" and rest and isinstance(rest[0], int):
        place = f"[[tasks]] #{rest.pop(0) + 1}"
    elif head in ("models", "variants") and rest:
        place = f"[{head}.{rest.pop(0)}]"
    elif head == "tasks":
        place = "[[tasks]]"
    elif head in ("sampling", "ppl", "models", "variants"):
        place = f"[{head}]"
    else:
        return ".".join(str(p) for p in loc)
    # Skip pydantic's internal steps (union branches, "function-after[...]").
    rest = [str(p) for p in rest if not str(p).startswith(("function-", "options"))]
    return ".".join([place, *rest])


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    data = read_spec_file(path)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        elif error["type"] == "missing":
            message = "missing (required)"
        elif not isinstance(error.get("input"), (dict, list)):
            message = f"{message} (got {json.dumps(error['input'], default=str)[:60]})"
        raise InputError(path, message, field_place(tuple(error["loc"]))) from None
    spec.check_references(path)
    spec.check_recipes(path)
    return spec


def default_out(spec_path: str | Path, spec: Spec) -> Path:
    """Where results go: the spec's `out`, else runs/<spec file stem>."""
    return Path(spec.out) if spec.out else Path("runs") / Path(spec_path).stem


def resolve_path(spec_path: str | Path, path: str | None) -> str | None:
    """A file named in a spec, relative to the spec file's folder (as `include`s are in most
    config formats), so a spec runs the same from any working directory."""
    if path is None:
        return None
    candidate = Path(path).expanduser()
    return str(candidate if candidate.is_absolute() else Path(spec_path).parent / candidate)
