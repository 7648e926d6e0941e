"""Distillation: supervised fine-tuning of a student model on teacher reasoning traces.

    crbench distill --recipe tiny-reasoner --out DIR                 the shipped tiny reasoner
    crbench distill --synthetic synth_arith:1-3,synth_logic:1 --out DIR
    crbench distill --traces pairs.jsonl --student demo --out DIR
    crbench distill --run runs/teacher --pick shortest-correct --out DIR

The data (`crbench.distill_data`) is tokenized the way an engine encodes the prompt, and TRL's
SFTTrainer trains on the completion only. LoRA (peft) by default, `full = true` for full
fine-tuning. Checkpoints go to OUT/checkpoints every `save_steps`: a killed run started again
with the same recipe resumes where it stopped (same data order, same RNG state). The result is
a plain model folder (LoRA merged into the weights), the adapter alone in OUT/adapter, and a
manifest OUT/distill.json: student, teacher/data source, data sha256, recipe, seed, steps,
loss per logging step, wall time and library versions.

`distill_cached(base_model, recipe_dict)` is what a spec variant `method = "distill"` calls:
the merged folder, trained on first use and cached by a hash of student, recipe and data.

Recipe fields (`DistillRecipe`): student; one data source: synthetic (+ items_per_level,
level_counts, data_seed, style) | traces | run (+ pick); teacher (a label for the manifest);
full, lora_r, lora_alpha, lora_dropout, target_modules; epochs or max_steps, batch_size,
grad_accum, lr, warmup_ratio, scheduler, max_length, seed, precision ("auto" | "fp32" | "bf16"),
save_steps, logging_steps.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crbench.distill_data import (
    PICKS,
    TracePair,
    data_sha256,
    jsonl_pairs,
    parse_synthetic,
    run_pairs,
    synthetic_pairs,
)
from crbench.errors import InputError

MANIFEST = "distill.json"
CACHE_VERSION = 1  # bump when training changes what it writes
Log = Callable[[str], None]


class DistillRecipe(BaseModel):
    """What to train, on what, and how. Exactly one data source."""

    model_config = ConfigDict(extra="forbid")

    student: str = "demo"
    synthetic: str | None = None  # "synth_arith:1-3,synth_temporal:1-2"
    items_per_level: int = Field(default=64, ge=1)
    level_counts: list[int] | None = None  # items at level 1, 2, ... (else items_per_level)
    data_seed: int = 1000  # generated items: away from the seeds runs evaluate on (0, 1, ...)
    style: Literal["chat", "completion", "direct"] = "chat"
    traces: str | None = None  # a JSONL of {"prompt", "completion"}
    run: str | None = None  # a crbench run folder
    pick: str = "shortest-correct"
    teacher: str | None = None  # a label for the manifest (default: the data source)
    full: bool = False
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)  # overrides epochs
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=5e-4, gt=0)
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    scheduler: str = "cosine"
    max_length: int = Field(default=1024, ge=8)
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    save_steps: int = Field(default=25, ge=1)
    logging_steps: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> DistillRecipe:
        given = [name for name in ("synthetic", "traces", "run") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one data source: synthetic, traces or run "
                             f"(got {', '.join(given) or 'none'})")
        if self.pick not in PICKS:
            raise ValueError(f"pick must be one of {', '.join(PICKS)}, got {self.pick!r}")
        return self

    def source(self) -> str:
        """The data source as the manifest names it."""
        if self.synthetic:
            counts = ("/".join(map(str, self.level_counts)) if self.level_counts
                      else str(self.items_per_level))
            return f"synthetic:{self.synthetic} x{counts} seed {self.data_seed}"
        return f"traces:{self.traces}" if self.traces else f"run:{self.run} ({self.pick})"


# The shipped tiny reasoner (crbench/reasoner/): SmolLM2-135M-Instruct taught to think before
# answering on the generated families' solver traces, in the chat prompt style the demo uses.
RECIPES: dict[str, dict[str, Any]] = {
    "tiny-reasoner": {
        "student": "demo",
        "synthetic": "synth_arith:1-3,synth_temporal:1-3,synth_logic:1-2,synth_multihop:1-2",
        # weighted to level 1 (what the targets are measured on); 696 examples, one pass.
        # 208 examples (32/16/8) taught arithmetic but left logic at chance and temporal looping
        "level_counts": [128, 40, 12],
        "data_seed": 1000,
        "style": "chat",
        "teacher": "crbench solver traces",
        "lora_r": 8,  # all linear layers: 2.4M parameters, a 9.8 MB fp32 adapter
        "lora_alpha": 16,
        "epochs": 1.0,
        "batch_size": 4,
        "lr": 1e-3,
        "warmup_ratio": 0.05,
        "seed": 0,
        "save_steps": 20,
        "logging_steps": 1,
    },
}


def parse_recipe(data: dict[str, Any], where: str | Path | None = None) -> DistillRecipe:
    try:
        return DistillRecipe.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        place = ".".join(str(p) for p in error["loc"]) or None
        raise InputError(where, error["msg"].removeprefix("Value error, "), place) from None


def variant_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """A spec variant's recipe as `DistillRecipe` fields: `method = "distill"` dropped, and
    `recipe = NAME` (e.g. "tiny-reasoner") expanded into that named recipe's fields, which
    the variant's own keys override. The student is the variant's base model."""
    fields = {k: v for k, v in recipe.items() if k != "method"}
    name = fields.pop("recipe", None)
    if name is not None:
        if name not in RECIPES:
            raise InputError(None, f"unknown recipe {name!r}; known: {', '.join(RECIPES)}",
                             "recipe")
        fields = {**RECIPES[name], **fields}
    return fields


def check_variant(recipe: dict[str, Any], where: str | Path | None = None) -> DistillRecipe:
    """The spec loader's check of a `method = "distill"` variant (the method registry's
    `check`): every field validated before anything runs."""
    try:
        fields = variant_recipe(recipe)
    except InputError as exc:
        raise InputError(where, exc.message, exc.place) from None
    return parse_recipe({**fields, "student": fields.get("student", "demo")}, where)


def named_recipe(name: str) -> DistillRecipe:
    if name not in RECIPES:
        raise InputError(None, f"unknown recipe {name!r}; known: {', '.join(RECIPES)}", "recipe")
    return parse_recipe(RECIPES[name], f"recipe {name}")


def load_pairs(recipe: DistillRecipe) -> list[TracePair]:
    if recipe.synthetic:
        families = parse_synthetic(recipe.synthetic, recipe.items_per_level,
                                   recipe.level_counts)
        return synthetic_pairs(families, seed=recipe.data_seed, style=recipe.style)
    if recipe.traces:
        return jsonl_pairs(recipe.traces)
    assert recipe.run is not None  # the validator allows no fourth case
    return run_pairs(recipe.run, recipe.pick)


def use_bf16(precision: str, device: str) -> bool:
    """bf16 autocast (the weights and LoRA parameters stay fp32): asked for, or "auto" where
    crbench's dtype probe (`crbench.dtype`: bf16 vs fp32 matmuls timed on this machine) picks
    bf16. Measured on a 2-core EPYC with avx512_bf16, a LoRA step of 8 x 314 tokens took 56
    CPU-seconds in bf16 against 73 in fp32."""
    if precision != "auto":
        return precision == "bf16"
    import torch

    from crbench.dtype import resolve_dtype

    return bool(resolve_dtype("auto", device) == torch.bfloat16)


def distill(recipe: DistillRecipe, out_dir: str | Path, *, log: Log = print) -> Path:
    """Train `recipe` into `out_dir` (resuming from its last checkpoint if one exists); returns
    the folder, a model folder with the LoRA merged, `adapter/` and the manifest."""
    from crbench.distill_train import train

    out = Path(out_dir)
    if (out / MANIFEST).is_file():
        log(f"{out} is already trained ({MANIFEST} exists)")
        return out
    saved = out / "recipe.json"
    wanted = recipe.model_dump(mode="json")
    if saved.is_file():
        if json.loads(saved.read_text(encoding="utf-8")) != wanted:
            raise InputError(out, "holds a distillation with another recipe; choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise InputError(out, "exists and is not a distillation folder; choose another --out")
    pairs = load_pairs(recipe)
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(wanted, indent=1) + "\n", encoding="utf-8")
    started = time.perf_counter()
    result = train(recipe, pairs, out, log=log)
    manifest = {
        "kind": "distill",
        "student": recipe.student,
        "teacher": recipe.teacher or recipe.source(),
        "data_source": recipe.source(),
        "data_sha256": data_sha256(pairs),
        "examples": len(pairs),
        "recipe": wanted,
        "seed": recipe.seed,
        **result,
        "wall_s_this_session": round(time.perf_counter() - started, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # done: nothing left to resume
    return out


def load_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the distillation manifest: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(path, "should be a JSON object")
    return data


def distill_cached(base_model: str, recipe: dict[str, Any], cache_root: Path | None = None,
                   log: Log | None = None) -> Path:
    """The merged model folder of `base_model` distilled by `recipe` (a dict of
    `DistillRecipe` fields, its `student` replaced by `base_model`), trained on first use and
    cached by a hash of the student's weights, the recipe and the training data."""
    from crbench.compress import local_model_folder, model_fingerprint
    from crbench.models import cache_dir

    parsed = parse_recipe({**variant_recipe(recipe), "student": base_model}, "recipe")
    key = {"version": CACHE_VERSION,
           "model": model_fingerprint(local_model_folder(base_model)),
           "recipe": parsed.model_dump(mode="json"),
           "data": data_sha256(load_pairs(parsed))}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cache_root) if cache_root is not None else cache_dir() / "distilled"
    out = root / f"{Path(str(base_model).rstrip('/')).name}-distill-{digest}"
    if (out / MANIFEST).is_file():
        return out
    return distill(parsed, out, log=log or (lambda _: None))
