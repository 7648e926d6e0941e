"""`crbench run`: expand a spec into generations, make the ones not stored yet, store each the
moment it exists, with its score and its token accounting.

    plan     variants x tasks x items x repeats, each with a key (see `generation_key`)
    skip     keys already in RUN_DIR/results.sqlite (an earlier or a concurrent run made them)
    prepare  per variant with work left: compress (cached), build the engine once
    generate pending prompts in chunks; re-check the store before each chunk, so two processes
             running one spec share the work instead of doubling it
    commit   each generation and its score in one transaction, as the engine yields it

Token accounting per generation: the engine reports prompt and completion tokens. The thinking
part is the text up to and including the last `</think>` (or a server's separate reasoning);
`thinking_tokens` is the engine's `count_tokens` of that text (at most the completion) and
`answer_tokens` = completion - thinking, so the two always add up to the completion (the EOS
token counts as answer). Re-tokenising a piece of text can differ from the generated ids by a
token at the boundary; that is the only approximation. A trace whose thinking was opened (by
the output or by a prompt ending in `<think>`) and never closed is all thinking and `truncated`,
as is one that hit max_new_tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from crbench.errors import InputError
from crbench.extract import as_written
from crbench.spec import (
    ITEM_SELECTION_OPTIONS,
    THROUGHPUT_OPTIONS,
    ModelSpec,
    Spec,
    TaskSpec,
    default_out,
    load_spec,
    resolve_path,
)
from crbench.tasks import few_shot_examples, with_examples

QUANTIZERS = ("gptq", "rtn")
CHUNK_BATCHES = 4  # a chunk is this many engine batches: the unit of the concurrency re-check


# --- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    label: str
    base_model: str  # model label
    model: ModelSpec
    recipe: dict[str, Any] | None  # None: the model itself ("dense")
    calib_sha256: str | None = None  # a local calibration file's content is part of the variant

    @property
    def method(self) -> str:
        return str(self.recipe["method"]) if self.recipe else "dense"

    def identity(self) -> dict[str, Any]:
        engine = {k: v for k, v in self.model.options.items() if k not in THROUGHPUT_OPTIONS}
        identity = {"label": self.label, "base_model": self.base_model,
                    "source": self.model.source, "recipe": self.recipe,
                    "engine": self.model.engine, "engine_options": engine}
        if self.calib_sha256:
            identity["calib_sha256"] = self.calib_sha256
        return identity


@dataclass
class Work:
    """One generation to make."""

    key: str
    variant: Variant
    task: TaskSpec
    task_module: Any
    item: Any  # crbench.tasks.base.Item
    prompt: Any  # str or chat messages
    repeat: int
    seed: int


@dataclass
class Plan:
    spec: Spec
    spec_path: Path
    run_dir: Path
    variants: list[Variant]
    work: list[Work]

    def cells(self) -> dict[tuple[str, str], list[Work]]:
        cells: dict[tuple[str, str], list[Work]] = defaultdict(list)
        for w in self.work:
            cells[(w.variant.label, w.task.name)].append(w)
        return cells


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def sampling_dict(spec: Spec, repeat: int) -> dict[str, Any]:
    s = spec.sampling
    return {"temperature": s.temperature, "top_p": s.top_p, "max_new_tokens": s.max_new_tokens,
            "seed": s.seed + repeat}


def generation_key(variant: Variant, task: TaskSpec, item: Any, prompt: Any,
                   sampling: dict[str, Any], repeat: int) -> str:
    """sha256 of everything that determines a generation. Task options that only choose
    items (path, limit, seed) are left out: the item's index, id and prompt identify it."""
    task_options = {k: v for k, v in task.load_options().items()
                    if k not in ITEM_SELECTION_OPTIONS}
    identity = {
        "variant": variant.identity(),
        "task": {"label": task.name, "name": task.task, "style": task.style,
                 "options": task_options},
        "item": {"index": item.index, "id": str(item.id)},
        "prompt": prompt,
        "sampling": sampling,
        "repeat": repeat,
    }
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()


