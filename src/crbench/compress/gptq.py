"""GPTQ (Frantar et al. 2022, arXiv 2210.17323): quantize one column at a time, pushing each
column's rounding error onto the columns not yet quantized through the inverse Hessian.

For column i with inverse-Hessian Cholesky row U[i] (U = chol(H^-1), upper):
    q_i = grid(w_i);  e = (w_i - q_i) / U[i, i];  W[:, i:] -= e U[i, i:]
done lazily in blocks of `block_size` columns (Algorithm 1 of the paper), and inside a block
in sub-blocks of 16 columns whose rank-1 updates touch only each other, one matmul then updating
the rest of the block (the same sums in another order; 1.6-1.8x faster on a CPU). With `act_order`
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

from crbench.compress.hessian import inverse_cholesky, kill_dead_columns
from crbench.compress.quant import fit_grid

NEEDS = "hessian"
SUB_BLOCK = 16  # columns whose rank-1 updates touch only each other; a matmul updates the rest


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
    """
    w, h = w.clone(), h.clone()
    dead = kill_dead_columns(h, w)
    columns = w.shape[1]
    static = None
    if group_size and static_groups:  # every grid from the weights before any update
        static = [fit_grid(w[:, g : g + group_size], bits, sym)
                  for g in range(0, columns, group_size)]
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else None
    order = perm.tolist() if perm is not None else range(columns)
    if perm is not None:
        w, h = w[:, perm], h[perm][:, perm]
    hinv, damp_used = inverse_cholesky(h, damp, where)

    q = torch.zeros_like(w)
    row_loss = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    grid = fit_grid(w, bits, sym) if not group_size else None
    if group_size:  # whole groups per block, so a group's grid sees its up-to-date weights
        block_size = max(block_size // group_size, 1) * group_size
    sub = math.gcd(SUB_BLOCK, group_size or SUB_BLOCK)  # a group starts on a sub-block
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block, hinv_block = w[:, start:end].clone(), hinv[start:end, start:end]
        errors = torch.zeros_like(block)
        for i in range(end - start):
            col = start + i
            if static is not None and group_size:
                grid = static[order[col] // group_size]
            elif group_size and col % group_size == 0:
                # The group's grid comes from its weights as updated by everything before it.
                grid = fit_grid(block[:, i : i + group_size], bits, sym)
            assert grid is not None  # fitted at the first column of every group
            wi = block[:, i]
            qi = grid.quantize(wi)
            q[:, col] = qi
            err = (wi - qi) / hinv_block[i, i]
            # -= err x U[i, i:], within the sub-block now and past it once the sub-block is done
            sub_end = (i // sub + 1) * sub
            block[:, i:sub_end].addr_(err, hinv_block[i, i:sub_end], alpha=-1)
            errors[:, i] = err
            if i + 1 == sub_end:
                block[:, sub_end:] -= errors[:, sub_end - sub : sub_end] @ hinv_block[
                    sub_end - sub : sub_end, sub_end:]
        w[:, end:] -= errors @ hinv[start:end, end:]
        row_loss += errors.pow(2).sum(dim=1)

    if perm is not None:
        q = q[:, torch.argsort(perm)]
    return q, {"damp": damp_used, "dead_columns": dead, "row_loss": row_loss}
