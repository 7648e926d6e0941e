"""The training loop behind `crbench.distill`: TRL's SFTTrainer on pre-tokenized rows (loss on
the completion only), LoRA through peft, checkpoints to resume from, and the saved result.

Imported only when training (torch, transformers, trl, peft are heavy).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crbench.distill_data import TracePair, tokenize

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "peft": peft.__version__, "python": platform.python_version()}


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint under `folder` (the trainer writes `checkpoint-N`)."""
    done = [p for p in folder.glob("checkpoint-*") if p.name.removeprefix("checkpoint-").isdigit()
            and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.removeprefix("checkpoint-")))) if done else None


def train(recipe: Any, pairs: list[TracePair], out: Path, *,  # Any: a DistillRecipe
          log: Callable[[str], None]) -> dict[str, Any]:
    """Train on `pairs`, save into `out`, return the manifest's training fields."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback, set_seed
    from trl import SFTConfig, SFTTrainer

    from crbench.distill import use_bf16
    from crbench.models import default_device, load_causal_lm, resolve_model

    device = default_device()
    model, tokenizer = load_causal_lm(recipe.student, device=device, dtype="float32")
    model.train()
    set_seed(recipe.seed)  # LoRA's initial A matrices come from torch's global RNG
    if not recipe.full:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
                            lora_dropout=recipe.lora_dropout,
                            target_modules=recipe.target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    rows = length_batched(tokenize(pairs, tokenizer, recipe.max_length),
                          recipe.batch_size * recipe.grad_accum, recipe.seed)
    dataset = Dataset.from_list(rows)
    bf16 = use_bf16(recipe.precision, device)
    checkpointing_off: dict[str, Any] = {checkpointing_option(SFTConfig): False}
    args = SFTConfig(
        output_dir=str(out / CHECKPOINTS),
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps or -1,
        per_device_train_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        learning_rate=recipe.lr,
        lr_scheduler_type=recipe.scheduler,
        warmup_steps=recipe.warmup_ratio,  # below 1: a fraction of the steps
        weight_decay=0.0,
        logging_steps=recipe.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=2,
        seed=recipe.seed,
        data_seed=recipe.seed,
        bf16=bf16,
        use_cpu=device == "cpu",
        completion_only_loss=True,
        max_length=recipe.max_length,
        report_to="none",
        disable_tqdm=True,
        train_sampling_strategy="sequential",  # the order `length_batched` chose
        dataloader_num_workers=0,
        dataset_num_proc=None,
        **checkpointing_off,
    )

    class Progress(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                log(f"step {state.global_step}/{state.max_steps}: loss {logs['loss']:.4f}")

    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=[Progress()])
    trainer.remove_callback(PrinterCallback)  # it prints every log dict on stdout
    resume = last_checkpoint(out / CHECKPOINTS)
    if resume:
        log(f"resuming from {Path(resume).name}")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    save(trainer.model, tokenizer, out, full=recipe.full)
    history = trainer.state.log_history
    return {
        "student_path": resolve_model(recipe.student),
        "steps": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0), 4),
        "losses": [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
        "train_tokens": sum(len(r["input_ids"]) for r in rows),
        "completion_tokens": sum(sum(r["completion_mask"]) for r in rows),
        "precision": "bf16" if bf16 else "fp32",
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "resumed_from": Path(resume).name if resume else None,
        "train_wall_s": round(time.perf_counter() - started, 1),
        "versions": versions(),
    }


def length_batched(rows: list[dict[str, list[int]]], batch: int, seed: int
                   ) -> list[dict[str, list[int]]]:
    """Rows reordered so each batch holds rows of similar length (little padding: on a CPU the
    padding is paid in full), the batches themselves in a seeded random order."""
    import random

    ordered = sorted(rows, key=lambda r: len(r["input_ids"]))
    batches = [ordered[i:i + batch] for i in range(0, len(ordered), batch)]
    random.Random(seed).shuffle(batches)
    return [row for b in batches for row in b]


def save(model: Any, tokenizer: Any, out: Path, *, full: bool) -> None:
    """The adapter alone (LoRA) under out/adapter, and the whole model (LoRA merged) in out."""
    if not full:
        model.save_pretrained(out / ADAPTER, safe_serialization=True)
        model = model.merge_and_unload()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def checkpointing_option(config_class: Any) -> str:
    """The training argument that turns activation checkpointing off. TRL turns it on by
    default: it saves memory by running each forward twice, which a small student on a CPU does
    not need (1.5x the compute per step). transformers 5.25 renamed `gradient_checkpointing`
    to `activation_checkpointing` and warns on the old name."""
    import dataclasses

    names = {field.name for field in dataclasses.fields(config_class)}
    return ("activation_checkpointing" if "activation_checkpointing" in names
            else "gradient_checkpointing")
