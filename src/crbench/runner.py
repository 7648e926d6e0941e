"""`crbench run`: expand a spec into generations, make the ones not stored yet, store each the
moment it exists, with its score and its token accounting.

    plan     variants x tasks x items x repeats, each with a key      crbench/plan.py
    skip     keys already in RUN_DIR/results.sqlite (an earlier or a concurrent run made them)
    prepare  per variant with work left: build it (compress, cached), describe it, make its
             engine once                                               crbench/prepare.py
    generate pending prompts in chunks; re-check the store before each chunk, so two processes
             running one spec share the work instead of doubling it
    commit   each generation and its score in one transaction, as the engine yields it:
             a GenerationRecord and its ScoreRecord (`crbench.scoring`, the one scoring
             function) handed to `crbench.store`; a failure as a FailureRecord

`--shard K/N` runs only share K of the plan (`crbench.plan.Shard`) into its own store, which
records meta `shard` = "K/N" and only its share in `plan`; `crbench merge` unions the shards.

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

import dataclasses
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from crbench.engines.base import Engine, Generation, Prompt, SamplingParams
from crbench.plan import Plan, PlannedVariant, Shard, Work, build_plan, canonical_json
from crbench.prepare import (
    build_state,
    check_local_models,
    make_variant_engine,
    measure_ppl,
    prepare_variant,
)
from crbench.progress import CellProgress, RunProgress
from crbench.records import FailureRecord, GenerationRecord, ScoreRecord
from crbench.scoring import score_generation
from crbench.store import Store

CHUNK_BATCHES = 4  # a chunk is this many engine batches: the unit of the concurrency re-check
Counter = Callable[[str], int]


# --- one generation: tokens, record, score --------------------------------------------------


def split_tokens(count: Counter | None, prompt: Prompt, gen: Generation) -> tuple[int, int, bool]:
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


def token_counter(engine: Engine) -> Counter | None:
    """The engine's `count_tokens`, or None when it cannot count (a server model whose
    tokenizer is not available here); said once, on stderr."""
    try:
        engine.count_tokens("probe")
    except Exception as exc:  # noqa: BLE001 - any tokenizer failure means the same here
        print(f"crbench: no tokenizer for {engine.name} ({type(exc).__name__}: {exc}); "
              "thinking/answer tokens are split in proportion to characters", file=sys.stderr)
        return None
    return engine.count_tokens


def text_prompt(prompt: Prompt) -> str | None:
    return prompt if isinstance(prompt, str) else None


def generation_record(plan: Plan, work: Work, count: Counter | None, gen: Generation
                      ) -> GenerationRecord:
    thinking, answer, unclosed = split_tokens(count, work.prompt, gen)
    return GenerationRecord(
        key=work.key,
        variant=work.variant.label,
        base_model=work.variant.base_model,
        engine=work.variant.model.engine,
        task=work.task.label,
        task_id=work.task.task_id,
        task_options=work.task.stored_options(),
        item_index=work.item.index,
        item_id=str(work.item.id),
        repeat=work.repeat,
        seed=work.seed,
        sampling=canonical_json(plan.sampling(work.repeat)),
        prompt=text_prompt(work.prompt) or canonical_json(work.prompt),
        output=gen.text,
        reasoning=gen.reasoning,
        prompt_tokens=int(gen.prompt_tokens),
        completion_tokens=int(gen.completion_tokens),
        thinking_tokens=thinking,
        answer_tokens=answer,
        finish_reason=gen.finish_reason,
        truncated=bool(gen.hit_limit or unclosed),
        wall_s=float(gen.wall_s),
        extra=dict(gen.extra),
    )


def score_work(work: Work, gen: Generation) -> ScoreRecord:
    """The one scoring function (`crbench.scoring`), as `crbench score` calls it too."""
    return score_generation(work.task.module, work.item, gen.text,
                            prompt=text_prompt(work.prompt), style=work.task.style,
                            reasoning=gen.reasoning, finish_reason=gen.finish_reason,
                            key=work.key)


def failure_record(work: Work, error: BaseException) -> FailureRecord:
    return FailureRecord(key=work.key, variant=work.variant.label, task=work.task.label,
                         item_index=work.item.index, repeat=work.repeat,
                         error=f"{type(error).__name__}: {error}"[:2000],
                         attempts=int(getattr(error, "attempts", 1)))


# --- the run --------------------------------------------------------------------------------


@dataclass
class Summary:
    run_dir: Path
    planned: int = 0
    stored_before: int = 0
    generated: int = 0
    raced: int = 0  # made here but stored first by another process
    failed: list[FailureRecord] = field(default_factory=list)
    compressed: list[str] = field(default_factory=list)  # variants built by this run
    shard: Shard | None = None

    def lines(self) -> list[str]:
        share = f" (shard {self.shard})" if self.shard else ""
        out = [f"run dir: {self.run_dir}",
               f"generations{share}: {self.planned} planned, {self.stored_before} already "
               f"stored, {self.generated} generated now"
               + (f", {self.raced} stored first by another process" if self.raced else "")]
        if self.failed:
            out.append(f"FAILED: {len(self.failed)} generations (stored in the `failures` table; "
                       "re-run to retry them):")
            out += [f"  {f.variant} / {f.task} item {f.item_index} repeat {f.repeat}: {f.error}"
                    for f in self.failed[:20]]
        return out


class NoResult(RuntimeError):
    """The engine finished without a result (or an error) for this prompt."""


def engine_results(engine: Engine, prompts: list[Prompt], params: SamplingParams
                   ) -> Iterator[tuple[int, Generation | BaseException]]:
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


def generate_variant(plan: Plan, conn: Store, variant: PlannedVariant, engine: Engine,
                     pending: list[Work], progress: RunProgress, summary: Summary) -> None:
    from crbench.store import insert_generation, record_failure, stored_keys

    chunk_size = max(1, int(variant.model.options.get("batch_size", 8))) * CHUNK_BATCHES
    count = token_counter(engine)
    by_repeat: dict[int, list[Work]] = defaultdict(list)
    for w in pending:
        by_repeat[w.repeat].append(w)
    for repeat, works in sorted(by_repeat.items()):
        params = SamplingParams(**plan.sampling(repeat))
        for start in range(0, len(works), chunk_size):
            chunk = works[start : start + chunk_size]
            done_elsewhere = stored_keys(conn, [w.key for w in chunk])
            for w in chunk:
                if w.key in done_elsewhere:
                    summary.raced += 1
                    progress.add(variant.label, w.task.label, tokens=0, correct=None)
            chunk = [w for w in chunk if w.key not in done_elsewhere]
            for w in chunk:
                progress.start(variant.label, w.task.label)
            for index, result in engine_results(engine, [w.prompt for w in chunk], params):
                w = chunk[index]
                if isinstance(result, BaseException):
                    failure = failure_record(w, result)
                    record_failure(conn, failure)
                    summary.failed.append(failure)
                    progress.fail(variant.label, w.task.label)
                    continue
                generation = generation_record(plan, w, count, result)
                score = score_work(w, result)
                if insert_generation(conn, generation, score):
                    summary.generated += 1
                else:
                    summary.raced += 1
                progress.add(variant.label, w.task.label, tokens=generation.completion_tokens,
                             correct=score.correct)


def run(spec_path: str | Path, out: str | Path | None = None, *, dry_run: bool = False,
        stream: TextIO | None = None, live: bool | None = None,
        shard: Shard | None = None) -> Summary:
    """Run a spec (see the module docstring); with `shard`, only its share of the work.
    Returns what happened; failures are in it."""
    from crbench.store import STORE_FILE, connect, stored_scores

    stream = stream or sys.stdout
    plan = build_plan(spec_path, out, shard)
    if dry_run:
        stored: dict[str, bool | None] = {}
        if (plan.run_dir / STORE_FILE).is_file():  # a dry run creates nothing
            conn = connect(plan.run_dir, readonly=True)
            stored = stored_scores(conn, [w.key for w in plan.work])
            conn.close()
        print_plan(plan, stored, stream)
        return Summary(plan.run_dir, planned=len(plan.work), stored_before=len(stored),
                       shard=shard)
    check_local_models(plan)  # a bad model folder is refused before the store is touched
    conn = connect(plan.run_dir)
    try:
        stored = stored_scores(conn, [w.key for w in plan.work])
        summary = Summary(plan.run_dir, planned=len(plan.work), stored_before=len(stored),
                          shard=shard)
        record_plan(conn, plan)
        with RunProgress(progress_cells(plan, stored), stream=stream, live=live) as progress:
            run_variants(plan, conn, stored, progress, summary)
        return summary
    finally:
        conn.close()


def record_plan(conn: Store, plan: Plan) -> None:
    """The plan (this shard's share), the spec and the shard, in the store."""
    from crbench.store import set_meta, set_plan

    set_plan(conn, [(w.key, w.variant.label, w.task.label, w.item.index, w.repeat)
                    for w in plan.work])
    set_meta(conn, "spec", plan.spec.model_dump(mode="json"))
    set_meta(conn, "spec_path", str(plan.spec_path))
    if plan.shard is not None:
        set_meta(conn, "shard", str(plan.shard))


def progress_cells(plan: Plan, stored: dict[str, bool | None]) -> list[CellProgress]:
    cells = []
    for (variant, task), works in plan.cells().items():
        scores = [stored[w.key] for w in works if w.key in stored]
        known = [c for c in scores if c is not None]
        cells.append(CellProgress(variant, task, total=len(works), done=len(scores),
                                  scored=len(known), correct=sum(known)))
    return cells


def run_variants(plan: Plan, conn: Store, stored: dict[str, bool | None],
                 progress: RunProgress, summary: Summary) -> None:
    """Per variant with work left (or no description yet, or a perplexity to measure):
    prepare it, describe it in the store, generate what is not stored."""
    from crbench.store import iter_table, put_variant

    described = {str(r["variant"]): r for r in iter_table(conn, "variants")}
    for variant in plan.variants:
        pending = [w for w in plan.work if w.variant is variant and w.key not in stored]
        old = described.get(variant.label)
        wants_ppl = plan.spec.ppl is not None and (old is None or old["ppl"] is None)
        if not pending and old is not None and not wants_ppl:
            continue
        started = time.monotonic()
        prepared = prepare_variant(plan, variant)
        record = prepared.record
        if variant.method is not None:
            summary.compressed.append(f"{variant.label} ({time.monotonic() - started:.0f} s)")
        same_model = old is not None and old["model_path"] == record.model_path
        if plan.spec.ppl is not None and not (same_model and old and old["ppl"] is not None):
            device = variant.model.options.get("device")
            ppl = measure_ppl(plan, prepared.model_path, device)
            record = dataclasses.replace(record, ppl=ppl)
        put_variant(conn, record)
        if not pending:
            continue
        engine = make_variant_engine(plan, variant, prepared.model_path)
        try:
            generate_variant(plan, conn, variant, engine, pending, progress, summary)
        finally:
            engine.close()


# --- the dry run ----------------------------------------------------------------------------


def print_plan(plan: Plan, stored: dict[str, bool | None], stream: TextIO) -> None:
    """The dry run: counts per cell, what is stored, which variant models are built already
    (truthfully: the method's own cache is asked); no generation."""
    share = f" (shard {plan.shard}: its share only)" if plan.shard else ""
    print(f"spec: {plan.spec_path}\nrun dir: {plan.run_dir}{share}", file=stream)
    width = max([24, *(len(label) for label in (v.label for v in plan.variants))])
    print(f"{'variant':<{width}} {'task':<24} {'total':>7} {'stored':>7} {'to run':>7}",
          file=stream)
    for (variant, task), works in plan.cells().items():
        done = sum(w.key in stored for w in works)
        print(f"{variant:<{width}} {task:<24} {len(works):>7} {done:>7} {len(works) - done:>7}",
              file=stream)
    todo = sum(w.key not in stored for w in plan.work)
    print(f"total: {len(plan.work)} generations, {len(plan.work) - todo} stored, {todo} to run",
          file=stream)
    for made in plan.variants:
        if made.recipe is None:
            continue
        needed = any(w.variant is made and w.key not in stored for w in plan.work)
        state = build_state(made) if needed else "not needed (all stored)"
        print(f"{made.method_name} {made.label}: {canonical_json(made.recipe)}: {state}",
              file=stream)
