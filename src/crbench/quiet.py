"""Keep third-party chatter off the terminal unless `--verbose` asks for it.

crbench's own progress and messages stay; what goes quiet is what the libraries print on their
own: weight-loading and shard-writing progress bars (tqdm, huggingface_hub, datasets), their
info and warning logs, and Python warnings (deprecations and the like). Environment variables
are set too, so a server or worker process crbench starts is quiet the same way.
"""

from __future__ import annotations

import logging
import os
import warnings

QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",  # tqdm >= 4.66 reads it: bars that libraries start themselves
    "TOKENIZERS_PARALLELISM": "false",  # its fork warning
    "PYTHONWARNINGS": "ignore",
}
NOISY_LOGGERS = ("transformers", "huggingface_hub", "datasets", "accelerate", "torch",
                 "urllib3", "httpx", "filelock", "peft", "trl", "vllm", "llmcompressor")


def configure(verbose: bool) -> None:
    """Quiet the libraries (verbose False) or leave them as they are (verbose True)."""
    if verbose:
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