def spec_variants(spec: Spec, spec_path: Path) -> list[Variant]:
    """Every model as its own dense variant, then the compressed variants, in spec order."""
    variants = [Variant(label, label, model, None) for label, model in spec.models.items()]
    for label, v in spec.variants.items():
        recipe = v.recipe
        calib = calib_file(spec_path, recipe)
        digest = hashlib.sha256(calib.read_bytes()).hexdigest() if calib else None
        variants.append(Variant(label, v.model, spec.models[v.model], recipe, digest))
    return variants


def calib_file(spec_path: Path, recipe: dict[str, Any]) -> Path | None:
    """The local calibration file a recipe names (relative to the spec), if any."""
    calib = recipe.get("calib")
    if not isinstance(calib, str) or calib.startswith("hf:"):
        return None
    path = Path(resolve_path(spec_path, calib) or "")
    return path if path.is_file() else None


def task_load_options(spec: Spec, spec_path: Path, task: TaskSpec) -> dict[str, Any]:
    """What the task's `load` is called with (path absolute); stored with every row so that
    rescoring can reload the same items."""
    options = task.load_options()
    if task.path is not None:
        options["path"] = str(Path(resolve_path(spec_path, task.path) or "").resolve())
    return options


def load_items(module: Any, options: dict[str, Any]) -> list[Any]:
    options = dict(options)
    return module.load(options.pop("path"), **options)


def load_task_items(spec: Spec, spec_path: Path, number: int, task: TaskSpec) -> tuple[Any, list]:
    from crbench.tasks import get_task

    place = f"[[tasks]] #{number}"
    try:
        module = get_task(task.task)
    except InputError as exc:
        raise InputError(spec_path, exc.message, f"{place}.task") from None
    try:
        items = load_items(module, task_load_options(spec, spec_path, task))
    except TypeError as exc:  # an option the task's `load` does not take
        raise InputError(spec_path, f"task {task.task!r}: {exc}", place) from None
    except InputError as exc:
        if exc.path is not None:  # a problem in the data file: its own path and row
            raise
        raise InputError(spec_path, exc.message, place) from None
    if not items:
        raise InputError(spec_path, f"task {task.task!r} loaded no items", place)
    return module, items


def task_examples(spec_path: Path, number: int, task: TaskSpec, module: Any) -> list[Any]:
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


def build_plan(spec_path: str | Path, out: str | Path | None = None) -> Plan:
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    run_dir = Path(out) if out is not None else default_out(spec_path, spec)
    variants = spec_variants(spec, spec_path)
    work: list[Work] = []
    tasks = [(task, *load_task_items(spec, spec_path, n, task))
             for n, task in enumerate(spec.tasks, 1)]
    examples = {task.name: task_examples(spec_path, number, task, module)
                for number, (task, module, _) in enumerate(tasks, 1)}
    for variant in variants:
        for task, module, items in tasks:
            for item in items:
                prompt = with_examples(module, item, task.style, examples[task.name])
                for repeat in range(spec.sampling.samples):
                    sampling = sampling_dict(spec, repeat)
                    key = generation_key(variant, task, item, prompt, sampling, repeat)
                    work.append(Work(key, variant, task, module, item, prompt, repeat,
                                     sampling["seed"]))
    return Plan(spec, spec_path, run_dir, variants, work)


# --- models: resolve, compress, describe -----------------------------------------------------


def model_source(plan: Plan, model: ModelSpec) -> str:
    """What the engine is given: a server URL and hub ids as written, `demo` and GGUF files
    resolved; relative local paths are relative to the spec file."""
    source = model.source
    if source.startswith(("http://", "https://")):
        return source
    if source in ("demo",) or model.engine in ("openai",):
        return source
    spec_relative = resolve_path(plan.spec_path, source)
    looks_local = source.startswith((".", "/", "~")) or source.endswith(".gguf")
    if looks_local or Path(spec_relative).exists():
        return spec_relative
    return source  # a hub id


def check_local_models(plan: Plan) -> None:
    """Refuse a local model folder without config or weights now, naming the spec field.
    (Only folders: the demo model and GGUF files are converted later, when first needed.)"""
    from crbench.models import DEMO_MODEL, check_model_folder

    for label, model in plan.spec.models.items():
        source = model_source(plan, model)
        if model.engine == "openai" or source in ("demo", DEMO_MODEL) or source.endswith(".gguf"):
            continue
        looks_local = model.source.startswith((".", "/", "~")) or Path(source).exists()
        if not looks_local:
            continue  # a hub id
        try:
            check_model_folder(Path(source).expanduser())
        except InputError as exc:
            raise InputError(exc.path or plan.spec_path, exc.message,
                             exc.place or f"[models.{label}].source") from None


