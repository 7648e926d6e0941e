"""vLLM's request-level API, driven request by request (used by crbench/engines/vllm.py).

`RequestLoop(engine)` takes vLLM's `LLMEngine` (`LLM(...).llm_engine`): `submit` adds one
request per prompt (`add_request`), `step` runs one engine step and returns the prompts that
finished in it. Requests ask for their final output only (`RequestOutputKind.FINAL_ONLY`, as
`LLM.generate` does). Budget forcing sends follow-up requests (see crbench/engines/budget.py).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from crbench.engines.base import Generation, SamplingParams
from crbench.engines.budget import ThinkingControl, forcing_tokens, replay, stage_limit
from crbench.engines.prompts import prompt_seed


@dataclass
class Request:
    """One prompt in flight: its current vLLM request, and under budget forcing what it has
    generated so far."""

    index: int
    prompt_ids: list[int]
    params: SamplingParams
    control: ThinkingControl | None = None
    tokens: list[int] = field(default_factory=list)
    requests: int = 0
    capped: bool = False  # the current request stops at the thinking budget, not max_new_tokens
    cost_s: float = 0.0


def vllm_sampling(arguments: dict[str, Any]) -> Any:
    """A `vllm.SamplingParams` that returns only the final output."""
    from vllm import SamplingParams as VLLMSamplingParams

    params = VLLMSamplingParams(**arguments)
    try:
        from vllm.sampling_params import RequestOutputKind

        params.output_kind = RequestOutputKind.FINAL_ONLY
    except ImportError:  # older vLLM: every step reports; `finished` still says when
        pass
    return params


class RequestLoop:
    def __init__(self, engine: Any, tokenizer: Any, *, n: int = 1, stop: list[str] | None = None,
                 make_sampling: Callable[[dict[str, Any]], Any] = vllm_sampling):
        self.engine = engine
        self.tokenizer = tokenizer
        self.n, self.stop = n, stop
        self.make_sampling = make_sampling
        self.live: dict[str, Request] = {}
        self.ids = itertools.count()
        eos = tokenizer.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else []

    def run(self, prompts: list[tuple[int, list[int]]], params: SamplingParams
            ) -> Iterator[tuple[int, Generation]]:
        """Submit every prompt, then step until all are done, yielding each as it finishes."""
        for index, ids in prompts:
            self.submit(index, ids, params)
        while self.busy():
            yield from self.step()

    def busy(self) -> bool:
        return bool(self.live)

    def submit(self, index: int, prompt_ids: list[int], params: SamplingParams) -> None:
        request = Request(index, list(prompt_ids), params)
        if params.forces_thinking:
            if self.n > 1:
                raise ValueError("budget forcing takes one sample per request (n = 1)")
            decode = self._decode
            request.control = ThinkingControl.start(
                params, forcing_tokens(self.tokenizer, params), self.eos_ids, decode,
                decode(request.prompt_ids))
            first = request.control.at_start()
            request.tokens.extend(first.insert if first else [])
        self._send(request)

    def step(self) -> list[tuple[int, Generation]]:
        """One engine step; the prompts that finished in it."""
        from crbench.engines.vllm import to_generation

        started = time.perf_counter()
        outputs = self.engine.step()
        share = (time.perf_counter() - started) / max(1, len(self.live))
        for request in self.live.values():
            request.cost_s += share
        finished = []
        for output in outputs:
            if not output.finished or output.request_id not in self.live:
                continue
            request = self.live.pop(output.request_id)
            if request.control is None:
                finished.append((request.index, to_generation(output, request.cost_s)))
            elif (generation := self._next_stage(request, output.outputs[0])) is not None:
                finished.append((request.index, generation))
        return finished

    # --- budget forcing in stages ----------------------------------------------------------------

    def _send(self, request: Request) -> None:
        from crbench.engines.vllm import sampling_arguments

        arguments = sampling_arguments(request.params, request.prompt_ids, n=self.n,
                                       stop=self.stop)
        if request.control is not None:
            room = request.params.max_new_tokens - len(request.tokens)
            arguments["max_tokens"] = stage_limit(request.control, request.tokens,
                                                  request.params)
            request.capped = arguments["max_tokens"] < room
            if request.requests and arguments["seed"] is not None:  # a stage's own seed
                arguments["seed"] = prompt_seed(request.params.seed,
                                                request.prompt_ids + request.tokens)
        request_id = f"crbench-{next(self.ids)}"
        self.engine.add_request(request_id,
                                {"prompt_token_ids": request.prompt_ids + request.tokens},
                                self.make_sampling(arguments))
        self.live[request_id] = request
        request.requests += 1

    def _next_stage(self, request: Request, completion: Any) -> Generation | None:
        """Replay a finished stage through the control: send the next stage (None), or the
        finished Generation."""
        control, tokens, params = request.control, request.tokens, request.params
        assert control is not None
        if replay(control, tokens, list(completion.token_ids)):
            return self._resend_or_finish(request)
        if completion.finish_reason == "length" and len(tokens) < params.max_new_tokens:
            if request.capped and control.thinking:  # the budget is spent
                edit = control.force_close(tokens)
                tokens.extend(edit.insert if edit is not None else [])
            return self._resend_or_finish(request)
        finish = "length" if len(tokens) >= params.max_new_tokens else "stop"
        return self._generation(request, finish)

    def _resend_or_finish(self, request: Request) -> Generation | None:
        if len(request.tokens) >= request.params.max_new_tokens:
            del request.tokens[request.params.max_new_tokens:]
            return self._generation(request, "length")
        self._send(request)
        return None

    def _generation(self, request: Request, finish: str) -> Generation:
        assert request.control is not None
        return Generation(
            text=self.tokenizer.decode(request.tokens, skip_special_tokens=True),
            prompt_tokens=len(request.prompt_ids), completion_tokens=len(request.tokens),
            finish_reason=finish, wall_s=request.cost_s, token_ids=list(request.tokens),
            extra={"thinking": request.control.record(), "requests": request.requests},
        )

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)
