"""Perplexity of a causal LM over a plain text file, in fixed non-overlapping windows.

The text is tokenized once (no special tokens) and cut into windows of `seqlen` tokens; a tail
shorter than a window is dropped. Each window is scored on its own (no context carried over),
so the first token of a window is context only: ppl = exp(mean NLL over the seqlen - 1
predicted tokens of every window). `seqlen` is pinned (default 512), never taken from the
model's max_position_embeddings, so figures compare across models.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from crbench.compress.calibration import read_text, tokenize
from crbench.errors import InputError

DEFAULT_SEQLEN = 512


@torch.no_grad()
def perplexity_of(model: Any, tokenizer: Any, text: str, seqlen: int = DEFAULT_SEQLEN,
                  source: str | Path | None = None) -> dict[str, Any]:
    """{"ppl", "nll", "tokens" (predicted), "windows", "seqlen"} of a loaded model on `text`."""
    if seqlen < 2:
        raise InputError(None, f"seqlen must be at least 2, got {seqlen}", "--seqlen")
    stream = tokenize(tokenizer, text)
    windows = len(stream) // seqlen
    if windows == 0:
        raise InputError(source, f"text has {len(stream)} tokens, fewer than one window of "
                         f"{seqlen}; use a longer file or a smaller --seqlen")
    device = next(model.parameters()).device
    total_nll = 0.0
    for i in range(windows):
        ids = stream[i * seqlen : (i + 1) * seqlen].unsqueeze(0).to(device)
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
        total_nll += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
    tokens = windows * (seqlen - 1)
    nll = total_nll / tokens
    return {"ppl": math.exp(nll), "nll": nll, "tokens": tokens, "windows": windows,
            "seqlen": seqlen}


def perplexity(model_name: str | Path, data: str | Path, seqlen: int = DEFAULT_SEQLEN,
               device: str | None = None, dtype: str = "auto") -> dict[str, Any]:
    """Load a model (folder, .gguf, hub id, `demo`) and measure its perplexity on a text file,
    computing in `dtype` ("auto": see crbench.dtype; the result says which)."""
    from crbench.dtype import canonical, resolve_dtype, shape_of_folder
    from crbench.engines.hf_packed import pack_linears, should_pack
    from crbench.models import default_device, load_causal_lm, resolve_model

    try:
        chosen = canonical(dtype)
    except ValueError as exc:
        raise InputError(None, str(exc), "--dtype") from None
    text = read_text(data)  # read first: a bad file fails before a model loads
    device = device or default_device()
    if chosen == "auto":
        shape = shape_of_folder(resolve_model(model_name))
        chosen = canonical(resolve_dtype("auto", device, shape))
    model, tokenizer = load_causal_lm(model_name, device=device, dtype=chosen)
    if should_pack(model, None):  # bf16 on a CPU where packed weights measured faster
        pack_linears(model, rows_hint=seqlen)
    started = time.perf_counter()
    result = perplexity_of(model, tokenizer, text, seqlen, source=data)
    seconds = round(time.perf_counter() - started, 2)
    result.update(model=str(model_name), data=str(data), seconds=seconds, dtype=chosen)
    return result