def prepare_variant(plan: Plan, variant: Variant) -> tuple[str, dict[str, Any]]:
    """The model path an engine loads for this variant (compressing on first use, cached),
    and its row for the `variants` table."""
    from crbench.models import resolve_model

    source = model_source(plan, variant.model)
    row: dict[str, Any] = {"variant": variant.label, "base_model": variant.base_model,
                           "method": variant.method, "model_path": source}
    if variant.recipe is None:
        if variant.model.engine in ("hf", "vllm"):
            source = resolve_model(source)
            row["model_path"] = source
        row["size_bytes"] = weights_size(Path(source))
        return source, row
    try:
        from crbench.compress import compress_cached
    except ImportError:
        raise InputError(plan.spec_path, "compression is not available in this install",
                         f"[variants.{variant.label}]") from None
    recipe = dict(variant.recipe)
    calib = calib_file(plan.spec_path, recipe)
    if calib is not None:
        recipe["calib"] = str(calib)

    def log(message: str) -> None:
        print(f"compress {variant.label}: {message}", file=sys.stderr, flush=True)

    path = Path(compress_cached(resolve_model(source), recipe, log=log))
    manifest = read_manifest(path) or {}
    settings = {**recipe, **manifest.get("recipe", {})}  # the compressor's, defaults filled in
    row.update(
        model_path=str(path),
        manifest=json.dumps(manifest, default=str) if manifest else None,
        sparsity=settings.get("sparsity"),
        pattern=settings.get("pattern"),
        bits=settings.get("bits") if variant.method in QUANTIZERS else None,
        group_size=(settings.get("group_size") or None) if variant.method in QUANTIZERS else None,
        size_bytes=effective_size(path, manifest.get("modules", [])),
    )
    return str(path), row


def read_manifest(path: Path) -> dict[str, Any] | None:
    from crbench.compress import load_manifest

    try:
        return load_manifest(path)
    except InputError:
        return None


def weights_size(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) or None


DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
SCALE_BYTES = 2  # an fp16 scale (and zero point) per quantization group


