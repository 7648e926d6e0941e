"""Attention for the hf engine's decode loop: packed rows, grouped-query heads without copies.

Packed rows. A speculative decode step feeds each row its last token plus its draft, and the
drafts differ in length (a row whose last token never occurred before has none). Padding every
row to the longest draft made 16% of the positions of the reasoning benchmark's decode steps
padding, each paying for every linear layer. So the step's tokens go to the model as one
sequence, `[1, tokens]`, with no padding: the linear layers, norms and the LM head see only
real tokens. Only attention needs rows: `PackedStep` tells this function where each row's
tokens are, it gathers the queries into `[rows, width]` (queries are small; the cache is not
copied), runs the kernel per row against the row's cache and takes the real positions back out.

Grouped-query attention (GQA). With a mask and more than one query position, transformers'
sdpa path repeats every key/value head for each query head that shares it (`repeat_kv`) before
calling the kernel: the whole cache copied three times per layer and step for SmolLM2 (9 query
heads, 3 key/value heads). Measured on a 2-core CPU, 19 rows x 900 cached columns, one layer:
35 ms with the copies, 2.6 ms without (5 query positions). Here the query heads of each group
are folded into the query axis instead ([b, kv heads x group, q, d] -> [b, kv heads, group x
q, d]; the mask repeated to match), so the kernel reads each key/value head once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NAME = "crbench_sdpa"
PACKED = "crbench_packed"  # the model keyword that carries a `PackedStep` to this function


@dataclass
class PackedStep:
    """Where the rows' tokens are in a packed step of `tokens` positions."""

    rows: Any  # [tokens] row of each token
    offsets: Any  # [tokens] its position among the row's tokens
    gather: Any  # [rows x width] the token at each row position (a row's last one repeats)
    width: int  # the most tokens of one row
    slots: Any  # [tokens] where each token is among the [rows x width] positions
    folded_mask: Any = None  # the step's mask as the kernel takes it, made by the first layer


def grouped_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                 **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention-function signature; output [batch, q, heads, head_dim]."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    packed: PackedStep | None = kwargs.pop(PACKED, None)
    if packed is None and (attention_mask is None or attention_mask.dim() != 4
                           or attention_mask.shape[1] != 1 or kwargs.get("dropout", 0.0)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if packed is not None:  # [1, heads, tokens, d] -> [rows, heads, width, d]
        # index_select, not advanced indexing: 8 against 29 us a call at 32 rows x 5 tokens
        heads, dim = query.shape[1], query.shape[3]
        query = query[0].index_select(1, packed.gather).view(heads, -1, packed.width, dim)
        query = query.transpose(0, 1)
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, length, dim = query.shape
    folded = query.reshape(batch, heads // groups, groups * length, dim)
    if packed is None:
        mask = fold_mask(attention_mask, groups, query.dtype)
    elif packed.folded_mask is None:  # every layer of a step has the same mask: fold it once
        mask = packed.folded_mask = fold_mask(attention_mask, groups, query.dtype)
    else:
        mask = packed.folded_mask
    out = torch.nn.functional.scaled_dot_product_attention(
        folded, key, value, attn_mask=mask, scale=kwargs.get("scaling"))
    out = out.reshape(batch, heads, length, dim).transpose(1, 2)
    if packed is not None:  # the real positions, in the packed order: [1, tokens, heads, d]
        out = out.reshape(batch * length, heads, dim).index_select(0, packed.slots)[None]
    return out.contiguous(), None


def fold_mask(allowed: Any, groups: int, dtype: Any) -> Any:
    """[b, 1, q, k] bool -> [b, 1, groups x q, k] additive (0 / -inf) in `dtype`, as the
    kernel would convert a bool mask itself at every call."""
    import torch

    if allowed.dtype != torch.bool:  # already additive
        return allowed.to(dtype).repeat(1, 1, groups, 1)
    additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return additive.masked_fill_(~allowed, float("-inf")).repeat(1, 1, groups, 1)


def use_packed_attention(model: Any) -> None:
    """Switch the model (sdpa or eager attention) to `grouped_sdpa`, for our decode loop."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, grouped_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # masks as sdpa takes them
    model.set_attn_implementation(NAME)
