"""SparseGPT (Frantar & Alistarh 2023, arXiv 2301.00774): prune with OBS-style updates.

Columns are processed left to right in blocks of `block_size`. At the start of each block the
mask is chosen by the OBS saliency w^2 / [H^-1]_ii^2 (with U = chol(H^-1), upper, [H^-1]_ii is
read as U[i, i]^2, as in the paper's Algorithm 1): exactly `sparsity` of the block's weights.
For N:M the mask of each group of M columns is chosen when the group is reached, from the
weights as updated so far: the M-N least salient inputs of the group in each row. Each column is
zeroed where masked and its error e = (w_i - q_i) / U[i, i] is pushed onto the remaining
columns: W[:, i:] -= e U[i, i:] (lazily, in blocks and sub-blocks of 16 columns, on W
transposed, as in `gptq`). Unstructured masks are exact per block, so every
module ends at exactly the requested sparsity (up to rounding of one weight per block).
"""

from __future__ import annotations

import torch

from crbench.compress.hessian import inverse_cholesky, kill_dead_columns, one_thread

NEEDS = "hessian"
SUB_BLOCK = 16  # columns whose rank-1 updates touch only each other; a matmul updates the rest


def unstructured_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True for exactly round(numel * sparsity) lowest scores of the whole tensor (ties at the
    threshold broken by position). A k-th value and a comparison: 4-5x faster than topk."""
    flat = scores.flatten()
    count = round(flat.numel() * sparsity)
    if not count:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(flat, count).values
    if threshold.isnan():  # NaN sorts last, as in topk: every number is below it
        below, tied = ~flat.isnan(), flat.isnan()
    else:
        below, tied = flat < threshold, flat == threshold
    mask = below | tied
    extra = int(mask.sum()) - count
    if extra:  # more than one score equals the threshold: keep the last of them
        mask[torch.nonzero(tied).flatten()[-extra:]] = False
    return mask.reshape(scores.shape)


def n_m_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """True for the m - n lowest scores in every m consecutive columns of each row."""
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)
    drop = torch.topk(groups, m - n, dim=2, largest=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, drop, True)
    return mask.reshape(rows, cols)


def sparsegpt(
    w: torch.Tensor,
    h: torch.Tensor,
    *,
    sparsity: float,
    pattern: tuple[int, int] | None = None,
    damp: float = 0.01,
    block_size: int = 128,
    where: str = "",
    segments: list[int] | None = None,
) -> tuple[torch.Tensor, dict]:
    """Prune `w` ([out, in], fp32) given H ([in, in]); returns (new weight, info).

    `pattern` (n, m) keeps n of every m consecutive inputs per row; then `sparsity` is 1 - n/m.
    `segments`: row counts of layers stacked into `w` because they share H (q/k/v); each
    gets its own unstructured mask. info["row_loss"] as in gptq.
    """
    w_t = w.T.contiguous()  # our copy, transposed: each input column one contiguous row
    h, dead = kill_dead_columns(h, w_t.T)
    hinv, damp_used = inverse_cholesky(h, damp, where)
    hinv_diag = torch.diag(hinv)
    columns = w.shape[1]
    segments = segments or [w.shape[0]]
    row_loss = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    if pattern:  # N:M groups must not straddle blocks
        block_size = max(block_size // pattern[1], 1) * pattern[1]
    # N:M groups must not straddle sub-blocks either
    sub = max(SUB_BLOCK // pattern[1], 1) * pattern[1] if pattern else SUB_BLOCK
    errors_t = torch.empty(min(block_size, columns), w.shape[0], dtype=w.dtype, device=w.device)
    zero = torch.zeros((), dtype=w.dtype, device=w.device)

    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = w_t[start:end]  # updated in place
        hinv_block, inv_diag = hinv[start:end, start:end], hinv_diag[start:end]
        errors = errors_t[: end - start]
        weight_rows, error_rows = block.unbind(0), errors.unbind(0)
        divisors = inv_diag.unbind(0)  # 0-d tensors: no scalar to wrap per column
        if pattern:
            mask_t = torch.zeros_like(block, dtype=torch.bool)
        else:  # scores laid out [rows, columns] as the masks count them
            scores = (block.T**2 / inv_diag**2).split(segments)
            mask_t = torch.cat([unstructured_mask(part, sparsity) for part in scores]).T
            mask_t = mask_t.contiguous()
        mask_rows = mask_t.unbind(0)  # views: N:M groups written below show through
        for sub_start in range(0, end - start, sub):
            sub_end = min(sub_start + sub, end - start)
            with one_thread():
                done = sub_start  # a column owes the updates of the columns from here to it
                for i in range(sub_start, sub_end):
                    if pattern and i % pattern[1] == 0:  # N:M: choose each group when reached,
                        group = slice(i, i + pattern[1])  # from up-to-date weights
                        block[group].addmm_(hinv_block[sub_start:i, group].T,
                                            errors[sub_start:i], alpha=-1)
                        done = i
                        saliency = block[group] ** 2 / inv_diag[group, None] ** 2
                        mask_t[group] = n_m_mask(saliency.T, *pattern).T
                    wi, err, pruned = weight_rows[i], error_rows[i], mask_rows[i]
                    if i > done:  # the pending updates from this sub-block's columns
                        wi.addmv_(errors[done:i].T, hinv_block[done:i, i], alpha=-1)
                    # e = (w - q) / U[i, i]: w where pruned, 0 where kept
                    torch.where(pruned, wi, zero, out=err).div_(divisors[i])
                    torch.where(pruned, zero, wi, out=wi)  # exact zeros
            # Then the rest of the block at once, and after the block the rest of W.
            block[sub_end:].addmm_(hinv_block[sub_start:sub_end, sub_end:].T,
                                   errors[sub_start:sub_end], alpha=-1)
        w_t[end:].addmm_(hinv[start:end, end:].T, errors, alpha=-1)
        row_loss += errors.pow(2).sum(dim=0)
    return w_t.T.contiguous(), {"damp": damp_used, "dead_columns": dead, "row_loss": row_loss}