def effective_size(path: Path, modules: list[dict[str, Any]]) -> int | None:
    """Bytes the weights would take stored compactly. Quantized weights are saved dequantized
    (fake-quant), so their size on disk says nothing: each quantized module counts
    bits/8 per weight plus an fp16 scale (and, asymmetric, a zero point) per group or row;
    every other tensor counts at its stored dtype. Pruned weights count dense (sparse formats
    differ too much to pick one; the `sparsity` column says how many are zero)."""
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return weights_size(path)
    from safetensors import safe_open

    quantized = {f"{m['module']}.weight": m for m in modules
                 if not m.get("kept_dense") and m.get("bits")}
    total = 0.0
    for file in files:
        with safe_open(file, "pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a dict
                tensor = f.get_slice(name)
                shape = tensor.get_shape()
                numel = math.prod(shape)
                module = quantized.get(name)
                if module is None or len(shape) != 2:
                    total += numel * DTYPE_BYTES.get(tensor.get_dtype(), 4)
                    continue
                rows, cols = shape
                groups = rows * math.ceil(cols / (module.get("group_size") or cols))
                per_group = SCALE_BYTES * (1 if module.get("sym", True) else 2)
                total += numel * module["bits"] / 8 + groups * per_group
    return int(total)


def measure_ppl(plan: Plan, model_path: str, device: str | None) -> float | None:
    """Perplexity of the variant on the spec's [ppl] text, if the spec asks for it."""
    if plan.spec.ppl is None:
        return None
    from crbench.ppl import perplexity

    data = resolve_path(plan.spec_path, plan.spec.ppl.data)
    return float(perplexity(model_path, data, seqlen=plan.spec.ppl.seqlen, device=device)["ppl"])


def make_variant_engine(plan: Plan, variant: Variant, model_path: str) -> Any:
    from crbench.engines import make_engine

    options = dict(variant.model.options)
    model_arg = model_path
    if variant.model.engine == "openai":
        model_arg = options.pop("model")
        options["base_url"] = variant.model.source
    try:
        return make_engine(variant.model.engine, model_arg, **options)
    except (TypeError, ValueError, ImportError) as exc:  # an option it does not take, or
        # a bad value, or an engine whose package is not installed
        raise InputError(plan.spec_path, f"engine {variant.model.engine!r}: {exc}",
                         f"[models.{variant.base_model}]") from None


# --- one generation: tokens, score, row -----------------------------------------------------


def split_tokens(count: Callable[[str], int] | None, prompt: Any, gen: Any
                 ) -> tuple[int, int, bool]:
    """(thinking_tokens, answer_tokens, thinking_unclosed); see the module docstring.
    `count` is the engine's tokenizer; None (it has none) splits in proportion to characters."""
    from crbench.extract import THINK_CLOSE, THINK_OPEN, split_thinking

    completion = int(gen.completion_tokens)

    def tokens_of(part: str, whole: str) -> int:
        if not part:
            return 0
        if count is None:
            return round(completion * len(part) / max(len(whole), 1))
        return min(count(part), completion)

    if gen.reasoning is not None:  # the server split it out: all of it is thinking
        thinking = tokens_of(gen.reasoning, gen.reasoning + gen.text)
        return thinking, completion - thinking, False
    parts = split_thinking(gen.text)  # the scorer's reading of the same text
    if parts.closed:
        head = gen.text.rpartition(THINK_CLOSE)[0] + THINK_CLOSE
        thinking = tokens_of(head, gen.text)
        return thinking, completion - thinking, False
    prefilled = isinstance(prompt, str) and prompt.rstrip().endswith(THINK_OPEN)
    if parts.opened or prefilled:  # opened (by the output or the prompt), never closed
        return completion, 0, True
    return 0, completion, False


def token_counter(engine: Any) -> Callable[[str], int] | None:
    """The engine's `count_tokens`, or None when it cannot count (a server model whose
    tokenizer is not available here); said once, on stderr."""
    try:
        engine.count_tokens("probe")
    except Exception as exc:  # noqa: BLE001 - any tokenizer failure means the same here
        print(f"crbench: no tokenizer for {engine.name} ({type(exc).__name__}: {exc}); "
              "thinking/answer tokens are split in proportion to characters", file=sys.stderr)
        return None
    return engine.count_tokens


def score_output(work: Work, text: str, hit_limit: bool, reasoning: str | None = None
                 ) -> dict[str, Any]:
    prompt = work.prompt if isinstance(work.prompt, str) else None
    score = work.task_module.score(work.item, as_written(text, prompt, reasoning),
                                   hit_limit=hit_limit)
    return score.to_dict() if hasattr(score, "to_dict") else asdict(score)


def generation_row(plan: Plan, work: Work, count: Callable[[str], int] | None, gen: Any
                   ) -> dict[str, Any]:
    thinking, answer, unclosed = split_tokens(count, work.prompt, gen)
    return {
        "key": work.key,
        "variant": work.variant.label,
        "base_model": work.variant.base_model,
        "engine": work.variant.model.engine,
        "task": work.task.name,
        "task_name": work.task.task,
        "task_options": canonical_json(
            {**task_load_options(plan.spec, plan.spec_path, work.task), "style": work.task.style}
        ),
        "item_index": work.item.index,
        "item_id": str(work.item.id),
        "repeat": work.repeat,
        "seed": work.seed,
        "sampling": canonical_json(sampling_dict(plan.spec, work.repeat)),
        "prompt": work.prompt if isinstance(work.prompt, str) else canonical_json(work.prompt),
        "output": gen.text,
        "reasoning": gen.reasoning,
        "prompt_tokens": int(gen.prompt_tokens),
        "completion_tokens": int(gen.completion_tokens),
        "thinking_tokens": thinking,
        "answer_tokens": answer,
        "finish_reason": gen.finish_reason,
        "truncated": int(gen.hit_limit or unclosed),
        "wall_s": float(gen.wall_s),
    }


# --- the run --------------------------------------------------------------------------------


@dataclass
class Summary:
    run_dir: Path
    planned: int = 0
    stored_before: int = 0
    generated: int = 0
    raced: int = 0  # made here but stored first by another process
    failed: list[dict[str, Any]] = field(default_factory=list)
    compressed: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"run dir: {self.run_dir}",
               f"generations: {self.planned} planned, {self.stored_before} already stored, "
               f"{self.generated} generated now"
               + (f", {self.raced} stored first by another process" if self.raced else "")]
        if self.failed:
            out.append(f"FAILED: {len(self.failed)} generations (stored in the `failures` table; "
                       "re-run to retry them):")
            out += [f"  {f['variant']} / {f['task']} item {f['item_index']} repeat "
                    f"{f['repeat']}: {f['error']}" for f in self.failed[:20]]
        return out


