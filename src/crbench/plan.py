"""The plan of a run: a spec expanded into the generations it asks for, each with its key.

    spec ──load_spec──► Spec (validated whole, recipes included)
         ──build_plan─► Plan: PlannedVariant x PlannedTask x item x repeat ──► Work (with key)

Every path a spec names (model folders and GGUF files, task data, calibration files, [ppl]
text) is resolved here, once, relative to the spec file; what runs later only reads the
resolved values. A variant's identity, and so every generation key, uses what the spec
*wrote* (its model source and recipe as written, plus the calibration file's sha256), so keys
do not change when a spec moves, and a key computed by an older release equals today's.

`--shard K/N` keeps the work items whose key falls in share K of N (`Shard.owns`): a stable
function of the key alone, so N machines running the same spec split it without talking.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from crbench.compress.methods import Method, get_method
from crbench.engines.base import Prompt
from crbench.errors import InputError
from crbench.models import ModelSource, model_source
from crbench.records import DENSE
from crbench.spec import (
    ITEM_SELECTION_OPTIONS,
    THROUGHPUT_OPTIONS,
    ModelSpec,
    SamplingSpec,
    Spec,
    TaskSpec,
    default_out,
    load_spec,
    resolve_path,
)
from crbench.tasks import few_shot_examples, get_task, with_examples
from crbench.tasks.base import Item

JsonDict = dict[str, Any]  # JSON data as Python (recipes, options: shaped by their owners)


@dataclass(frozen=True)
class Shard:
    """Share `index` (1-based) of `count`."""

    index: int
    count: int

    def owns(self, key: str) -> bool:
        return int(key[:8], 16) % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise InputError(None, f"must be K/N with 1 <= K <= N, e.g. 1/4 (got {text!r})",
                         "--shard")
    return Shard(int(match[1]), int(match[2]))


@dataclass(frozen=True, eq=False)  # compared by identity: one object per variant of a plan
class PlannedVariant:
    """A model of the run: a spec model itself (dense), or a variant made from one."""

    label: str
    base_model: str  # the spec's model label it derives from (dense: itself)
    model: ModelSpec
    source: ModelSource  # the base model's source, resolved once
    recipe: JsonDict | None = None  # as written in the spec; None: the model itself
    method: Method | None = None  # the recipe's line in the method registry
    calib: Path | None = None  # a local calibration file, resolved
    calib_sha256: str | None = None  # its content is part of the variant
    # A spec model with a declared `parent`: the model its chain of parents starts from, which
    # the report groups it with. Not part of the identity: lineage changes no generation.
    made_from: str | None = None

    @property
    def method_name(self) -> str:
        return self.method.name if self.method else DENSE

    def recipe_for_build(self) -> JsonDict:
        """The recipe as the method's build function gets it: calibration path resolved."""
        recipe = dict(self.recipe or {})
        if self.calib is not None:
            recipe["calib"] = str(self.calib)
        return recipe

    def identity(self) -> JsonDict:
        engine = {k: v for k, v in self.model.options.items() if k not in THROUGHPUT_OPTIONS}
        identity = {"label": self.label, "base_model": self.base_model,
                    "source": self.model.source, "recipe": self.recipe,
                    "engine": self.model.engine, "engine_options": engine}
        if self.calib_sha256:
            identity["calib_sha256"] = self.calib_sha256
        return identity


@dataclass(frozen=True, eq=False)
class PlannedTask:
    number: int  # 1-based position in [[tasks]], for error places
    spec: TaskSpec
    module: ModuleType
    items: list[Item]
    examples: list[Item]  # few-shot examples its prompts start with
    load_options: JsonDict  # what `load` was called with (path absolute); stored per row

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def task_id(self) -> str:
        return self.spec.task_id

    @property
    def style(self) -> str:
        return self.spec.style

    def stored_options(self) -> str:
        """The `task_options` column: load options and prompt style, as canonical JSON."""
        return canonical_json({**self.load_options, "style": self.style})


@dataclass(frozen=True, eq=False)
class Work:
    """One generation to make."""

    key: str
    variant: PlannedVariant
    task: PlannedTask
    item: Item
    prompt: Prompt
    repeat: int
    seed: int


