"""The layer Hessian H = X^T X / n (fp32) and the inverse-Hessian Cholesky factor GPTQ and
SparseGPT work from.

Both algorithms minimise ||W X - W' X||^2 one column at a time; the error of each column is
spread over the columns not yet processed through the rows of chol(H^-1) (upper factor).

Dead columns (an input that was zero for every calibration token) have H[i, i] = 0: the weight
there never mattered, so it is set to zero and H[i, i] = 1 keeps H invertible.

Damping: H + lambda * I with lambda = damp * mean(diag(H)). If the Cholesky factorisation still
fails (H not positive definite in floating point), damp is raised x10 and retried up to
MAX_DAMP; past that we raise. We never fall back to plain rounding.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from crbench.errors import InputError

TRIANGULAR_LEAF = 512  # below this a plain triangular solve is as fast as splitting
MAX_DAMP = 10.0  # lambda up to 10x the mean diagonal: beyond that the "Hessian" means nothing


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside: for the per-column ops of GPTQ/SparseGPT (a few
    thousand floats each) a second thread costs more to start and join than it saves (round()
    on 3072 floats: 1 us alone, 6-10 us on two threads, ~100 us when another process holds the
    other core). The matmuls between columns run outside, on all threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


STRIPS = 4  # X^T X accumulated in row strips on and above the diagonal (see `add`)


class HessianAccumulator:
    """Running X^T X / n over calibration tokens for one linear layer; `diagonal_only` keeps
    just the squared column norms (all Wanda needs).

    X^T X is symmetric: each batch adds only the row strips from the diagonal rightwards
    (strip i: X_i^T X[:, i:]), 5/8 of the multiply-adds in four strips (measured 1.4x faster
    at SmolLM2's widths, 576 and 1536), and `value` mirrors the upper triangle once."""

    def __init__(self, columns: int, device: torch.device, diagonal_only: bool = False):
        shape = (columns,) if diagonal_only else (columns, columns)
        self.sum = torch.zeros(shape, dtype=torch.float32, device=device)
        self.tokens = 0
        self.diagonal_only = diagonal_only

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        with torch.autocast(x.device.type, enabled=False):  # called inside autocast forwards
            if self.diagonal_only:
                self.sum += (x * x).sum(dim=0)
            else:
                width = -(-x.shape[1] // STRIPS)
                for i in range(0, x.shape[1], width):
                    self.sum[i : i + width, i:].addmm_(x[:, i : i + width].T, x[:, i:])
        self.tokens += x.shape[0]

    def value(self, where: str) -> torch.Tensor:
        # NaN or Inf in any activation ends up in the sum: one check instead of one per batch.
        if not all_finite(self.sum):
            raise InputError(None, "calibration activations contain NaN or Inf "
                             "(the model overflows on this text or its weights are broken)", where)
        if self.diagonal_only:
            return self.sum / max(self.tokens, 1)
        upper = torch.triu(self.sum)  # below the strips' diagonal blocks: not accumulated
        return (upper + torch.triu(self.sum, 1).T) / max(self.tokens, 1)


def kill_dead_columns(h: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Zero the weight of inputs that never fired (in place) and make H invertible there, in a
    copy of H made only when there are such inputs; return (H, how many)."""
    dead = torch.diag(h) == 0
    count = int(dead.sum())
    if count:
        h = h.clone()
        h[dead, dead] = 1.0
        w[:, dead] = 0.0
    return h, count


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or Inf in `t`. A finite sum proves it at a fraction of the cost of isfinite()
    (which makes a bool per entry); only an overflowing sum needs the entry-wise check."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def lower_triangular_inverse(lower: torch.Tensor) -> torch.Tensor:
    """L^-1 for lower-triangular L, by 2 x 2 blocks: [[A, 0], [B, C]]^-1 is
    [[A^-1, 0], [-C^-1 B A^-1, C^-1]]. A triangular solve against I below TRIANGULAR_LEAF
    columns; above it the blocks skip most of the zeros a solve against I multiplies through
    (a solve costs n^3 multiply-adds, the triangular inverse n^3/3; 1.25x faster at 1536)."""
    n = lower.shape[0]
    if n <= TRIANGULAR_LEAF:
        eye = torch.eye(n, dtype=lower.dtype, device=lower.device)
        return torch.linalg.solve_triangular(lower, eye, upper=False)
    k = n // 2
    out = torch.empty_like(lower)
    out[:k, k:] = 0.0
    out[:k, :k] = top = lower_triangular_inverse(lower[:k, :k])
    out[k:, k:] = bottom = lower_triangular_inverse(lower[k:, k:])
    out[k:, :k] = -(bottom @ (lower[k:, :k] @ top))
    return out


def inverse_cholesky(h: torch.Tensor, damp: float, where: str) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of (H + lambda I)^-1 and the damp fraction that made it work.

    One factorisation instead of three: with J the reversal permutation and J H J = M M^T
    (M lower), H = (J M J)(J M J)^T where J M J is upper, so H^-1 = U^T U with
    U = (J M J)^-1 = J M^-1 J, upper with a positive diagonal: the unique upper factor.
    """
    mean_diag = torch.mean(torch.diag(h)).item()
    if not all_finite(h) or mean_diag <= 0:
        raise InputError(None, "Hessian has NaN/Inf or no positive diagonal", where)
    tried = damp
    while tried <= MAX_DAMP * (1 + 1e-9):
        damped = torch.flip(h, (0, 1))  # a copy: the damping goes on its diagonal
        damped.diagonal().add_(tried * mean_diag)
        lower, info = torch.linalg.cholesky_ex(damped)
        if info == 0:
            upper = torch.flip(lower_triangular_inverse(lower), (0, 1))
            if all_finite(upper):
                return upper, tried
        tried *= 10
    raise InputError(None, f"Hessian is not positive definite even with damping {MAX_DAMP:g} "
                     f"x mean diagonal (started at {damp:g}); the calibration data are degenerate "
                     "for this layer", where)
