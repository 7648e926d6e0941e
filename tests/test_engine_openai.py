"""The openai engine against real server processes: `transformers serve` on the demo model,
and a fault-injecting proxy (tests/engine_fault_proxy.py) in front of it."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from crbench.engines import SamplingParams, make_engine
from crbench.engines.base import Generation, GenerationFailed

VENV_BIN = Path(sys.executable).parent
PROXY = Path(__file__).parent / "engine_fault_proxy.py"
CHAT = [{"role": "user", "content": "What is 7 times 8? Answer briefly."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, limit_s: float = 180) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not come up in {limit_s} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def served_model(demo_model, tmp_path_factory) -> Path:
    """The demo model folder as `transformers serve` wants it: it picks the model class from
    config.json's `architectures`, which the GGUF conversion does not write."""
    folder = tmp_path_factory.mktemp("served") / "smollm2"
    folder.mkdir()
    for file in demo_model.iterdir():
        if file.name != "config.json":
            (folder / file.name).symlink_to(file)
    config = json.loads((demo_model / "config.json").read_text())
    config.setdefault("architectures", ["LlamaForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def start_server(model: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen(
        [str(VENV_BIN / "transformers"), "serve", str(model), "--port", str(port),
         "--host", "127.0.0.1", "--device", "cpu"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process)
    except Exception:
        stop(process)
        raise
    return process


def warm_up(url: str, model: Path) -> None:
    """One tiny completion: `transformers serve` loads the model on its first request, which
    on a busy machine takes longer than the short client timeouts the fault test uses."""
    body = json.dumps({"model": str(model), "prompt": "Hi", "max_tokens": 1}).encode()
    request = urllib.request.Request(f"{url}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300):
        pass


@pytest.fixture(scope="module")
def server(served_model):
    port = free_port()
    process = start_server(served_model, port)
    warm_up(f"http://127.0.0.1:{port}", served_model)
    yield f"http://127.0.0.1:{port}"
    stop(process)


@pytest.fixture(scope="module")
def proxy(server):
    port = free_port()
    process = subprocess.Popen([sys.executable, str(PROXY), str(port), server])
    wait_until_up(f"http://127.0.0.1:{port}/_attempts", process, limit_s=30)
    yield f"http://127.0.0.1:{port}"
    stop(process)


def proxy_attempts(proxy: str) -> dict:
    with urllib.request.urlopen(f"{proxy}/_attempts", timeout=5) as response:
        return json.loads(response.read())


def test_completions_and_chat_match_the_hf_engine(server, served_model):
    prompts = ["The capital of France is", CHAT, "def fibonacci(n):"]
    params = SamplingParams(max_new_tokens=10)
    remote = make_engine("openai", str(served_model), base_url=f"{server}/v1", concurrency=3)
    local = make_engine("hf", str(served_model))
    got = dict(remote.generate(prompts, params))
    expected = dict(local.generate(prompts, params))
    assert sorted(got) == [0, 1, 2]
    for i in range(3):
        assert got[i].text == expected[i].text, i
        assert got[i].prompt_tokens == expected[i].prompt_tokens, i
        assert got[i].completion_tokens == expected[i].completion_tokens, i
        assert got[i].finish_reason == expected[i].finish_reason == "length"
        assert got[i].extra["usage"] == "server"
    # forcing chat sends a string prompt as one user message
    forced = make_engine("openai", str(served_model), base_url=f"{server}/v1", chat=True)
    as_chat = dict(forced.generate([CHAT[0]["content"]], params))[0]
    assert as_chat.text == expected[1].text


def test_faults_are_retried_a_bounded_number_of_times_and_failures_reported(
    proxy, served_model, caplog, monkeypatch
):
    monkeypatch.setenv("CRBENCH_TEST_KEY", "sk-test-secret")
    faults = ["500x2", "429x1", "hang", "cut", "garbage", "nousage", "always500", "400"]
    prompts = [f"[fault:{name}] Count to three:" for name in faults] + ["Count to three:"]
    engine = make_engine(
        "openai", str(served_model), base_url=f"{proxy}/v1", api_key_env="CRBENCH_TEST_KEY",
        concurrency=3, timeout_s=4.5, max_attempts=3, backoff_s=0.05, max_backoff_s=0.5,
    )
    assert "sk-test-secret" not in repr(vars(engine))
    with caplog.at_level(logging.WARNING, logger="crbench.engines.openai"):
        results = dict(engine.generate(prompts, SamplingParams(max_new_tokens=3)))
    assert sorted(results) == list(range(len(prompts)))  # every prompt answered, once
    by_fault = dict(zip(faults + ["clean"], (results[i] for i in range(len(prompts))),
                        strict=True))

    expected_attempts = {"500x2": 3, "429x1": 2, "hang": 2, "cut": 2, "garbage": 2,
                         "nousage": 1, "clean": 1}
    for name, attempts in expected_attempts.items():
        gen = by_fault[name]
        assert isinstance(gen, Generation), (name, gen)
        assert gen.extra["attempts"] == attempts, name
        assert gen.text and gen.completion_tokens >= 1
    counted = by_fault["nousage"]
    assert counted.extra["usage"].startswith("local tokenizer")
    assert counted.prompt_tokens == len(engine.tokenizer()(prompts[5])["input_ids"])
    assert counted.completion_tokens == engine.count_tokens(counted.text)

    failed = by_fault["always500"]
    assert isinstance(failed, GenerationFailed)
    assert (failed.index, failed.attempts) == (faults.index("always500"), 3)
    assert "500" in failed.error
    refused = by_fault["400"]
    assert isinstance(refused, GenerationFailed) and refused.attempts == 1  # not retried

    seen = proxy_attempts(proxy)
    assert seen["always500"] == 3 and seen["400"] == 1 and seen["500x2"] == 3
    assert seen["auth:Bearer sk-test-secret"] == sum(v for k, v in seen.items()
                                                    if not k.startswith("auth:"))
    logged = [r.getMessage() for r in caplog.records]
    for i, result in results.items():  # one warning per retry, naming the prompt
        retries = sum(m.startswith(f"prompt {i}: attempt") for m in logged)
        assert retries == result.attempts - 1 if isinstance(result, GenerationFailed) else (
            retries == result.extra["attempts"] - 1), i
    assert not any("sk-test-secret" in m for m in logged)


@pytest.mark.slow
def test_server_killed_and_restarted_mid_run(served_model):
    port = free_port()
    server = start_server(served_model, port)
    restarted: list[subprocess.Popen] = []

    def kill_and_restart():
        stop(server)
        time.sleep(1.0)
        restarted.append(start_server(served_model, port))

    engine = make_engine(
        "openai", str(served_model), base_url=f"http://127.0.0.1:{port}/v1", concurrency=2,
        max_attempts=30, backoff_s=0.5, max_backoff_s=3.0, timeout_s=60,
    )
    prompts = [f"Story number {n}: once upon a time" for n in range(6)]
    results = {}
    thread = None
    try:
        for i, gen in engine.generate(prompts, SamplingParams(max_new_tokens=6)):
            results[i] = gen
            if thread is None:  # the first answer is in: pull the plug
                thread = threading.Thread(target=kill_and_restart)
                thread.start()
        thread.join()
    finally:
        for process in [server, *restarted]:
            stop(process)
    assert sorted(results) == list(range(6))
    assert all(isinstance(gen, Generation) and gen.text for gen in results.values())
    assert max(gen.extra["attempts"] for gen in results.values()) > 1  # some saw the outage


def test_parse_reads_reasoning_usage_and_finish_reason(served_model):
    engine = make_engine("openai", str(served_model))
    chat = {"choices": [{"message": {"content": "The answer is 4.",
                                     "reasoning_content": "2 + 2 = 4"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 12}}
    gen = engine.parse(chat, CHAT, 0.5)
    assert (gen.text, gen.reasoning, gen.prompt_tokens, gen.completion_tokens) == (
        "The answer is 4.", "2 + 2 = 4", 9, 12)
    assert gen.finish_reason == "stop" and not gen.hit_limit
    other = {"choices": [{"message": {"content": None, "reasoning": "thinking..."},
                          "finish_reason": "length"}]}
    gen = engine.parse(other, "hello", 0.1)
    assert (gen.text, gen.reasoning, gen.finish_reason) == ("", "thinking...", "length")
    assert gen.completion_tokens == engine.count_tokens("thinking...")
    assert gen.prompt_tokens == len(engine.tokenizer()("hello")["input_ids"])
    completion = {"choices": [{"text": " Paris", "finish_reason": "eos"}],
                  "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    gen = engine.parse(completion, "The capital of France is", 0.1)
    assert (gen.text, gen.reasoning, gen.finish_reason) == (" Paris", None, "stop")


def test_request_bodies(served_model):
    engine = make_engine("openai", "my-model", extra_body={"top_k": 20})
    params = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=99, seed=3)
    path, body = engine.request_for("Hi", params)
    assert path == "/completions"
    assert body == {"model": "my-model", "prompt": "Hi", "max_tokens": 99, "temperature": 0.6,
                    "top_p": 0.95, "seed": 3, "top_k": 20}
    path, body = engine.request_for(CHAT, params)
    assert path == "/chat/completions" and body["messages"] == CHAT and "prompt" not in body