@dataclass
class Plan:
    spec: Spec
    spec_path: Path
    run_dir: Path
    variants: list[PlannedVariant]
    tasks: list[PlannedTask]
    work: list[Work]  # this shard's share (all of it when unsharded)
    ppl_data: Path | None  # the [ppl] text, resolved
    shard: Shard | None = None

    def cells(self) -> dict[tuple[str, str], list[Work]]:
        cells: dict[tuple[str, str], list[Work]] = defaultdict(list)
        for w in self.work:
            cells[(w.variant.label, w.task.label)].append(w)
        return cells

    def sampling(self, repeat: int) -> JsonDict:
        return sampling_dict(self.spec.sampling, repeat)


# --- keys -----------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:  # Any: any JSON-able value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


BASE_SAMPLING = ("temperature", "top_p", "max_new_tokens")
NOT_PER_GENERATION = frozenset({"repeats", "n", "seed"})  # how many samples, and the base seed


def sampling_dict(sampling: SamplingSpec, repeat: int) -> JsonDict:
    """The sampling parameters of one generation (what the engine gets, and part of its key):
    the base three, any other sampling setting that is set (None: off, and then not in the key,
    so adding an optional setting keeps the keys of runs that do not use it), and the seed."""
    values = sampling.model_dump()
    params = {name: values[name] for name in BASE_SAMPLING}
    params.update({name: value for name, value in values.items()
                   if name not in BASE_SAMPLING and name not in NOT_PER_GENERATION
                   and value is not None})
    params["seed"] = sampling.seed + repeat
    return params


def generation_key(variant: PlannedVariant, task: TaskSpec, item: Item, prompt: Prompt,
                   sampling: JsonDict, repeat: int) -> str:
    """sha256 of everything that determines a generation. Task options that only choose
    items (path, limit, seed) are left out: the item's index, id and prompt identify it."""
    task_options = {k: v for k, v in task.load_options().items()
                    if k not in ITEM_SELECTION_OPTIONS}
    identity = {
        "variant": variant.identity(),
        "task": {"label": task.label, "name": task.task_id, "style": task.style,
                 "options": task_options},
        "item": {"index": item.index, "id": str(item.id)},
        "prompt": prompt,
        "sampling": sampling,
        "repeat": repeat,
    }
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()


# --- variants and tasks ---------------------------------------------------------------------


def plan_variants(spec: Spec, spec_path: Path) -> list[PlannedVariant]:
    """Every model as its own dense variant, then the variants made from them, in spec order."""
    base = spec_path.parent
    sources = {label: model_source(model.source, base=base, engine=model.engine)
               for label, model in spec.models.items()}
    roots = lineage_roots(spec, spec_path)
    variants = [PlannedVariant(label, label, model, sources[label],
                               made_from=roots[label] if model.parent else None)
                for label, model in spec.models.items()]
    for label, v in spec.variants.items():
        if sources[v.model].kind == "server":
            raise InputError(spec_path, f"{v.model!r} is served over HTTP: crbench has no "
                                        "weights to make a variant from",
                             f"[variants.{label}].model")
        calib = calib_file(spec_path, label, v.recipe)
        digest = hashlib.sha256(calib.read_bytes()).hexdigest() if calib else None
        method = get_method(v.method, spec_path, f"[variants.{label}].method")
        variants.append(PlannedVariant(label, v.model, spec.models[v.model], sources[v.model],
                                       v.recipe, method, calib, digest))
    return variants


def lineage_roots(spec: Spec, spec_path: Path) -> dict[str, str]:
    """Each spec model's root: follow declared `parent`s (a variant's parent is its model) to
    a model without one. An unknown parent or a cycle is refused, naming the model's key."""
    parents = {label: model.parent for label, model in spec.models.items()}
    parents.update({label: variant.model for label, variant in spec.variants.items()})
    roots: dict[str, str] = {}
    for label, model in spec.models.items():
        if model.parent is not None and model.parent not in parents:
            raise InputError(spec_path, f"{model.parent!r} is not a model or variant of this "
                                        f"spec (known: {', '.join(parents)})",
                             f"[models.{label}].parent")
        chain, current = [label], parents[label]
        while current is not None:
            if current in chain:
                cycle = chain[chain.index(current):]
                first = next(c for c in cycle if c in spec.models)  # a variant names no parent
                raise InputError(spec_path, "parents form a cycle: "
                                 + " -> ".join([*cycle, current]), f"[models.{first}].parent")
            chain.append(current)
            current = parents.get(current)
        roots[label] = chain[-1]
    return roots


