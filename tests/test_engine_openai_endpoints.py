"""The openai engine over several servers: requests spread over the endpoints, and a dead one
costs a retry on the next endpoint, not the prompt."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from crbench.engines.base import Generation, SamplingParams
from crbench.engines.openai import OpenAIEngine


def echo_server(name: str, hits: Counter[str]) -> ThreadingHTTPServer:
    class Echo(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            hits[name] += 1
            answer = {"choices": [{"text": f"{name}:{body['prompt']}", "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


@pytest.fixture
def servers() -> Iterator[tuple[list[str], Counter[str]]]:
    hits: Counter[str] = Counter()
    live = [echo_server("a", hits), echo_server("b", hits)]
    urls = [f"http://127.0.0.1:{s.server_address[1]}/v1" for s in live]
    yield urls, hits
    for s in live:
        s.shutdown()


def test_requests_spread_over_endpoints_and_skip_a_dead_one(servers) -> None:
    (a, b), hits = servers
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    engine = OpenAIEngine("m", base_url=a, endpoints=[dead, b], max_attempts=3, backoff_s=0.01,
                          max_backoff_s=0.02, timeout_s=10)
    prompts = [f"p{i}" for i in range(12)]
    results = dict(engine.generate(prompts, SamplingParams(max_new_tokens=4)))
    assert sorted(results) == list(range(12))
    for i, result in results.items():
        assert isinstance(result, Generation), result
        server, _, prompt = result.text.partition(":")
        assert prompt == f"p{i}"
        # First try on endpoint i mod 3; the dead one (1) hands its prompts on to b.
        assert server == {0: "a", 1: "b", 2: "b"}[i % 3]
        assert result.extra["attempts"] == (2 if i % 3 == 1 else 1)
    assert hits == Counter({"a": 4, "b": 8})


def test_one_endpoint_is_the_default(servers) -> None:
    (a, _), hits = servers
    engine = OpenAIEngine("m", base_url=a)
    results = dict(engine.generate(["x", "y"], SamplingParams(max_new_tokens=4)))
    assert [r.text for _, r in sorted(results.items()) if isinstance(r, Generation)] == [
        "a:x", "a:y"]
    assert hits == Counter({"a": 2})
