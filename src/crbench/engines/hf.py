"""The `hf` engine: a transformers causal LM in this process, on CPU or GPU.

Throughput comes from our own decode loop over the model's forward rather than `generate`:

- continuous batching: a finished sequence leaves the batch and a waiting prompt takes its
  place, so no step is spent computing past EOS and the batch stays full;
- the key/value cache is preallocated per batch and written in place (`BatchKV`), instead of
  concatenated every step, and attention sees only the columns some row still uses;
- prompts are taken longest first, so prompts prefilled together have similar lengths;
- only the last position's logits are computed (the fed positions', when speculating);
- speculative greedy decoding with drafts looked up in the row's own text (`prompt_lookup`):
  a row is fed its last token plus up to `speculate` guessed tokens and keeps the guesses the
  model agrees with, so a forward yields several tokens per row and carries more rows per
  weight read (`step_tokens` caps the tokens fed per step, so a full batch drafts less);
- bf16 on a CPU: linear weights packed once for oneDNN (`hf_packed`) where measured faster.

Greedy decoding returns the same tokens as `model.generate(do_sample=False)` in fp32, with or
without speculation (tested; in bf16, batching's roundings can flip near-ties: each token is
greedy up to them). Sampling
draws from one random generator per prompt, seeded from the run's seed and the prompt text, so
a prompt's sample does not depend on which other prompts share its batch (up to the tiny
numerical differences batching makes).

Models whose attention is not plain full attention (sliding windows, hybrid caches) or that use
another attention kernel than sdpa/eager fall back to batched `model.generate`.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Iterator
from itertools import accumulate, pairwise
from typing import Any

from crbench.engines.base import Generation, Prompt, SamplingParams
from crbench.engines.budget import ThinkingControl, forcing_tokens
from crbench.engines.hf_attention import PACKED, use_packed_attention
from crbench.engines.hf_cache import BatchKV, Row
from crbench.engines.hf_packed import pack_linears, should_pack
from crbench.engines.hf_sampling import sample, sampler
from crbench.engines.prompt_lookup import NgramDraft
from crbench.engines.prompts import encode_prompt


class HFEngine:
    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 64,
        device: str | None = None,
        dtype: str | None = "auto",
        trust_remote_code: bool = False,
        prefill_tokens: int = 1024,
        loop: str = "auto",
        speculate: int = 8,
        step_tokens: int = 128,
        packed: bool | None = None,
    ):
        """`batch_size`: rows decoded together; `prefill_tokens`: most prompt tokens (padding
        included) in one prefill forward (on CPU, ~1k-token chunks keep activations in cache
        and ran 20-25% faster than 8k); `loop`: "auto" (ours where the model allows it),
        "own", or "generate" (transformers' `generate`, static batches); `dtype`: "auto"
        (crbench.dtype: bf16 where this CPU runs it faster, bf16/fp16 on GPUs), bf16, fp16, fp32;
        `speculate`: most draft tokens per row and step in greedy decoding (0: none);
        `step_tokens`: most tokens fed per decode step over the batch (drafts shrink to fit);
        `packed`: linear weights packed once for oneDNN (`hf_packed`; None: for bf16 on a CPU
        where the dtype probe measured it faster)."""
        from crbench.dtype import canonical, resolve_dtype, shape_of_folder
        from crbench.models import default_device, load_causal_lm, resolve_model

        if loop not in ("auto", "own", "generate"):
            raise ValueError(f"loop must be auto, own or generate, not {loop!r}")
        device = device or default_device()
        chosen = canonical(dtype)  # a bad name fails before the model loads
        if chosen == "auto":
            chosen = canonical(resolve_dtype("auto", device, shape_of_folder(resolve_model(model))))
        self.model, self.tokenizer = load_causal_lm(
            model, device=device, dtype=chosen, trust_remote_code=trust_remote_code
        )
        # transformers 5.x names the cache argument `cache` (`past_key_values` is deprecated)
        forward = inspect.signature(self.model.forward).parameters
        self.cache_argument = "cache" if "cache" in forward else "past_key_values"
        self.batch_size = batch_size
        self.prefill_tokens = prefill_tokens
        if speculate < 0 or step_tokens < 1:
            raise ValueError("speculate must be >= 0 and step_tokens >= 1")
        self.speculate, self.step_tokens = speculate, step_tokens
        self.device = self.model.device
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        self._forcing: tuple[SamplingParams, Any] | None = None
        self.use_own_loop = loop == "own" or (loop == "auto" and own_loop_supported(self.model))
        if self.use_own_loop:
            use_packed_attention(self.model)
        self.packed_linears = 0  # our loop only: `generate` may want the weights themselves
        if self.use_own_loop and should_pack(self.model, packed):
            self.packed_linears = pack_linears(self.model, rows_hint=step_tokens)

    def encode(self, prompt: Prompt) -> list[int]:
        return encode_prompt(self.tokenizer, prompt)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        self.model = None

    def generate(
        self, prompts: list[Prompt], params: SamplingParams
    ) -> Iterator[tuple[int, Generation]]:
        import torch

        encoded = [self.encode(p) for p in prompts]
        if params.forces_thinking and not self.use_own_loop:
            raise ValueError("budget forcing (thinking_budget, min_thinking) needs the hf "
                             "engine's own decode loop, which this model does not support")
        with torch.inference_mode():
            if self.use_own_loop:
                yield from self._continuous(encoded, params)
            else:
                yield from self._static_batches(encoded, params)

    # --- our decode loop ----------------------------------------------------------------------

    def _continuous(
        self, encoded: list[list[int]], params: SamplingParams
    ) -> Iterator[tuple[int, Generation]]:
        queue = deque(sorted(range(len(encoded)), key=lambda i: -len(encoded[i])))
        batch = BatchKV(slots=min(self.batch_size, len(encoded)))
        while queue or batch.rows:
            if queue and batch.free_slots():
                taken = [queue.popleft() for _ in range(min(batch.free_slots(), len(queue)))]
                groups = self._prefill(taken, encoded, params)
                for group in groups:
                    for row in group.rows:
                        if row.finish is not None:
                            yield row.index, self._to_generation(row)
            else:
                groups = []
            if groups or batch.has_finished_rows():
                started = time.perf_counter()
                batch.admit(groups, params.max_new_tokens)
                share_cost(batch.rows, time.perf_counter() - started)
                if not batch.rows:
                    continue
            started = time.perf_counter()
            self._decode_step(batch, params)
            share_cost([row for row in batch.rows if row.finish is None] or batch.rows,
                       time.perf_counter() - started)
            for row in batch.rows:
                if row.finish is not None and not row.reported:
                    yield row.index, self._to_generation(row)

    def _prefill(
        self, indices: list[int], encoded: list[list[int]], params: SamplingParams
    ) -> list[BatchKV]:
        """Run the prompts through the model in groups of at most `prefill_tokens` (padded)
        tokens; each group gets its own cache and its first sampled token."""
        import torch

        groups: list[list[int]] = []
        group: list[int] = []
        for i in indices:  # longest first, so the first prompt of a group sets its width
            width = len(encoded[group[0]]) if group else len(encoded[i])
            if group and (len(group) + 1) * width > self.prefill_tokens:
                groups.append(group)
                group = []
            group.append(i)
        if group:
            groups.append(group)

        out = []
        for group in groups:
            started = time.perf_counter()
            lengths = torch.tensor([len(encoded[i]) for i in group], device=self.device)
            width = int(lengths.max())
            ids = torch.full((len(group), width), self.tokenizer.pad_token_id, dtype=torch.long)
            for r, i in enumerate(group):
                ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
            columns = torch.arange(width, device=self.device)
            first = (width - lengths)[:, None]  # first real column of each row
            positions = (columns[None, :] - first).clamp(min=0)
            # causal and not padding; a padding query sees itself only, to keep NaN out
            allowed = (columns[None, None, :] <= columns[None, :, None]) & (
                columns[None, None, :] >= first[:, :, None]
            ) | torch.eye(width, dtype=torch.bool, device=self.device)
            rows = [self._new_row(i, encoded[i], params) for i in group]
            kv = BatchKV(slots=len(rows), rows=rows, capacity=width)
            logits = self.model(
                input_ids=ids.to(self.device), attention_mask=allowed[:, None],
                position_ids=positions, use_cache=True, logits_to_keep=1,
                **{self.cache_argument: kv},
            ).logits[:, -1]
            kv.ends = [width] * len(rows)
            self._take_tokens(rows, self._choose(rows, logits, [1] * len(rows), params),
                              params, [[] for _ in rows])
            share_cost(rows, time.perf_counter() - started)
            out.append(kv)
        return out

    def _decode_step(self, kv: BatchKV, params: SamplingParams) -> None:
        """One forward of every row: its last token, then its draft tokens (if any), all rows'
        tokens packed into one sequence without padding (`hf_attention.PackedStep`)."""
        import torch

        rows = kv.rows
        drafts = self._drafts(rows, params)
        counts = [1 + len(draft) for draft in drafts]
        packed = kv.begin_step(counts, params.max_new_tokens)
        ids = torch.tensor([[token for row, draft in zip(rows, drafts, strict=True)
                             for token in (row.tokens[-1], *draft)]], device=self.device)
        cached = torch.tensor([row.cached for row in rows], device=self.device)
        ends = torch.tensor(kv.ends, device=self.device)
        fed = torch.arange(kv.width, device=self.device)
        columns = torch.arange(kv.start, kv.top + kv.width, device=self.device)
        # a row sees its own cached columns and the tokens fed before (and at) each position
        allowed = (columns[None, None, :] >= (ends - cached)[:, None, None]) & (
            columns[None, None, :] <= (ends[:, None] + fed)[:, :, None])
        logits = self.model(
            input_ids=ids, attention_mask=allowed[:, None],
            position_ids=(cached[packed.rows] + packed.offsets)[None], use_cache=True,
            logits_to_keep=ids.shape[1], **{self.cache_argument: kv, PACKED: packed},
        ).logits[0]
        kv.advance(self._take_tokens(rows, self._choose(rows, logits, counts, params),
                                     params, drafts))

    def _drafts(self, rows: list[Row], params: SamplingParams) -> list[list[int]]:
        """Each row's guess at its next tokens (greedy rows without budget forcing only), as
        many as fit in `step_tokens` over the batch."""
        most = min(self.speculate, self.step_tokens // len(rows) - 1)
        drafts: list[list[int]] = []
        for row in rows:
            room = params.max_new_tokens - len(row.tokens) - 1
            if row.draft is None or row.finish is not None or most <= 0 or room <= 0:
                drafts.append([])
                continue
            row.draft.extend(row.tokens[len(row.draft.context) - len(row.prompt_ids):])
            drafts.append(row.draft.propose(min(most, room)))
        return drafts

    def _new_row(self, index: int, prompt_ids: list[int], params: SamplingParams) -> Row:
        row = Row(index, prompt_ids, sampler(params, prompt_ids))
        if self.speculate and params.temperature <= 0 and not params.forces_thinking:
            row.draft = NgramDraft(prompt_ids)
        if params.forces_thinking:
            if self._forcing is None or self._forcing[0] != params:
                self._forcing = (params, forcing_tokens(self.tokenizer, params))
            row.control = ThinkingControl.start(
                params, self._forcing[1], self.eos_ids, self._decode_all,
                self._decode_all(prompt_ids))
            edit = row.control.at_start()
            if edit is not None:
                row.forced.extend(edit.insert)
        return row

    def _decode_all(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def _choose(self, rows: list[Row], logits: Any, counts: list[int],
                params: SamplingParams) -> list[list[int]]:
        """The model's choice at every fed position, per row, from `logits` [tokens, vocab]
        (row i's `counts[i]` positions in turn). Sampled rows are never drafted: one each."""
        if params.temperature > 0:
            return sample(logits, params, [row.generator for row in rows])[:, None].tolist()
        # argmax in fp32: exact (bf16 -> fp32 loses nothing, ties still go to the first index)
        # and 2x faster on the CPU than bf16's argmax (2.8 -> 1.3 ms at [32, 49152])
        flat = logits.float().argmax(dim=-1).tolist()
        firsts = [0, *accumulate(counts)]
        return [flat[first:end] for first, end in pairwise(firsts)]

    def _take_tokens(self, rows: list[Row], chosen: list[list[int]], params: SamplingParams,
                     drafts: list[list[int]]) -> list[int]:
        """Add each live row's chosen tokens and mark rows that are finished; returns how many
        fed tokens each row keeps (its last token and the draft tokens the model agreed with)."""
        kept = []
        for row, tokens, draft in zip(rows, chosen, drafts, strict=True):
            count = 1
            if row.finish is None:
                for position, token in enumerate(tokens):
                    self._append(row, token, params)
                    count = position + 1
                    if (row.finish is not None or position >= len(draft)
                            or token != draft[position]):
                        break
            kept.append(count)
        return kept

    def _append(self, row: Row, token: int, params: SamplingParams) -> None:
        """Add one chosen token to a row (or the token budget forcing feeds instead)."""
        ended = False
        if row.forced:  # budget forcing: a token it inserts, in place of the sampled one
            row.tokens.append(row.forced.popleft())
        else:
            row.tokens.append(token)
            edit = row.control.step(row.tokens) if row.control is not None else None
            if edit is not None:
                apply_edit(row, edit.drop, edit.insert)
            ended = edit is None and token in self.eos_ids
        if ended:
            row.finish = "stop"
        elif len(row.tokens) >= params.max_new_tokens:
            row.finish = "length"

    def _to_generation(self, row: Row) -> Generation:
        row.reported = True
        return Generation(
            text=self.tokenizer.decode(row.tokens, skip_special_tokens=True),
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=len(row.tokens),
            finish_reason=row.finish or "length",
            wall_s=row.cost_s,
            token_ids=row.tokens,
            extra={"latency_s": time.perf_counter() - row.started,
                   **({"thinking": row.control.record()} if row.control is not None else {})},
        )

    # --- transformers' generate, for models our loop does not cover -------------------------

    def _static_batches(
        self, encoded: list[list[int]], params: SamplingParams
    ) -> Iterator[tuple[int, Generation]]:
        import torch

        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[r, width - len(encoded[i]):] = 1
            sampling: dict[str, Any] = {"do_sample": False}
            if params.temperature > 0:
                torch.manual_seed(params.seed)  # per batch: depends on the batch's make-up
                sampling = {"do_sample": True, "temperature": params.temperature,
                            "top_p": params.top_p, "top_k": 0}
            started = time.perf_counter()
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                max_new_tokens=params.max_new_tokens, eos_token_id=self.eos_ids,
                pad_token_id=pad, **sampling,
            )
            cost = (time.perf_counter() - started) / len(batch)
            for r, i in enumerate(batch):
                row = Row(i, encoded[i], None, cost_s=cost)
                for token in out[r, width:].tolist():
                    row.tokens.append(token)
                    if token in self.eos_ids:
                        row.finish = "stop"
                        break
                yield i, self._to_generation(row)


def apply_edit(row: Row, drop: int, insert: list[int]) -> None:
    """Budget forcing's edit of a row whose last token was just sampled (not yet fed): the last
    `drop` tokens go (all but that one are cached: `rewind` columns), `insert` is fed next."""
    row.forced.extend(insert)
    if drop:
        del row.tokens[-drop:]
        row.rewind += drop - 1
        row.tokens.append(row.forced.popleft())  # the new last token, fed at the next step


def share_cost(rows: list[Row], seconds: float) -> None:
    """Split compute time over the rows it served, so their wall_s add up to the engine's time."""
    for row in rows:
        row.cost_s += seconds / max(1, len(rows))


def own_loop_supported(model: Any) -> bool:
    """Our loop passes a 4D mask and its own cache: fine for plain full-attention models."""
    config = model.config
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    sliding = getattr(config, "sliding_window", None) and getattr(
        config, "use_sliding_window", True
    )
    return (
        layer_types == {"full_attention"}
        and not sliding
        and config._attn_implementation in ("sdpa", "eager")
    )


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a generation: the tokenizer's EOS and generation_config's."""
    ids: set[int] = set()
    config_eos = getattr(model.generation_config, "eos_token_id", None)
    for value in (tokenizer.eos_token_id, config_eos):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    return sorted(ids)