class NoResult(RuntimeError):
    """The engine finished without a result (or an error) for this prompt."""


def engine_results(engine: Any, prompts: list[Any], params: Any) -> Iterator[tuple[int, Any]]:
    """(index, Generation or the exception it failed with) for every prompt, as they come.

    An engine reports an item that failed after its retries either by yielding the exception
    in place of a Generation, or by raising one that carries the item's `index`; in the second
    case the prompts not done yet are sent again. Any other exception stops the run (what is
    committed stays committed)."""
    left = list(range(len(prompts)))
    while left:
        done: set[int] = set()
        try:
            for i, result in engine.generate([prompts[j] for j in left], params):
                done.add(i)
                yield left[i], result
        except Exception as exc:
            index = getattr(exc, "index", None)
            if not isinstance(index, int) or not 0 <= index < len(left) or index in done:
                raise
            done.add(index)
            yield left[index], exc
        else:
            for i in sorted(set(range(len(left))) - done):
                yield left[i], NoResult("the engine returned nothing for this prompt")
            return
        left = [j for i, j in enumerate(left) if i not in done]


def generate_variant(plan: Plan, conn: Any, variant: Variant, engine: Any, pending: list[Work],
                     progress: Any, summary: Summary) -> None:
    from crbench.engines.base import SamplingParams
    from crbench.store import insert_generation, record_failure, stored_keys

    chunk_size = max(1, int(variant.model.options.get("batch_size", 8))) * CHUNK_BATCHES
    count = token_counter(engine)
    by_repeat: dict[int, list[Work]] = defaultdict(list)
    for w in pending:
        by_repeat[w.repeat].append(w)
    for repeat, works in sorted(by_repeat.items()):
        params = SamplingParams(**sampling_dict(plan.spec, repeat))
        for start in range(0, len(works), chunk_size):
            chunk = works[start : start + chunk_size]
            done_elsewhere = stored_keys(conn, [w.key for w in chunk])
            for w in chunk:
                if w.key in done_elsewhere:
                    summary.raced += 1
                    progress.add(w.variant.label, w.task.name, tokens=0, correct=None)
            chunk = [w for w in chunk if w.key not in done_elsewhere]
            for w in chunk:
                progress.start(w.variant.label, w.task.name)
            for index, result in engine_results(engine, [w.prompt for w in chunk], params):
                w = chunk[index]
                if isinstance(result, BaseException):
                    failure = {"key": w.key, "variant": variant.label, "task": w.task.name,
                               "item_index": w.item.index, "repeat": w.repeat,
                               "error": f"{type(result).__name__}: {result}"[:2000],
                               "attempts": int(getattr(result, "attempts", 1))}
                    record_failure(conn, **failure)
                    summary.failed.append(failure)
                    progress.fail(variant.label, w.task.name)
                    continue
                row = generation_row(plan, w, count, result)
                score = score_output(w, result.text, result.hit_limit, result.reasoning)
                if insert_generation(conn, row, score):
                    summary.generated += 1
                else:
                    summary.raced += 1
                progress.add(variant.label, w.task.name, tokens=row["completion_tokens"],
                             correct=bool(score["correct"]))


