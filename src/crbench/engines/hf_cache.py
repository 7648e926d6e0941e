"""The key/value cache of the hf engine's decode loop, and the rows it holds.

`BatchKV` implements what transformers' attention layers call on a cache (`update`,
`get_seq_length`); the engine passes it as the model's cache (`cache=` in transformers >= 5.x,
`past_key_values=` before).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from crbench.engines.budget import ThinkingControl
from crbench.engines.hf_attention import PackedStep
from crbench.engines.prompt_lookup import NgramDraft


@dataclass
class Row:
    """One prompt being generated."""

    index: int  # into the caller's prompt list
    prompt_ids: list[int]
    generator: Any  # torch.Generator for sampling, None for greedy
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None  # "stop" / "length" once finished
    reported: bool = False
    cost_s: float = 0.0  # this row's share of the engine's compute time
    started: float = field(default_factory=time.perf_counter)
    control: ThinkingControl | None = None  # budget forcing, when asked for
    forced: deque[int] = field(default_factory=deque)  # tokens to feed instead of sampling
    rewind: int = 0  # cached columns to drop before the next step (an edit took tokens out)
    draft: NgramDraft | None = None  # speculative decoding's lookup (greedy rows only)

    @property
    def cached(self) -> int:
        """Tokens in the cache: all but the last, which is fed at the next step."""
        return len(self.prompt_ids) + len(self.tokens) - 1


class BatchKV:
    """The key/value cache of a batch of rows: preallocated and written in place.

    Per layer a buffer [slots, kv_heads, capacity, head_dim]. Row i of `rows` lives in slot i;
    its cached tokens are the `row.cached` columns before `ends[i]`. A decode step feeds row i
    `counts[i]` tokens (its last token, then its draft), packed into one sequence with the other
    rows' (`PackedStep`), written at columns ends[i] .. ends[i] + counts[i] - 1; afterwards each
    row's end moves on by the tokens it kept (`advance`): rejected draft columns are simply
    written over at the next step. Attention reads columns [start, top + width), where `start`
    is the first column a row uses, `top` the last end and `width` the most tokens a row was
    fed; the mask keeps each row to its own columns.

    A finished row's slot is given to a new prompt (`admit`), or, when none is waiting, to the
    last row, so the batch shrinks; only the rows that move are copied.
    """

    def __init__(self, slots: int, rows: list[Row] | None = None, capacity: int = 0):
        self.slots = slots
        self.rows = rows if rows is not None else []
        self.ends = [0] * len(self.rows)
        self.capacity = capacity
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.start = 0
        self.width = 1  # the most tokens fed to a row at this step
        self.packed: PackedStep | None = None  # this decode step's rows; None in a prefill
        # [kv_heads x tokens] where each head's key/value of each packed token goes in a
        # buffer seen as [slots x kv_heads x capacity, head_dim]: the same for every layer
        self._targets: Any = None

    @property
    def top(self) -> int:
        return max(self.ends, default=0)

    def update(self, key: Any, value: Any, layer_idx: int, *args: Any, **kwargs: Any
               ) -> tuple[Any, Any]:
        import torch

        if layer_idx == len(self.keys):  # first forward of a prefill: allocate the buffers
            shape = (self.slots, key.shape[1], self.capacity, key.shape[3])
            self.keys.append(torch.zeros(shape, dtype=key.dtype, device=key.device))
            self.values.append(torch.zeros(shape, dtype=value.dtype, device=value.device))
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.packed is None:  # a prefill: every row ends at the same column, one slice
            n, fed = key.shape[0], key.shape[2]
            end = self.ends[0] if self.ends else 0
            keys[:n, :, end:end + fed] = key
            values[:n, :, end:end + fed] = value
            used = slice(self.start, self.top + fed)
        else:  # [1, kv_heads, tokens, d]: token t goes to its row's slot at its column
            n, dim = len(self.rows), keys.shape[3]
            # index_put_, not index_copy_: 169-221 against 280-303 ms of a 30-step profile of
            # the reasoning workload (bf16; the writes land in cold cache lines either way)
            keys.view(-1, dim).index_put_((self._targets,), key[0].reshape(-1, dim))
            values.view(-1, dim).index_put_((self._targets,), value[0].reshape(-1, dim))
            used = slice(self.start, self.top + self.width)
        return keys[:n, :, used], values[:n, :, used]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.top

    def free_slots(self) -> int:
        return self.slots - sum(row.finish is None for row in self.rows)

    def has_finished_rows(self) -> bool:
        return any(row.finish is not None for row in self.rows)

    def begin_step(self, counts: list[int], max_new_tokens: int) -> PackedStep:
        """Before a forward feeding row i `counts[i]` tokens: room to write them, where."""
        import torch

        width = max(counts)
        if not self.keys or self.top + width > self.capacity:
            self._relayout(self.top - self.start, width, max_new_tokens, self)
        self.width = width
        self.start = min(end - row.cached for end, row in zip(self.ends, self.rows, strict=True))
        rows = [r for r, count in enumerate(counts) for _ in range(count)]
        offsets = [j for count in counts for j in range(count)]
        firsts = [0, *accumulate(counts)][:-1]  # each row's first token
        gather = [[first + min(j, count - 1) for j in range(width)]
                  for first, count in zip(firsts, counts, strict=True)]
        device = self.keys[0].device
        row_of = torch.tensor(rows, device=device)
        offset_of = torch.tensor(offsets, device=device)
        self.packed = PackedStep(row_of, offset_of,
                                 torch.tensor(gather, device=device).reshape(-1), width,
                                 row_of * width + offset_of)
        columns = torch.tensor([self.ends[r] + j for r, j in zip(rows, offsets, strict=True)],
                               device=device)
        _, kv_heads, capacity, _ = self.keys[0].shape
        heads = torch.arange(kv_heads, device=device)[:, None]
        self._targets = ((self.packed.rows[None] * kv_heads + heads) * capacity
                         + columns[None]).reshape(-1)
        return self.packed

    def advance(self, kept: list[int]) -> None:
        """After a forward: row i keeps `kept[i]` of the tokens it was fed, less the columns
        budget forcing took back."""
        for slot, row in enumerate(self.rows):
            self.ends[slot] += kept[slot] - row.rewind
            row.rewind = 0
        self.packed = None

    def admit(self, groups: list[BatchKV], max_new_tokens: int) -> None:
        """Give the slots of finished rows to the unfinished rows of freshly prefilled
        `groups` (then new slots); slots still free take the last rows, so the batch stays
        packed. Only the rows that arrive or move are copied."""
        import torch

        rows, ends = self.rows, self.ends
        incoming = [(g, r) for g in groups for r, row in enumerate(g.rows) if row.finish is None]
        arrivals = []  # (group, row in group, slot)
        holes = [s for s, row in enumerate(rows) if row.finish is not None]
        for slot in holes[: len(incoming)]:
            group, r = incoming.pop(0)
            rows[slot] = group.rows[r]
            arrivals.append((group, r, slot))
        for group, r in incoming:
            arrivals.append((group, r, len(rows)))
            rows.append(group.rows[r])
            ends.append(0)
        moves = []  # (from slot, to slot)
        for hole in holes[len(arrivals):]:
            while rows and rows[-1].finish is not None:
                rows.pop()
                ends.pop()
            if hole < len(rows):
                moves.append((len(rows) - 1, hole))
                rows[hole] = rows.pop()
                ends[hole] = ends.pop()
        if not rows:
            self.ends, self.start = [], 0
            return
        staying = [s for s in range(len(rows)) if s not in {slot for _, _, slot in arrivals}]
        # arrivals end where the longest staying row ends, so their prompts need that many
        # columns on the left
        old_top = max((ends[s] for s in staying), default=0)
        old_start = min((ends[s] - rows[s].cached for s in staying), default=old_top)
        widest = max((g.ends[0] for g in groups), default=0)
        if (not self.keys or old_top < widest
                or old_top + 1 > self.capacity):
            like = groups[0] if groups else self
            self.ends = [e if s in staying else old_top for s, e in enumerate(ends)]
            self.start = old_start
            self._relayout(max(old_top - old_start, widest), 1, max_new_tokens, like,
                           copy=bool(staying) and bool(self.keys))
            ends = self.ends
        top = max((ends[s] for s in staying), default=widest)
        for source, target in moves:
            low = ends[target] - rows[target].cached
            for buffer in self.keys + self.values:
                buffer[target, :, low:ends[target]] = buffer[source, :, low:ends[target]]
        for group in groups:
            mine = [(r, slot) for g, r, slot in arrivals if g is group]
            if not mine:
                continue
            rows_from = torch.tensor([r for r, _ in mine], device=group.keys[0].device)
            slots_to = torch.tensor([slot for _, slot in mine], device=group.keys[0].device)
            span = group.ends[0]
            for buffer, new in zip(self.keys + self.values, group.keys + group.values,
                                   strict=True):
                buffer[slots_to, :, top - span:top] = new.index_select(0, rows_from)[:, :, :span]
            for _, slot in mine:
                ends[slot] = top
        self.start = min(end - row.cached for end, row in zip(ends, rows, strict=True))

    def _relayout(self, used: int, width: int, max_new_tokens: int, like: BatchKV,
                  copy: bool = True) -> None:
        """Move the columns [start, top) to end at column `used` (>= top - start), with room
        for the longest remaining generation and a step of `width`: in place when the buffers
        are big enough, else in new buffers with room for a whole generation more.

        Rows arrive at the top and old rows leave at the start, so the used columns drift right
        and are moved back now and then. New zeroed buffers for a batch of 32 reasoning rows
        are gigabytes (5.6 s a time on a 2-core CPU, twice per run of the generation
        benchmark); moving in place costs a copy of the used columns only."""
        remaining = max((max_new_tokens - len(row.tokens) for row in self.rows), default=1)
        top = self.top
        keep = top - self.start if (copy and self.keys) else 0
        needed = used + max(remaining, 1) + width + 16
        if self.keys and needed <= self.capacity:
            if keep and used - keep != self.start:
                for buffer in self.keys + self.values:
                    old = buffer[:, :, self.start:top]
                    overlap = abs(used - keep - self.start) < keep
                    buffer[:, :, used - keep:used] = old.clone() if overlap else old
        else:
            capacity = needed + max_new_tokens  # room to drift: moves before regrowths
            for name in ("keys", "values"):
                fresh = []
                for layer, template in enumerate(getattr(like, name)):
                    shape = (self.slots, template.shape[1], capacity, template.shape[3])
                    buffer = lazy_zeros(shape, template)  # masked columns must be finite
                    if keep:
                        buffer[:, :, used - keep:used] = getattr(self, name)[layer][
                            :, :, self.start:top]
                    fresh.append(buffer)
                setattr(self, name, fresh)
            self.capacity = capacity
        shift = used - top
        self.ends = [end + shift for end in self.ends]
        self.start += shift


def lazy_zeros(shape: tuple[int, ...], like: Any) -> Any:
    """Zeros of `like`'s dtype and device. On the CPU from calloc'ed memory (numpy's zeros),
    whose pages the OS maps when first touched: a cache buffer is gigabytes, mostly columns
    no row has reached yet, and zero-filling fresh memory ran at ~0.4 GB/s in our VM (5 s for
    the reasoning benchmark's 2 GB) where touching it as rows grow costs nothing up front."""
    import numpy as np
    import torch

    if like.device.type != "cpu":
        return like.new_zeros(shape)
    raw = torch.from_numpy(np.zeros(math.prod(shape) * like.element_size(), dtype=np.uint8))
    return raw.view(like.dtype).view(shape)
