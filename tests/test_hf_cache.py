"""The hf engine's cache moves its used columns in place when the buffers have room, and
allocates (lazily zeroed) buffers when they do not; each row's keys and values survive both."""

from __future__ import annotations

import pytest
import torch

from crbench.engines.hf_cache import BatchKV, Row, lazy_zeros


def filled_cache(capacity: int, ends: tuple[int, int] | None = None) -> BatchKV:
    rows = [Row(0, [1, 2, 3], None, tokens=[4, 5]), Row(1, [1], None, tokens=[6, 7, 8, 9])]
    kv = BatchKV(slots=2, rows=rows, capacity=capacity)
    kv.keys = [torch.arange(2 * capacity, dtype=torch.float32).reshape(2, 1, capacity, 1)]
    kv.values = [-kv.keys[0].clone()]
    kv.ends = list(ends or (capacity - 2, capacity - 4))  # rows hold 4 columns each
    return kv


def row_columns(kv: BatchKV) -> list[list[float]]:
    return [kv.keys[0][slot, 0, end - row.cached:end, 0].tolist()
            for slot, (end, row) in enumerate(zip(kv.ends, kv.rows, strict=True))]


@pytest.mark.parametrize("ends", [(38, 36), (9, 7)])  # apart from, then overlapping, [0, 6)
def test_a_move_in_place_keeps_every_rows_columns(ends):
    kv = filled_cache(capacity=40, ends=ends)
    before, buffer = row_columns(kv), kv.keys[0]
    kv.start = min(end - row.cached for end, row in zip(kv.ends, kv.rows, strict=True))
    kv._relayout(kv.top - kv.start, 2, max_new_tokens=6, like=kv)
    assert kv.keys[0] is buffer and kv.capacity == 40  # moved, not reallocated
    assert row_columns(kv) == before
    assert kv.top == 6 and kv.start == 0
    assert (kv.values[0] == -kv.keys[0]).all()


def test_a_growth_allocates_and_keeps_every_rows_columns():
    kv = filled_cache(capacity=12)
    before = row_columns(kv)
    kv.start = min(end - row.cached for end, row in zip(kv.ends, kv.rows, strict=True))
    kv._relayout(kv.top - kv.start, 2, max_new_tokens=30, like=kv)
    assert kv.capacity > 30 and kv.keys[0].shape[2] == kv.capacity
    assert row_columns(kv) == before
    assert kv.keys[0][:, :, kv.top:].abs().sum() == 0  # the room beyond is zeros


def test_lazy_zeros_are_zeros_of_the_dtype():
    for dtype in (torch.float32, torch.bfloat16):
        zeros = lazy_zeros((3, 2, 5, 4), torch.ones(1, dtype=dtype))
        assert zeros.dtype == dtype and zeros.shape == (3, 2, 5, 4)
        assert zeros.abs().sum() == 0
        zeros[1, 1, 2] = 7  # writable, and only there
        assert zeros.sum() == 28


def test_a_packed_step_writes_each_token_of_each_head_at_its_rows_next_columns():
    rows = [Row(0, [1, 2, 3], None, tokens=[4, 5]), Row(1, [1], None, tokens=[6, 7, 8])]
    kv = BatchKV(slots=3, rows=rows, capacity=16)  # a spare slot stays untouched
    kv.keys = [torch.zeros(3, 3, 16, 2)]
    kv.values = [torch.zeros(3, 3, 16, 2)]
    kv.ends = [6, 4]
    kv.begin_step([2, 1], max_new_tokens=8)  # row 0: last token and a draft; row 1: last
    key = torch.arange(1, 19, dtype=torch.float32).reshape(1, 3, 3, 2)  # [1, heads, tokens, d]
    keys, values = kv.update(key, -key, layer_idx=0)
    for head in range(3):
        assert kv.keys[0][0, head, 6:8].tolist() == key[0, head, :2].tolist()
        assert kv.keys[0][1, head, 4].tolist() == key[0, head, 2].tolist()
    assert kv.keys[0].abs().sum() == key.abs().sum()  # nothing written anywhere else
    assert (kv.values[0] == -kv.keys[0]).all()
    assert keys.shape == (2, 3, kv.top + 2 - kv.start, 2)  # the columns attention reads