def run(spec_path: str | Path, out: str | Path | None = None, *, dry_run: bool = False,
        stream: TextIO | None = None, live: bool | None = None) -> Summary:
    """Run a spec (see the module docstring). Returns what happened; failures are in it."""
    from crbench.progress import Cell, RunProgress
    from crbench.store import (
        STORE_FILE,
        connect,
        iter_table,
        put_variant,
        set_meta,
        set_plan,
        stored_scores,
    )

    stream = stream or sys.stdout
    plan = build_plan(spec_path, out)
    if dry_run:
        stored = {}
        if (plan.run_dir / STORE_FILE).is_file():  # a dry run creates nothing
            conn = connect(plan.run_dir, readonly=True)
            stored = stored_scores(conn, [w.key for w in plan.work])
            conn.close()
        print_plan(plan, stored, stream)
        return Summary(plan.run_dir, planned=len(plan.work), stored_before=len(stored))
    check_local_models(plan)  # a bad model folder is refused before the store is touched
    conn = connect(plan.run_dir)
    try:
        stored = stored_scores(conn, [w.key for w in plan.work])
        summary = Summary(plan.run_dir, planned=len(plan.work), stored_before=len(stored))
        set_plan(conn, [{"key": w.key, "variant": w.variant.label, "task": w.task.name,
                         "item_index": w.item.index, "repeat": w.repeat} for w in plan.work])
        set_meta(conn, "spec", plan.spec.model_dump(mode="json"))
        set_meta(conn, "spec_path", str(plan.spec_path))
        cells = []
        for (variant, task), works in plan.cells().items():
            scores = [stored[w.key] for w in works if w.key in stored]
            known = [c for c in scores if c is not None]
            cells.append(Cell(variant, task, total=len(works), done=len(scores),
                              scored=len(known), correct=sum(known)))
        described = {r["variant"]: r for r in iter_table(conn, "variants")}
        with RunProgress(cells, stream=stream, live=live) as progress:
            for variant in plan.variants:
                pending = [w for w in plan.work if w.variant is variant and w.key not in stored]
                old = described.get(variant.label)
                wants_ppl = plan.spec.ppl is not None and (old is None or old["ppl"] is None)
                if not pending and old is not None and not wants_ppl:
                    continue
                started = time.monotonic()
                model_path, row = prepare_variant(plan, variant)
                if variant.recipe is not None:
                    took = time.monotonic() - started
                    summary.compressed.append(f"{variant.label} ({took:.0f} s)")
                same_model = old is not None and old["model_path"] == row["model_path"]
                if plan.spec.ppl is not None and not (same_model and old["ppl"] is not None):
                    device = variant.model.options.get("device")
                    row["ppl"] = measure_ppl(plan, model_path, device)
                put_variant(conn, row)
                if not pending:
                    continue
                engine = make_variant_engine(plan, variant, model_path)
                try:
                    generate_variant(plan, conn, variant, engine, pending, progress, summary)
                finally:
                    engine.close()
        return summary
    finally:
        conn.close()


def print_plan(plan: Plan, stored: dict[str, Any], stream: TextIO) -> None:
    """The dry run: counts per cell, what is stored, what would be compressed; no generation."""
    print(f"spec: {plan.spec_path}\nrun dir: {plan.run_dir}", file=stream)
    print(f"{'variant':<24} {'task':<24} {'total':>7} {'stored':>7} {'to run':>7}", file=stream)
    for (variant, task), works in plan.cells().items():
        done = sum(w.key in stored for w in works)
        print(f"{variant:<24} {task:<24} {len(works):>7} {done:>7} {len(works) - done:>7}",
              file=stream)
    todo = sum(w.key not in stored for w in plan.work)
    print(f"total: {len(plan.work)} generations, {len(plan.work) - todo} stored, {todo} to run",
          file=stream)
    for variant in plan.variants:
        if variant.recipe is None:
            continue
        needed = any(w.variant is variant and w.key not in stored for w in plan.work)
        state = compression_state(variant) if needed else "not needed (all stored)"
        print(f"compress {variant.label}: {canonical_json(variant.recipe)}: {state}", file=stream)


def compression_state(variant: Variant) -> str:
    """Whether the compressed model is cached already, if the compress module can tell."""
    try:
        from crbench.compress import cached_path
    except ImportError:
        return "will be compressed unless cached"
    try:
        path = cached_path(variant.model.source, dict(variant.recipe or {}))
    except Exception:  # noqa: BLE001 - a dry run only reports
        return "will be compressed unless cached"
    return f"cached at {path}" if path else "will be compressed"


from crbench.rescore import rescore_run  # noqa: E402, F401  (moved; H2 removes this line)
