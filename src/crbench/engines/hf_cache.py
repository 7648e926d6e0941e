"""The key/value cache of the hf engine's decode loop, and the rows it holds.

`BatchKV` implements what transformers' attention layers call on a cache (`update`,
`get_seq_length`); the engine passes it as the model's cache (`cache=` in transformers >= 5.x,
`past_key_values=` before).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from crbench.engines.budget import ThinkingControl


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


class BatchKV:
    """The key/value cache of a batch of rows: preallocated, written in place, left-padded.

    Per layer a buffer [slots, kv_heads, capacity, head_dim]. Row i of `rows` lives in slot i.
    All rows advance one column per step, so a row's cached tokens are the last
    (prompt + generated - 1) columns before `width`; attention reads columns [start, width),
    where `start` leaves out the columns no row uses any more. The model's attention layers
    call `update`, which writes the new keys and values in place; the caller advances `width`
    after each forward.

    A finished row's slot is given to a new prompt (`admit`), or, when none is waiting, to the
    last row, so the batch shrinks; only the rows that move are copied.
    """

    def __init__(self, slots: int, rows: list[Row] | None = None, capacity: int = 0):
        self.slots = slots
        self.rows = rows if rows is not None else []
        self.capacity = capacity
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.start = 0
        self.width = 0

    def update(self, key: Any, value: Any, layer_idx: int, *args: Any, **kwargs: Any
               ) -> tuple[Any, Any]:
        import torch

        if layer_idx == len(self.keys):  # first forward of a prefill: allocate the buffers
            shape = (self.slots, key.shape[1], self.capacity, key.shape[3])
            self.keys.append(torch.zeros(shape, dtype=key.dtype, device=key.device))
            self.values.append(torch.zeros(shape, dtype=value.dtype, device=value.device))
        n, end = key.shape[0], self.width + key.shape[2]
        self.keys[layer_idx][:n, :, self.width:end] = key
        self.values[layer_idx][:n, :, self.width:end] = value
        used = slice(self.start, end)
        return self.keys[layer_idx][:n, :, used], self.values[layer_idx][:n, :, used]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width

    def free_slots(self) -> int:
        return self.slots - sum(row.finish is None for row in self.rows)

    def has_finished_rows(self) -> bool:
        return any(row.finish is not None for row in self.rows)

    def admit(self, groups: list[BatchKV], max_new_tokens: int) -> None:
        """Give the slots of finished rows to the unfinished rows of freshly prefilled
        `groups` (then new slots); slots still free take the last rows, so the batch stays
        packed. Only the rows that arrive or move are copied."""
        import torch

        rows = self.rows
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
        moves = []  # (from slot, to slot)
        for hole in holes[len(arrivals):]:
            while rows and rows[-1].finish is not None:
                rows.pop()
            if hole < len(rows):
                moves.append((len(rows) - 1, hole))
                rows[hole] = rows.pop()
        if not rows:
            self.start = self.width = 0
            return
        self.make_room(max_new_tokens, like=groups[0] if groups else self)
        for source, target in moves:
            for buffer in self.keys + self.values:
                buffer[target, :, self.start:self.width] = buffer[source, :, self.start:self.width]
        for group in groups:
            mine = [(r, slot) for g, r, slot in arrivals if g is group]
            if not mine:
                continue
            rows_from = torch.tensor([r for r, _ in mine], device=group.keys[0].device)
            slots_to = torch.tensor([slot for _, slot in mine], device=group.keys[0].device)
            columns = slice(self.width - group.width, self.width)
            for buffer, new in zip(self.keys + self.values, group.keys + group.values,
                                   strict=True):
                buffer[slots_to, :, columns] = new.index_select(0, rows_from)[:, :, :group.width]

    def make_room(self, max_new_tokens: int, like: BatchKV | None = None) -> None:
        """Before a step: attention starts at the first column a row uses, and there is a
        free column to write (new buffers, with room for the longest remaining generation,
        when there is not)."""
        cached = max(len(row.prompt_ids) + len(row.tokens) - 1 for row in self.rows)
        if not self.keys or self.width < cached or self.width >= self.capacity:
            remaining = max(max_new_tokens - len(row.tokens) for row in self.rows)
            self._relayout(cached, cached + max(remaining, 1), like or self)
        self.start = self.width - cached

    def _relayout(self, width: int, capacity: int, like: BatchKV) -> None:
        """New buffers of `capacity` columns in which `width` is the next column to write;
        the last columns of every slot are copied over."""
        keep = min(width, self.width) if self.keys else 0
        for name in ("keys", "values"):
            fresh = []
            for layer, template in enumerate(getattr(like, name)):
                shape = (self.slots, template.shape[1], capacity, template.shape[3])
                buffer = template.new_zeros(shape)
                if keep:
                    old = getattr(self, name)[layer]
                    buffer[:, :, width - keep:width] = old[:, :, self.width - keep:self.width]
                fresh.append(buffer)
            setattr(self, name, fresh)
        self.capacity, self.width = capacity, width

    def drop_rewound_columns(self) -> None:
        """Rows whose last tokens were taken out (budget forcing) drop their newest cached
        columns: the rest of the row moves right, so its cache again ends at `width`."""
        for slot, row in enumerate(self.rows):
            if not row.rewind:
                continue
            cached = len(row.prompt_ids) + len(row.tokens) - 1
            old = cached + row.rewind
            for buffer in self.keys + self.values:
                kept = buffer[slot, :, self.width - old:self.width - row.rewind].clone()
                buffer[slot, :, self.width - cached:self.width] = kept
            row.rewind = 0
