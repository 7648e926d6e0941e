"""GPTQ (Frantar et al. 2022, arXiv 2210.17323): quantize one column at a time, pushing each
column's rounding error onto the columns not yet quantized through the inverse Hessian.

For column i with inverse-Hessian Cholesky row U[i] (U = chol(H^-1), upper):
    q_i = grid(w_i);  e = (w_i - q_i) / U[i, i];  W[:, i:] -= e U[i, i:]
done lazily in blocks of `block_size` columns (Algorithm 1 of the paper), and inside a block
in sub-blocks of 16 columns: each column takes the pending updates of the sub-block's earlier
columns as one matrix-vector product when it is reached, and one matmul updates the rest of the
block after the sub-block (the same sums in another order). With `act_order`
(the recipe's default: on SmolLM2 it takes GPTQ W4 from no better than rounding to well below
it), columns go in order of decreasing H[i, i] (the inputs with the most energy first), and
groups are formed in that order, as in the reference code without static groups; the result is
stored fake-quantized, so each weight still sits on exactly one group's grid (a packed export
would need the group index of each input, GPTQ's `g_idx`). With `static_groups`
every group's grid is fitted before the first column from the original weights, over
contiguous inputs (what llm-compressor 0.14 does); by default a grid is fitted when its group
is reached, from the weights as updated so far (the reference code), which fits better.
"""

from __future__ import annotations

import math

import torch

from crbench.compress.hessian import inverse_cholesky, kill_dead_columns, one_thread
from crbench.compress.quant import Grid, fit_grid

NEEDS = "hessian"
SUB_BLOCK = 16  # columns whose rank-1 updates touch only each other; a matmul updates the rest


class ColumnQuantizer:
    """Grids laid out for quantizing one input column (all output rows) in four in-place ops:
    clamp(round(w / s) + z, 0, maxq) - z equals clamp(round(w / s), -z, maxq - z) exactly
    (small integers in float), so the zero point folds into the clamp bounds."""

    def __init__(self, scale: torch.Tensor, low: torch.Tensor, high: torch.Tensor):
        self.scale, self.low, self.high = scale, low, high

    @staticmethod
    def from_grid(grid: Grid, parts: int = 1) -> list[ColumnQuantizer]:
        """One quantizer per consecutive `rows / parts` grid rows (one group each)."""
        scale = grid.scale[:, 0].contiguous()
        low, high = -grid.zero[:, 0], grid.maxq - grid.zero[:, 0]
        return [ColumnQuantizer(*part) for part in zip(
            scale.chunk(parts), low.chunk(parts), high.chunk(parts), strict=True)]

    def quantize_into(self, w: torch.Tensor, out: torch.Tensor) -> None:
        torch.div(w, self.scale, out=out)
        out.round_().clamp_(self.low, self.high).mul_(self.scale)


def static_quantizers(w_t: torch.Tensor, group_size: int, bits: int,
                      sym: bool) -> list[ColumnQuantizer]:
    """The grid of every group of inputs from `w_t` ([in, out]), one quantizer per group."""
    columns, rows = w_t.shape
    if columns % group_size:  # a short last group: one fit per group
        return [ColumnQuantizer.from_grid(fit_grid(w_t[g : g + group_size].T, bits, sym))[0]
                for g in range(0, columns, group_size)]
    groups = columns // group_size
    # all groups in one fit: rows (group, output row), each with its group's inputs
    stacked = w_t.reshape(groups, group_size, rows).transpose(1, 2).reshape(-1, group_size)
    return ColumnQuantizer.from_grid(fit_grid(stacked, bits, sym), groups)


def gptq(
    w: torch.Tensor,
    h: torch.Tensor,
    *,
    bits: int,
    group_size: int | None,
    sym: bool,
    act_order: bool = False,
    static_groups: bool = False,
    damp: float = 0.01,
    block_size: int = 128,
    where: str = "",
) -> tuple[torch.Tensor, dict]:
    """Quantize `w` ([out, in], fp32) given H ([in, in]); returns (new weight, info).

    info["row_loss"][r] = sum of e^2 over the columns of row r, which is exactly the row's
    ||dW X||^2 / n under the damped Hessian (the OBS error of each step adds up).

    The loop works on W transposed ([in, out]): each input column is then one contiguous row,
    so reading it, writing its quantized values and errors, and the updates run on contiguous
    memory; per-column work is seven ops into preallocated rows, on one thread.
    """
    w_t = w.T.contiguous()  # our copy, transposed
    h, dead = kill_dead_columns(h, w_t.T)
    columns = w.shape[1]
    static = None
    if group_size and static_groups:  # every grid from the weights before any update
        static = static_quantizers(w_t, group_size, bits, sym)
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else None
    order = perm.tolist() if perm is not None else range(columns)
    if perm is not None:
        w_t, h = w_t[perm], h[perm][:, perm]
    hinv, damp_used = inverse_cholesky(h, damp, where)
    hinv_diag = torch.diag(hinv)

    q_t = torch.empty_like(w_t)
    row_loss = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    quantizer = None  # per channel: one grid for the whole row
    if not group_size:
        quantizer = ColumnQuantizer.from_grid(fit_grid(w_t.T, bits, sym))[0]
    if group_size:  # whole groups per block, so a group's grid sees its up-to-date weights
        block_size = max(block_size // group_size, 1) * group_size
    sub = math.gcd(SUB_BLOCK, group_size or SUB_BLOCK)  # a group starts on a sub-block
    errors_t = torch.empty(min(block_size, columns), w.shape[0], dtype=w.dtype, device=w.device)
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = w_t[start:end]  # updated in place: w_t is our copy
        hinv_block = hinv[start:end, start:end]
        errors = errors_t[: end - start]
        weight_rows, q_rows = block.unbind(0), q_t[start:end].unbind(0)
        error_rows = errors.unbind(0)
        divisors = hinv_diag[start:end].unbind(0)  # 0-d tensors: no scalar to wrap per column
        for sub_start in range(0, end - start, sub):
            sub_end = min(sub_start + sub, end - start)
            with one_thread():
                for i in range(sub_start, sub_end):
                    col = start + i
                    if static is not None and group_size:
                        quantizer = static[order[col] // group_size]
                    elif group_size and col % group_size == 0:
                        # The group's grid comes from its weights as updated by everything
                        # before it (a group starts on a sub-block: no pending updates).
                        quantizer = ColumnQuantizer.from_grid(
                            fit_grid(block[i : i + group_size].T, bits, sym))[0]
                    assert quantizer is not None  # fitted at the first column of every group
                    wi, qi, err = weight_rows[i], q_rows[i], error_rows[i]
                    if i > sub_start:  # the pending updates from this sub-block's columns
                        wi.addmv_(errors[sub_start:i].T, hinv_block[sub_start:i, i], alpha=-1)
                    quantizer.quantize_into(wi, qi)
                    torch.sub(wi, qi, out=err).div_(divisors[i])
            # Then the rest of the block at once, and after the block the rest of W.
            block[sub_end:].addmm_(hinv_block[sub_start:sub_end, sub_end:].T,
                                   errors[sub_start:sub_end], alpha=-1)
        w_t[end:].addmm_(hinv[start:end, end:].T, errors, alpha=-1)
        row_loss += errors.pow(2).sum(dim=0)

    if perm is not None:
        q_t = q_t[torch.argsort(perm)]
    return q_t.T.contiguous(), {"damp": damp_used, "dead_columns": dead, "row_loss": row_loss}
