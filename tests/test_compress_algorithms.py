"""GPTQ, SparseGPT and the inverse-Hessian factor against plain references written here.

The library's versions are reordered for speed (one factorisation instead of three, lazy block
and sub-block updates, per-group grids precomputed); these tests hold them to the textbook
forms: the three-factorisation chol(H^-1) and the column-by-column loop that pushes every
column's error onto all later columns at once. Synthetic data (random correlated inputs), so
no model is needed.
"""

from __future__ import annotations

import pytest
import torch

from crbench.compress.gptq import gptq
from crbench.compress.hessian import (
    MAX_DAMP,
    HessianAccumulator,
    all_finite,
    inverse_cholesky,
    lower_triangular_inverse,
)
from crbench.compress.quant import fit_grid
from crbench.compress.sparsegpt import n_m_mask, sparsegpt, unstructured_mask
from crbench.errors import InputError


def layer_hessian(columns: int, seed: int = 0, tokens: int = 4096) -> torch.Tensor:
    """H = X^T X / n from inputs with correlated columns of very different sizes."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(columns, columns, generator=gen) / columns**0.5
    mix *= torch.logspace(0, -2, columns).unsqueeze(1)
    mix += 0.05 * torch.eye(columns)
    x = torch.randn(tokens, columns, generator=gen) @ mix
    return x.T @ x / tokens


def weights(rows: int, columns: int, seed: int = 1) -> torch.Tensor:
    return 0.02 * torch.randn(rows, columns, generator=torch.Generator().manual_seed(seed))


def reference_inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """chol(H + lambda I) -> (H + lambda I)^-1 -> its upper Cholesky factor."""
    damped = h + damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)),
                                 upper=True)


def reference_gptq(w, h, *, bits, group_size, sym, act_order=False, static_groups=False,
                   damp=0.01):
    """Algorithm 1 of the GPTQ paper without lazy batching: after each column, its error is
    pushed onto every later column at once."""
    w, h = w.clone(), h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    columns = w.shape[1]
    static = ([fit_grid(w[:, g : g + group_size], bits, sym) for g in range(0, columns, group_size)]
              if group_size and static_groups else None)
    order = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(columns)
    w, h = w[:, order], h[order][:, order]
    upper = reference_inverse_cholesky(h, damp)
    q = torch.zeros_like(w)
    row_loss = torch.zeros(w.shape[0], dtype=w.dtype)
    grid = None if group_size else fit_grid(w, bits, sym)
    for i in range(columns):
        if static is not None:
            grid = static[int(order[i]) // group_size]
        elif group_size and i % group_size == 0:
            grid = fit_grid(w[:, i : i + group_size], bits, sym)
        q[:, i] = grid.quantize(w[:, i])
        err = (w[:, i] - q[:, i]) / upper[i, i]
        w[:, i:] -= torch.outer(err, upper[i, i:])
        row_loss += err**2
    return q[:, torch.argsort(order)], row_loss


def reference_sparsegpt(w, h, *, sparsity, pattern=None, segments=None, damp=0.01, block=128):
    """SparseGPT column by column: the mask of a block from its weights at the block's start
    (N:M: of a group when it is reached), every error pushed onto all later columns at once."""
    w = w.clone()
    upper = reference_inverse_cholesky(h, damp)
    diag = torch.diag(upper)
    row_loss = torch.zeros(w.shape[0], dtype=w.dtype)
    for start in range(0, w.shape[1], block):
        end = min(start + block, w.shape[1])
        if not pattern:
            scores = (w[:, start:end] ** 2 / diag[start:end] ** 2).split(segments or [w.shape[0]])
            mask = torch.cat([unstructured_mask(part, sparsity) for part in scores])
        for i in range(start, end):
            if pattern and (i - start) % pattern[1] == 0:
                group = slice(i, i + pattern[1])
                group_mask = n_m_mask(w[:, group] ** 2 / diag[group] ** 2, *pattern)
            pruned = group_mask[:, (i - start) % pattern[1]] if pattern else mask[:, i - start]
            kept = torch.where(pruned, torch.zeros(()), w[:, i])
            err = (w[:, i] - kept) / upper[i, i]
            w[:, i:] -= torch.outer(err, upper[i, i:])
            w[:, i] = kept
            row_loss += err**2
    return w, row_loss


@pytest.mark.parametrize("columns", [96, 576, 1100])  # 1100: split into uneven halves
def test_inverse_cholesky_is_the_upper_factor_of_the_inverse(columns):
    h = layer_hessian(columns)
    upper, used = inverse_cholesky(h, 0.01, "layer")
    assert used == 0.01
    assert torch.equal(upper, torch.triu(upper)) and (torch.diag(upper) > 0).all()
    expected = reference_inverse_cholesky(h, 0.01)
    scale = expected.abs().max()
    assert torch.allclose(upper, expected, rtol=1e-4, atol=1e-5 * scale)


def test_lower_triangular_inverse_by_blocks():
    lower = torch.tril(torch.randn(1300, 1300, dtype=torch.float64)) + 40 * torch.eye(
        1300, dtype=torch.float64)
    inverse = lower_triangular_inverse(lower)
    assert torch.equal(inverse, torch.tril(inverse))
    assert torch.allclose(inverse @ lower, torch.eye(1300, dtype=torch.float64), atol=1e-12)


def test_inverse_cholesky_raises_damping_then_gives_up():
    h = layer_hessian(200)
    mean = torch.diag(h).mean()
    lowest = torch.linalg.eigvalsh(h.double())[0].float()
    bad = h - (lowest + 0.05 * mean) * torch.eye(200)  # 1% damping fails, 10% does not
    upper, used = inverse_cholesky(bad, 0.01, "layer")
    assert used == pytest.approx(0.1)
    assert torch.allclose(upper, reference_inverse_cholesky(bad, used), rtol=1e-3,
                          atol=1e-4 * upper.abs().max())
    hopeless = torch.eye(200)
    hopeless[0, 1] = hopeless[1, 0] = 100.0
    with pytest.raises(InputError, match="not positive definite") as caught:
        inverse_cholesky(hopeless, 0.01, "model.layers.3.mlp.down_proj")
    assert caught.value.place == "model.layers.3.mlp.down_proj"
    assert f"damping {MAX_DAMP:g}" in str(caught.value)
    with pytest.raises(InputError, match="NaN/Inf"):
        inverse_cholesky(torch.full((4, 4), float("nan")), 0.01, "layer")


def test_all_finite_even_when_the_sum_overflows():
    huge = torch.full((4, 4), 3e38)
    assert all_finite(huge) and all_finite(torch.zeros(3))
    for bad in (float("nan"), float("inf"), -float("inf")):
        huge[2, 1] = bad
        assert not all_finite(huge)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.97, 1.0])
def test_unstructured_mask_takes_exactly_the_lowest_even_with_ties(sparsity):
    scores = torch.randint(0, 7, (40, 33)).float()  # hundreds of ties at every value
    scores[3, 4] = float("nan")  # NaN counts as the highest score
    mask = unstructured_mask(scores, sparsity)
    assert mask.sum().item() == round(scores.numel() * sparsity)
    if 0 < sparsity < 1:
        assert scores[mask].max() <= scores[~mask].nan_to_num(nan=99.0).min()
        assert not mask[3, 4]


GPTQ_CASES = [
    (192, 576, {"bits": 4, "group_size": 64, "sym": True, "static_groups": True}),
    (192, 576, {"bits": 4, "group_size": 64, "sym": False}),
    (192, 576, {"bits": 4, "group_size": 64, "sym": False, "act_order": True}),
    (96, 320, {"bits": 4, "group_size": 64, "sym": True, "act_order": True,
               "static_groups": True}),
    (96, 384, {"bits": 3, "group_size": 32, "sym": False}),
    (64, 200, {"bits": 4, "group_size": None, "sym": False, "act_order": True}),
    (64, 300, {"bits": 8, "group_size": 20, "sym": False}),  # groups cut across sub-blocks
    (64, 600, {"bits": 4, "group_size": 256, "sym": False}),  # a group longer than a block
    (64, 200, {"bits": 4, "group_size": 64, "sym": True, "static_groups": True}),  # short last
]


@pytest.mark.parametrize(("rows", "columns", "options"), GPTQ_CASES)
def test_gptq_matches_the_column_by_column_reference(rows, columns, options):
    """In float64 the reordered sums leave no weight near enough a rounding boundary to tip
    (the symmetric grid fitted as a group is reached is left to the next test: its extreme
    weight sits exactly on a boundary), so the two must agree to the last digits."""
    w, h = weights(rows, columns).double(), layer_hessian(columns).double()
    h[7, :] = h[:, 7] = 0.0  # a dead input
    w_before, h_before = w.clone(), h.clone()
    q, info = gptq(w, h, **options)
    assert torch.equal(w, w_before) and torch.equal(h, h_before)  # the caller's stay as given
    expected, expected_loss = reference_gptq(w, h, **options)
    assert info["dead_columns"] == 1 and (q[:, 7] == 0).all()
    assert torch.allclose(q, expected, rtol=1e-9, atol=0)
    assert torch.allclose(info["row_loss"], expected_loss, rtol=1e-9, atol=0)


@pytest.mark.parametrize("options", [
    {"bits": 4, "group_size": 64, "sym": True, "static_groups": True},
    {"bits": 4, "group_size": 64, "sym": True},
    {"bits": 4, "group_size": 64, "sym": True, "act_order": True},
])
def test_gptq_in_float32_stays_close_to_the_reference(options):
    """A symmetric min-max grid puts its largest weight at exactly +-(2^bits - 1) / 2 steps,
    a rounding tie, so when grids are fitted from updated weights float32 rounding decides a
    few of those, and each changes the later columns a little: close, not equal."""
    w, h = weights(192, 576), layer_hessian(576)
    q, info = gptq(w, h, **options)
    expected, expected_loss = reference_gptq(w, h, **options)
    loose = not options.get("static_groups")
    differ = (~torch.isclose(q, expected, rtol=1e-5, atol=1e-8)).float().mean().item()
    assert differ < (0.03 if loose else 2e-3), f"{differ:.3%} of weights differ"
    total, expected_total = info["row_loss"].sum().item(), expected_loss.sum().item()
    assert total == pytest.approx(expected_total, rel=0.01 if loose else 1e-4)


@pytest.mark.parametrize(("columns", "options"), [
    (576, {"sparsity": 0.5}),
    (576, {"sparsity": 0.5, "segments": [64, 96, 32]}),
    (300, {"sparsity": 0.5, "pattern": (2, 4)}),
    (264, {"sparsity": 0.25, "pattern": (6, 8)}),
    (200, {"sparsity": 0.7}),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparsegpt_matches_the_column_by_column_reference(columns, options, dtype):
    """Exact in float64; in float32 a few weights whose saliencies tie within rounding may
    swap places in the mask, and the updates after them shift a little."""
    w, h = weights(192, columns).to(dtype), layer_hessian(columns).to(dtype)
    pruned, info = sparsegpt(w, h, **options)
    expected, expected_loss = reference_sparsegpt(w, h, **options)
    if dtype == torch.float64:
        assert torch.equal(pruned == 0, expected == 0)
        assert torch.allclose(pruned, expected, rtol=1e-9, atol=0)
        assert torch.allclose(info["row_loss"], expected_loss, rtol=1e-9, atol=0)
    else:
        assert ((pruned == 0) != (expected == 0)).float().mean().item() < 2e-3
        assert (pruned == 0).sum() == (expected == 0).sum()
        assert info["row_loss"].sum().item() == pytest.approx(expected_loss.sum().item(),
                                                              rel=1e-3)


def test_sparsegpt_dead_input_leaves_the_callers_tensors_alone():
    w, h = weights(64, 200), layer_hessian(200)
    h[5, :] = h[:, 5] = 0.0
    w_before, h_before = w.clone(), h.clone()
    pruned, info = sparsegpt(w, h, sparsity=0.5)
    assert torch.equal(w, w_before) and torch.equal(h, h_before)
    assert info["dead_columns"] == 1 and (pruned[:, 5] == 0).all()


@pytest.mark.parametrize("columns", [5, 576, 1536])
def test_hessian_accumulator_sums_x_transpose_x(columns):
    gen = torch.Generator().manual_seed(columns)
    batches = [torch.randn(1, rows, columns, generator=gen) for rows in (64, 1, 200)]
    full = HessianAccumulator(columns, torch.device("cpu"))
    diagonal = HessianAccumulator(columns, torch.device("cpu"), diagonal_only=True)
    for x in batches:
        full.add(x)
        diagonal.add(x)
    x = torch.cat([b.reshape(-1, columns) for b in batches]).double()
    expected = x.T @ x / x.shape[0]
    h = full.value("layer")
    assert torch.allclose(h.double(), expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(diagonal.value("layer").double(), torch.diag(expected), rtol=1e-5)
    full.add(torch.full((1, 2, columns), float("nan")))
    with pytest.raises(InputError, match="NaN or Inf"):
        full.value("model.layers.2.mlp.down_proj")