def calib_file(spec_path: Path, label: str, recipe: JsonDict) -> Path | None:
    """The local calibration file a recipe names (relative to the spec), if any; one that is
    not there is refused now, before anything runs."""
    calib = recipe.get("calib")
    if not isinstance(calib, str) or calib.startswith("hf:"):
        return None
    path = Path(resolve_path(spec_path, calib) or "")
    if not path.is_file():
        raise InputError(spec_path, f"calibration file not found: {path}",
                         f"[variants.{label}].calib")
    return path


def task_load_options(spec_path: Path, task: TaskSpec) -> JsonDict:
    """What the task's `load` is called with (path absolute); stored with every row so that
    rescoring can reload the same items."""
    options = task.load_options()
    if task.path is not None:
        options["path"] = str(Path(resolve_path(spec_path, task.path) or "").resolve())
    return options


def load_items(module: ModuleType, options: JsonDict) -> list[Item]:
    options = dict(options)
    items: list[Item] = module.load(options.pop("path"), **options)
    return items


def plan_task(spec_path: Path, number: int, task: TaskSpec) -> PlannedTask:
    place = f"[[tasks]] #{number}"
    try:
        module = get_task(task.task_id)
    except InputError as exc:
        raise InputError(spec_path, exc.message, f"{place}.task") from None
    options = task_load_options(spec_path, task)
    try:
        items = load_items(module, options)
    except TypeError as exc:  # an option the task's `load` does not take
        raise InputError(spec_path, f"task {task.task_id!r}: {exc}", place) from None
    except InputError as exc:
        if exc.path is not None:  # a problem in the data file: its own path and row
            raise
        raise InputError(spec_path, exc.message, place) from None
    if not items:
        raise InputError(spec_path, f"task {task.task_id!r} loaded no items", place)
    examples = task_examples(spec_path, number, task, module)
    return PlannedTask(number, task, module, items, examples, options)


def task_examples(spec_path: Path, number: int, task: TaskSpec, module: ModuleType
                  ) -> list[Item]:
    """The few-shot examples a task's prompts start with (none unless `shots` is set)."""
    if not task.shots:
        return []
    if task.style == "completion":
        raise InputError(spec_path, "`shots` needs style \"chat\" or \"direct\"",
                         f"[[tasks]] #{number}.shots")
    try:
        return few_shot_examples(module, task.shots, task.seed,
                                 int(task.options.get("difficulty", 1)))
    except InputError as exc:
        raise InputError(spec_path, exc.message, f"[[tasks]] #{number}.shots") from None


# --- the plan -------------------------------------------------------------------------------


def sharded_out(run_dir: Path, shard: Shard | None) -> Path:
    """A shard's default run dir: the spec's, suffixed (`runs/smoke-shard-2-of-4`)."""
    if shard is None:
        return run_dir
    return run_dir.with_name(f"{run_dir.name}-shard-{shard.index}-of-{shard.count}")


def build_plan(spec_path: str | Path, out: str | Path | None = None,
               shard: Shard | None = None) -> Plan:
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    run_dir = Path(out) if out is not None else sharded_out(default_out(spec_path, spec), shard)
    variants = plan_variants(spec, spec_path)
    tasks = [plan_task(spec_path, number, task) for number, task in enumerate(spec.tasks, 1)]
    work: list[Work] = []
    for variant in variants:
        for task in tasks:
            for item in task.items:
                prompt = with_examples(task.module, item, task.style, task.examples)
                for repeat in range(spec.sampling.samples):
                    sampling = sampling_dict(spec.sampling, repeat)
                    key = generation_key(variant, task.spec, item, prompt, sampling, repeat)
                    if shard is None or shard.owns(key):
                        work.append(Work(key, variant, task, item, prompt, repeat,
                                         sampling["seed"]))
    ppl_data = Path(resolve_path(spec_path, spec.ppl.data) or "") if spec.ppl else None
    return Plan(spec, spec_path, run_dir, variants, tasks, work, ppl_data, shard)
