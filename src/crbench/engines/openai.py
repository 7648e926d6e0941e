"""The `openai` engine: any OpenAI-compatible server (vLLM, SGLang, llama.cpp's llama-server,
`transformers serve`, hosted APIs), over HTTP with httpx.

- A string prompt goes to `/completions`, a list of chat messages to `/chat/completions`
  (`chat=True` sends string prompts as one user message instead).
- Up to `concurrency` requests are in flight; results are yielded as they arrive.
- A timeout, a dropped connection, a 429 or a 5xx is retried up to `max_attempts` times in
  all, with exponential backoff and full jitter (a server's Retry-After is honoured, within
  `max_backoff_s`); each retry is logged. Other errors (400, 401, 404...) are not retried. A
  prompt that still fails is yielded as `GenerationFailed`, and the others go on.
- Token counts come from the server's `usage`; a server that sends none gets counted with
  the local tokenizer (`tokenizer` option, default: the model name), noted in
  `Generation.extra["usage"]`.
- A separate `reasoning_content` (vLLM, SGLang) or `reasoning` field becomes
  `Generation.reasoning`.
- Several servers: `endpoints = [URL, ...]` adds base URLs to `base_url`; prompt i's first
  request goes to endpoint i mod n and each retry to the next one, so work spreads over the
  servers and a dead one costs a retry, not the run (e.g. vLLM replicas without a router).
- The API key is read from the environment variable `api_key_env` for each run; it is never
  stored on the engine or logged.
- Budget forcing (`thinking_budget`, `min_thinking`; crbench/engines/budget.py) takes several
  completions per prompt: each request is capped at the thinking tokens left, its text is
  replayed token by token (local tokenizer) through the same control as the hf engine, and
  where it asks for an edit the next request sends the prompt + the kept text + `</think>` and
  the answer cue (or "Wait") to `/completions`. Chat prompts are rendered with the local
  tokenizer's chat template for that, since chat endpoints cannot continue an assistant turn
  everywhere (`transformers serve` cannot). `Generation.extra` says how many requests it took
  and how many tokens the server generated in all (`server_tokens`, discarded ones included).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Iterator
from typing import Any

from crbench.engines.base import Generation, GenerationFailed, Prompt, SamplingParams
from crbench.engines.budget import ThinkingControl, forcing_tokens, replay, stage_limit

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class RetryableError(Exception):
    """A failure worth another attempt; `wait_s` is what the server asked for, if anything."""

    def __init__(self, message: str, wait_s: float | None = None):
        super().__init__(message)
        self.wait_s = wait_s


class OpenAIEngine:
    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://localhost:8000/v1",
        endpoints: list[str] | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        chat: bool = False,
        concurrency: int = 8,
        timeout_s: float = 600.0,
        max_attempts: int = 6,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        tokenizer: str | None = None,
        extra_body: dict[str, Any] | None = None,
    ):
        if max_attempts < 1 or concurrency < 1:
            raise ValueError("max_attempts and concurrency must be at least 1")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.base_urls = [self.base_url, *(str(url).rstrip("/") for url in endpoints or [])]
        self.api_key_env = api_key_env
        self.chat = chat
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.tokenizer_name = tokenizer or model
        self.extra_body = dict(extra_body or {})
        self._tokenizer: Any = None

    # --- tokens ---------------------------------------------------------------------------

    def tokenizer(self) -> Any:
        """The local tokenizer, loaded on first need (token counts the server did not send)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from crbench.models import resolve_model

            self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(self.tokenizer_name))
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer()(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        pass

    # --- requests -------------------------------------------------------------------------

    def request_for(self, prompt: Prompt, params: SamplingParams) -> tuple[str, dict[str, Any]]:
        """(endpoint path, JSON body) for one prompt."""
        body = self.sampling_body(params)
        if isinstance(prompt, str) and not self.chat:
            return "/completions", {**body, "prompt": prompt}
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return "/chat/completions", {**body, "messages": messages}

    def sampling_body(self, params: SamplingParams) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            **self.extra_body,
        }

    def generate(
        self, prompts: list[Prompt], params: SamplingParams
    ) -> Iterator[tuple[int, Generation | GenerationFailed]]:
        import httpx

        headers = {}
        api_key = os.environ.get(self.api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        loop = asyncio.new_event_loop()
        clients = [
            httpx.AsyncClient(
                base_url=url,
                headers=headers,
                timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 30.0)),
                limits=httpx.Limits(max_connections=self.concurrency),
            )
            for url in self.base_urls
        ]
        pending: set[asyncio.Task] = set()
        try:
            gate = asyncio.Semaphore(self.concurrency)
            one = self._one_forced if params.forces_thinking else self._one
            pending = {
                loop.create_task(one(clients, gate, i, prompt, params))
                for i, prompt in enumerate(prompts)
            }
            # The loop runs only inside run_until_complete: between yields, requests wait.
            while pending:
                done, pending = loop.run_until_complete(
                    asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                )
                for task in done:
                    yield task.result()
        finally:
            if pending:  # the caller stopped early
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.wait(pending))
            for client in clients:
                loop.run_until_complete(client.aclose())
            loop.close()

    async def _one(
        self, clients: list[Any], gate: asyncio.Semaphore, index: int, prompt: Prompt,
        params: SamplingParams,
    ) -> tuple[int, Generation | GenerationFailed]:
        path, body = self.request_for(prompt, params)
        result = await self._post(clients, gate, index, path, body, prompt)
        return index, result

    async def _post(
        self, clients: list[Any], gate: asyncio.Semaphore, index: int, path: str,
        body: dict[str, Any],
        prompt: Prompt,
    ) -> Generation | GenerationFailed:
        """One request, retried as the module docstring says."""
        import httpx

        first_try = time.perf_counter()
        for attempt in range(1, self.max_attempts + 1):
            async with gate:
                started = time.perf_counter()
                try:
                    client = clients[(index + attempt - 1) % len(clients)]
                    response = await client.post(path, json=body)
                    data = checked_json(response)
                    generation = self.parse(data, prompt, time.perf_counter() - started)
                except (RetryableError, httpx.TimeoutException, httpx.TransportError) as exc:
                    error = describe(exc)
                    wait_s = getattr(exc, "wait_s", None)
                except httpx.HTTPStatusError as exc:  # not worth retrying: a request we got wrong
                    return GenerationFailed(index, describe(exc), attempt)
                else:
                    generation.extra.update(attempts=attempt,
                                            total_s=time.perf_counter() - first_try)
                    return generation
            if attempt == self.max_attempts:
                return GenerationFailed(index, error, attempt)
            delay = self.backoff_delay(attempt, wait_s)
            log.warning("prompt %d: attempt %d of %d failed (%s); retrying in %.1f s",
                        index, attempt, self.max_attempts, error, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _one_forced(
        self, clients: list[Any], gate: asyncio.Semaphore, index: int, prompt: Prompt,
        params: SamplingParams,
    ) -> tuple[int, Generation | GenerationFailed]:
        """Budget forcing in completions: see the module docstring."""
        tokenizer = self.tokenizer()
        text_prompt = self.completion_text(prompt)
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else -1
        control = ThinkingControl.start(params, forcing_tokens(tokenizer, params), [eos],
                                        self.decode, text_prompt)
        first = control.at_start()
        tokens: list[int] = list(first.insert) if first else []
        requests, server_tokens, prompt_tokens, wall_s = 0, 0, 0, 0.0
        finish = "length"
        while len(tokens) < params.max_new_tokens:
            limit = stage_limit(control, tokens, params)
            capped = limit < params.max_new_tokens - len(tokens)  # by the thinking budget
            body = {**self.sampling_body(params), "max_tokens": limit,
                    "prompt": text_prompt + self.decode(tokens)}
            stage = await self._post(clients, gate, index, "/completions", body, text_prompt)
            if isinstance(stage, GenerationFailed):
                return index, stage
            requests += 1
            server_tokens += stage.completion_tokens
            prompt_tokens = prompt_tokens or stage.prompt_tokens
            wall_s += stage.wall_s
            new = tokenizer(stage.text, add_special_tokens=False)["input_ids"]
            if replay(control, tokens, new):
                continue  # edited: ask again from the edited text
            if stage.finish_reason == "stop":  # the model ended it: min_thinking may say "Wait"
                tokens.append(eos)
                if replay(control, tokens, []):
                    continue
                tokens.pop()
                finish = "stop"
                break
            if capped and control.thinking:  # the server spent the budget, by its own count
                edit = control.force_close(tokens)
                tokens.extend(edit.insert if edit is not None else [])
                continue
            if not new:
                break
        return index, Generation(
            text=tokenizer.decode(tokens, skip_special_tokens=True),
            prompt_tokens=prompt_tokens, completion_tokens=len(tokens),
            finish_reason=finish, wall_s=wall_s, token_ids=tokens,
            extra={"thinking": control.record(), "requests": requests,
                   "server_tokens": server_tokens, "usage": "local tokenizer (budget forcing)"},
        )

    def completion_text(self, prompt: Prompt) -> str:
        """The prompt as completion text: strings as they are (unless `chat`), messages through
        the local chat template (assistant turn opened), without a BOS the server adds again."""
        if isinstance(prompt, str) and not self.chat:
            return prompt
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        tokenizer = self.tokenizer()
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                             tokenize=False)
        bos = tokenizer.bos_token
        adds_bos = bos is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
        return text.removeprefix(bos) if adds_bos and bos else text

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer().decode(ids, skip_special_tokens=False)

    def backoff_delay(self, attempt: int, wait_s: float | None) -> float:
        """Full jitter over an exponentially growing window; a server's Retry-After wins."""
        if wait_s is not None:
            return min(wait_s, self.max_backoff_s)
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))

    # --- responses ------------------------------------------------------------------------

    def parse(self, data: dict[str, Any], prompt: Prompt, wall_s: float) -> Generation:
        """A Generation from a completions or chat completions response body."""
        try:
            choice = data["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise RetryableError(f"response without choices: {str(data)[:200]}") from None
        message = choice.get("message") or {}
        text = message.get("content") if "message" in choice else choice.get("text")
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        extra: dict[str, Any] = {"finish_reason": choice.get("finish_reason")}
        usage = data.get("usage") or {}
        if isinstance(usage.get("completion_tokens"), int):
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = usage["completion_tokens"]
            extra["usage"] = "server"
        else:
            from crbench.engines.prompts import encode_prompt

            prompt_tokens = len(encode_prompt(self.tokenizer(), prompt))
            completion_tokens = self.count_tokens((reasoning or "") + (text or ""))
            extra["usage"] = "local tokenizer (the server sent no usage)"
        return Generation(
            text=text or "",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish,
            wall_s=wall_s,
            reasoning=reasoning,
            extra=extra,
        )


def checked_json(response: Any) -> dict[str, Any]:
    """The body of a successful response; RetryableError for statuses worth retrying and for
    a body that is not JSON; httpx.HTTPStatusError for the rest."""
    if response.status_code in RETRY_STATUS:
        raise RetryableError(f"HTTP {response.status_code}: {response.text[:200]}",
                             retry_after(response.headers.get("retry-after")))
    response.raise_for_status()
    try:
        return response.json()
    except ValueError:
        raise RetryableError(f"response is not JSON: {response.text[:200]!r}") from None


def retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date; our own backoff is good enough


def describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
