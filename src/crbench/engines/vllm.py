"""The `vllm` engine: vLLM's in-process `LLM`, for GPUs (`pip install crbench[vllm]`).

vllm is imported only when this engine is built. Prompts are tokenized here, with the same
chat-template rule as the hf engine, and sent as token ids, so both engines see the same
tokens. Each prompt gets a seed of its own (see `prompts.prompt_seed`), so a sample does not
depend on the batch.

Every prompt is submitted to vLLM's engine as its own request (`LLMEngine.add_request`, then
`step` until none is left: the request-level API under `LLM.generate`), and each result is
yielded the step it finishes, so the runner commits it at once: no chunk waits for its slowest
member, and a preempted job loses only the requests still running. Outputs are those of
`LLM.generate` with the same per-request seeds.

Budget forcing (crbench/engines/budget.py) runs in stages: a request is capped at the thinking
tokens left; when it finishes, its tokens are replayed through the same control as the hf
engine's, and where that asks for an edit a follow-up request continues from the prompt + kept
tokens + inserted tokens (token ids, so nothing is re-tokenized).

`data_parallel_size` > 1 starts that many worker processes, each with its own `LLM` on its own
`tensor_parallel_size` GPUs (independent replicas: right for dense models; vLLM's own
coordinated data parallelism matters for mixture-of-experts models). Each gets `chunk_size`
prompts at a time, the next chunk as soon as half of its current one is done, and sends each
result back as it finishes.

`n` > 1 asks vLLM for n samples of each prompt: the Generation is the first, and
`extra["samples"]` holds the others as dicts (text, completion_tokens, finish_reason, token_ids).
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from typing import Any

from crbench.engines.base import Generation, Prompt, SamplingParams
from crbench.engines.prompts import encode_prompt, prompt_seed
from crbench.engines.vllm_requests import RequestLoop

__all__ = ["RequestLoop", "deal_out", "llm_arguments", "sampling_arguments", "serve",
           "to_generation"]


def llm_arguments(model: str, *, tensor_parallel_size: int = 1, dtype: str = "auto",
                  gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                  trust_remote_code: bool = False, seed: int = 0, enforce_eager: bool = False,
                  **more: Any) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM`; anything in `more` is passed through unchanged."""
    arguments = {
        "model": model,
        "tensor_parallel_size": tensor_parallel_size,
        "dtype": dtype,
        "gpu_memory_utilization": gpu_memory_utilization,
        "trust_remote_code": trust_remote_code,
        "seed": seed,
        "enforce_eager": enforce_eager,
        **more,
    }
    if max_model_len is not None:
        arguments["max_model_len"] = max_model_len
    return arguments


