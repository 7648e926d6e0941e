"""SparseGPT (Frantar & Alistarh 2023, arXiv 2301.00774): prune with OBS-style updates.

Columns are processed left to right in blocks of `block_size`. At the start of each block the
mask is chosen by the OBS saliency w^2 / [H^-1]_ii^2 (with U = chol(H^-1), upper, [H^-1]_ii is
read as U[i, i]^2, as in the paper's Algorithm 1): exactly `sparsity` of the block's weights.
For N:M the mask of each group of M columns is chosen when the group is reached, from the
weights as updated so far: the M-N least salient inputs of the group in each row. Each column is
zeroed where masked and its error e = (w_i - q_i) / U[i, i] is pushed onto the remaining
columns: W[:, i:] -= e U[i, i:] (within sub-blocks of 16 columns as it goes, then one matmul
for the rest of the block, as in `gptq`). Unstructured masks are exact per block, so every
module ends at exactly the requested sparsity (up to rounding of one weight per block).
"""

from __future__ import annotations

import torch

from crbench.compress.hessian import inverse_cholesky, kill_dead_columns

NEEDS = "hessian"
SUB_BLOCK = 16  # columns whose rank-1 updates touch only each other; a matmul updates the rest


def unstructured_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True for exactly round(numel * sparsity) lowest scores of the whole tensor."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    count = round(scores.numel() * sparsity)
    if count:
        mask[torch.topk(scores.flatten(), count, largest=False).indices] = True
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
    w, h = w.clone(), h.clone()
    dead = kill_dead_columns(h, w)
    hinv, damp_used = inverse_cholesky(h, damp, where)
    columns = w.shape[1]
    segments = segments or [w.shape[0]]
    row_loss = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    if pattern:  # N:M groups must not straddle blocks
        block_size = max(block_size // pattern[1], 1) * pattern[1]
    # N:M groups must not straddle sub-blocks either
    sub = max(SUB_BLOCK // pattern[1], 1) * pattern[1] if pattern else SUB_BLOCK

    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block, hinv_block = w[:, start:end].clone(), hinv[start:end, start:end]
        inv_diag = torch.diag(hinv_block).unsqueeze(0)
        if pattern:
            mask = torch.zeros_like(block, dtype=torch.bool)
        else:
            scores = (block**2 / inv_diag**2).split(segments)
            mask = torch.cat([unstructured_mask(part, sparsity) for part in scores])
        errors = torch.zeros_like(block)
        for i in range(end - start):
            if pattern and i % pattern[1] == 0:  # N:M: choose each group as it is reached
                group = slice(i, i + pattern[1])
                mask[:, group] = n_m_mask(block[:, group] ** 2 / inv_diag[:, group] ** 2, *pattern)
            wi = block[:, i]
            qi = torch.where(mask[:, i], torch.zeros_like(wi), wi)
            err = (wi - qi) / hinv_block[i, i]
            # -= err x U[i, i:], within the sub-block now and past it once the sub-block is done
            sub_end = (i // sub + 1) * sub
            block[:, i:sub_end].addr_(err, hinv_block[i, i:sub_end], alpha=-1)
            block[:, i] = qi  # exact zeros, whatever rounding the update left
            errors[:, i] = err
            if i + 1 == sub_end:
                block[:, sub_end:] -= errors[:, sub_end - sub : sub_end] @ hinv_block[
                    sub_end - sub : sub_end, sub_end:]
        w[:, start:end] = block
        w[:, end:] -= errors @ hinv[start:end, end:]
        row_loss += errors.pow(2).sum(dim=1)
    return w, {"damp": damp_used, "dead_columns": dead, "row_loss": row_loss}