def sampling_arguments(params: SamplingParams, prompt_ids: list[int], *, n: int = 1,
                       stop: list[str] | None = None) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams` for one prompt."""
    arguments: dict[str, Any] = {
        "n": n,
        "temperature": params.temperature,
        "top_p": params.top_p if params.temperature > 0 else 1.0,
        "max_tokens": params.max_new_tokens,
        "seed": prompt_seed(params.seed, prompt_ids) if params.temperature > 0 else None,
    }
    if stop:
        arguments["stop"] = list(stop)
    return arguments


def sample_fields(output: Any) -> dict[str, Any]:
    """What we keep of one vLLM CompletionOutput."""
    token_ids = list(output.token_ids)
    return {
        "text": output.text,
        "completion_tokens": len(token_ids),
        "finish_reason": "length" if output.finish_reason == "length" else "stop",
        "token_ids": token_ids,
        "stop_reason": output.stop_reason if isinstance(output.stop_reason, (str, int)) else None,
    }


def to_generation(request_output: Any, wall_s: float) -> Generation:
    """A Generation from a vLLM RequestOutput (its first sample; the others in extra)."""
    samples = [sample_fields(o) for o in request_output.outputs]
    first = samples[0]
    extra: dict[str, Any] = {"vllm_finish_reason": request_output.outputs[0].finish_reason}
    if first["stop_reason"] is not None:
        extra["stop_reason"] = first["stop_reason"]
    if getattr(request_output, "num_cached_tokens", None) is not None:
        extra["cached_prompt_tokens"] = request_output.num_cached_tokens
    if len(samples) > 1:
        extra["samples"] = [{k: v for k, v in s.items() if k != "stop_reason"}
                            for s in samples[1:]]
    return Generation(
        text=first["text"],
        prompt_tokens=len(request_output.prompt_token_ids or []),
        completion_tokens=first["completion_tokens"],
        finish_reason=first["finish_reason"],
        wall_s=wall_s,
        token_ids=first["token_ids"],
        extra=extra,
    )


class VLLMEngine:
    name = "vllm"

    def __init__(self, model: str, *, tensor_parallel_size: int = 1,
                 data_parallel_size: int = 1, n: int = 1, stop: list[str] | None = None,
                 chunk_size: int = 512, **llm_options: Any):
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise ImportError("the vllm engine needs `pip install crbench[vllm]` (and a GPU)"
                              ) from None
        from transformers import AutoTokenizer

        from crbench.models import resolve_model

        path = resolve_model(model)
        self.n, self.stop, self.chunk_size = n, stop, chunk_size
        self.llm_args = llm_arguments(path, tensor_parallel_size=tensor_parallel_size,
                                      **llm_options)
        self.tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=bool(llm_options.get("trust_remote_code")))
        self.data_parallel_size = data_parallel_size
        self.llm: Any = None
        self.workers: list[Any] = []
        if data_parallel_size == 1:
            from vllm import LLM

            self.llm = LLM(**self.llm_args)
        else:
            self.workers = start_workers(self.llm_args, data_parallel_size, tensor_parallel_size,
                                         n, stop)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts: list[Prompt], params: SamplingParams
                 ) -> Iterator[tuple[int, Generation]]:
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        if self.llm is not None:
            loop = RequestLoop(self.llm.llm_engine, self.tokenizer, n=self.n, stop=self.stop)
            yield from loop.run(list(enumerate(encoded)), params)
            return
        jobs = [(start, encoded[start:start + self.chunk_size])
                for start in range(0, len(encoded), self.chunk_size)]
        yield from deal_out(self.workers, jobs, params, self.chunk_size)

    def close(self) -> None:
        for inbox, _, process in self.workers:
            inbox.put(None)
            process.join(timeout=60)
        self.workers = []
        self.llm = None


# --- data parallelism: one process per replica ------------------------------------------------


def worker(rank: int, gpus: str, llm_args: dict[str, Any], n: int, stop: list[str] | None,
           inbox: Any, outbox: Any) -> None:
    """One replica: takes (start, prompt ids, params) jobs, or None to stop once idle; sends
    (rank, index, Generation, None) per finished prompt, or (rank, None, None, error)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    from transformers import AutoTokenizer
    from vllm import LLM

    try:
        llm = LLM(**llm_args)
        tokenizer = AutoTokenizer.from_pretrained(
            llm_args["model"], trust_remote_code=bool(llm_args.get("trust_remote_code")))
        serve(RequestLoop(llm.llm_engine, tokenizer, n=n, stop=stop), rank, inbox, outbox)
    except Exception as exc:  # reported to the parent, which raises it
        outbox.put((rank, None, None, f"{type(exc).__name__}: {exc}"))


def serve(loop: RequestLoop, rank: int, inbox: Any, outbox: Any) -> None:
    """Submit each job's prompts as they arrive (no waiting for the running ones), step, and
    send each result back as it finishes; stop at None once nothing is running."""
    open_for_jobs = True
    while open_for_jobs or loop.busy():
        try:
            job = inbox.get(block=not loop.busy())
        except queue.Empty:
            job = ()
        if job is None:
            open_for_jobs = False
        elif job:
            start, chunk, params = job
            for offset, ids in enumerate(chunk):
                loop.submit(start + offset, ids, params)
        for index, generation in loop.step():
            outbox.put((rank, index, generation, None))


def start_workers(llm_args: dict[str, Any], replicas: int, gpus_each: int, n: int = 1,
                  stop: list[str] | None = None) -> list[Any]:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(replicas * gpus_each)]
    if len(devices) < replicas * gpus_each:
        raise ValueError(f"data_parallel_size {replicas} x tensor_parallel_size {gpus_each} "
                         f"needs {replicas * gpus_each} GPUs; {len(devices)} visible")
    outbox = context.Queue()
    workers = []
    for rank in range(replicas):
        gpus = ",".join(devices[rank * gpus_each:(rank + 1) * gpus_each])
        inbox = context.Queue()
        process = context.Process(target=worker,
                                  args=(rank, gpus, llm_args, n, stop, inbox, outbox),
                                  daemon=True)
        process.start()
        workers.append((inbox, outbox, process))
    return workers


def deal_out(workers: list[Any], jobs: list[tuple[int, list[list[int]]]],
             params: SamplingParams, chunk_size: int) -> Iterator[tuple[int, Generation]]:
    """Give each replica a chunk, and its next chunk as soon as half of what it holds is done
    (so its engine never runs dry); yield every result the moment a replica sends it."""
    outbox = workers[0][1]
    waiting = list(reversed(jobs))
    holding = [0] * len(workers)
    left = sum(len(chunk) for _, chunk in jobs)

    def feed(rank: int) -> None:
        while waiting and holding[rank] <= chunk_size // 2:
            start, chunk = waiting.pop()
            workers[rank][0].put((start, chunk, params))
            holding[rank] += len(chunk)

    for rank in range(len(workers)):
        feed(rank)
    while left:
        rank, index, generation, error = outbox.get()
        if error is not None:
            raise RuntimeError(f"vLLM replica {rank} failed: {error}")
        holding[rank] -= 1
        left -= 1
        feed(rank)
        yield index, generation
