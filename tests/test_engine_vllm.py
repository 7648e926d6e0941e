"""The vllm and llamacpp engines without their libraries: how our settings map to their
arguments, and how their result objects become Generations (plain objects with the same
attributes and keys as vLLM's RequestOutput and llama-cpp-python's responses)."""

from __future__ import annotations

import importlib.util
import queue
import threading
from types import SimpleNamespace

import pytest

from crbench.engines import SamplingParams, llamacpp, make_engine, vllm
from crbench.engines.prompts import prompt_seed

GREEDY = SamplingParams(max_new_tokens=64)
SAMPLED = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=128, seed=3)


def completion(text, token_ids, finish_reason, stop_reason=None):
    return SimpleNamespace(index=0, text=text, token_ids=token_ids, cumulative_logprob=None,
                           logprobs=None, finish_reason=finish_reason, stop_reason=stop_reason)


def request_output(prompt_ids, outputs, cached=None):
    return SimpleNamespace(request_id="0", prompt=None, prompt_token_ids=prompt_ids,
                           outputs=outputs, finished=True, num_cached_tokens=cached)


def test_vllm_llm_arguments():
    args = vllm.llm_arguments("/models/r1", tensor_parallel_size=4, max_model_len=32768,
                              gpu_memory_utilization=0.85, quantization="awq")
    assert args == {"model": "/models/r1", "tensor_parallel_size": 4, "dtype": "auto",
                    "gpu_memory_utilization": 0.85, "trust_remote_code": False, "seed": 0,
                    "enforce_eager": False, "max_model_len": 32768, "quantization": "awq"}
    assert "max_model_len" not in vllm.llm_arguments("m")


def test_vllm_sampling_arguments():
    greedy = vllm.sampling_arguments(GREEDY, [1, 2, 3])
    assert greedy == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "seed": None}
    sampled = vllm.sampling_arguments(SAMPLED, [1, 2, 3], n=4, stop=["</answer>"])
    assert sampled == {"n": 4, "temperature": 0.6, "top_p": 0.95, "max_tokens": 128,
                       "seed": prompt_seed(3, [1, 2, 3]), "stop": ["</answer>"]}
    # seeds: the prompt's own, stable, different across prompts and run seeds
    assert vllm.sampling_arguments(SAMPLED, [1, 2, 3])["seed"] == sampled["seed"]
    assert vllm.sampling_arguments(SAMPLED, [1, 2, 4])["seed"] != sampled["seed"]
    other_run = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=128, seed=4)
    assert vllm.sampling_arguments(other_run, [1, 2, 3])["seed"] != sampled["seed"]
    assert 0 <= sampled["seed"] < 2**63


def test_vllm_request_output_to_generation():
    out = request_output([5, 6, 7], [completion("<think>hm</think> 42", [9, 10, 11, 2], "stop",
                                                2)], cached=2)
    gen = vllm.to_generation(out, 0.25)
    assert (gen.text, gen.prompt_tokens, gen.completion_tokens) == ("<think>hm</think> 42", 3, 4)
    assert gen.finish_reason == "stop" and not gen.hit_limit
    assert gen.token_ids == [9, 10, 11, 2] and gen.wall_s == 0.25
    assert gen.extra["stop_reason"] == 2 and gen.extra["cached_prompt_tokens"] == 2
    assert "samples" not in gen.extra

    several = request_output([5], [completion("a", (1, 2), "length"),
                                   completion("b", [3], "stop", "</answer>")])
    gen = vllm.to_generation(several, 1.0)
    assert gen.finish_reason == "length" and gen.hit_limit and gen.completion_tokens == 2
    assert gen.extra["samples"] == [{"text": "b", "completion_tokens": 1,
                                     "finish_reason": "stop", "token_ids": [3]}]


# --- the request-level loop, on a scripted engine with vLLM's request API -------------------


class ScriptedEngine:
    """vLLM's `LLMEngine` request API (add_request, step) over a deterministic "model": each
    step, every running request gets the next token `model(context)`; a request finishes on EOS
    or at its max_tokens, and (FINAL_ONLY) is reported only then."""

    def __init__(self, model):
        self.model = model
        self.running: dict = {}
        self.steps = 0
        self.added: list = []  # (step, request id, prompt ids, sampling)

    def add_request(self, request_id, prompt, params):
        self.added.append((self.steps, request_id, list(prompt["prompt_token_ids"]), params))
        self.running[request_id] = (list(prompt["prompt_token_ids"]), params, [])

    def step(self):
        self.steps += 1
        outputs = []
        for request_id, (ids, params, produced) in list(self.running.items()):
            token = self.model(ids + produced)
            produced.append(token)
            finish = "stop" if token == EOS else (
                "length" if len(produced) >= params["max_tokens"] else None)
            if finish:
                del self.running[request_id]
                out = request_output(ids, [completion(f"t{len(produced)}", list(produced),
                                                      finish)])
                out.request_id = request_id
                outputs.append(out)
        return outputs


EOS = 2  # SmolLM2's <|im_end|>


@pytest.fixture(scope="module")
def tokenizer(demo_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model)


def loop_over(engine, tokenizer, **options):
    return vllm.RequestLoop(engine, tokenizer, make_sampling=dict, **options)


def test_every_prompt_is_submitted_at_once_and_yielded_the_step_it_finishes(tokenizer):
    lengths = {10: 5, 11: 40, 12: 2}  # first prompt token -> tokens until EOS

    def model(context):
        produced = len(context) - 1
        return EOS if produced + 1 >= lengths[context[0]] else 100 + produced

    engine = ScriptedEngine(model)
    order = []
    for index, gen in loop_over(engine, tokenizer).run([(0, [10]), (1, [11]), (2, [12])],
                                                       SamplingParams(max_new_tokens=30)):
        order.append((index, engine.steps, gen.completion_tokens, gen.finish_reason))
    assert all(step == 0 for step, *_ in engine.added)  # no chunk waits for another
    assert order == [(2, 2, 2, "stop"), (0, 5, 5, "stop"), (1, 30, 30, "length")]
    assert [a[3]["seed"] for a in engine.added] == [None] * 3  # greedy


def thinking_model(tokenizer, text):
    """A model that writes `text` (then EOS) after whatever prompt it gets, continuing from
    how much of the completion is already there."""
    script = tokenizer(text, add_special_tokens=False)["input_ids"] + [EOS]

    def model(context):
        produced = len(context) - model.prompt_length
        return script[produced] if produced < len(script) else EOS

    return model


def test_budget_forcing_in_stages_with_exact_token_ids(tokenizer):
    prompt = tokenizer("Q: what is 2+2?\n<think>\n")["input_ids"]
    model = thinking_model(tokenizer, "Let me count: one, two, three, four, five, six, seven,"
                                      " eight, nine, ten. So it is 4.</think> 4")
    model.prompt_length = len(prompt)
    engine = ScriptedEngine(model)
    params = SamplingParams(max_new_tokens=60, thinking_budget=8)
    (index, gen), = loop_over(engine, tokenizer).run([(0, prompt)], params)
    close = tokenizer("</think>\n\nFinal answer: ", add_special_tokens=False)["input_ids"]
    assert gen.token_ids[8:8 + len(close)] == close
    assert gen.extra["thinking"]["forced_close"] and gen.extra["thinking"]["thinking_tokens"] == 8
    assert gen.extra["requests"] == 2
    # the first request stops at the budget; the second continues from the exact token ids
    (_, _, first_ids, first), (_, _, second_ids, second) = [a for a in engine.added]
    assert first["max_tokens"] == 8 and first_ids == prompt
    assert second_ids == prompt + gen.token_ids[:8] + close
    assert second["max_tokens"] == 60 - 8 - len(close)
    assert gen.completion_tokens == len(gen.token_ids) <= 60


def test_min_thinking_in_stages_says_wait(tokenizer):
    prompt = tokenizer("Q: 2+2?\n<think>")["input_ids"]
    model = thinking_model(tokenizer, "It is 4.</think> 4 and more words to say here")
    model.prompt_length = len(prompt)
    engine = ScriptedEngine(model)
    params = SamplingParams(max_new_tokens=40, min_thinking=12)
    (_, gen), = loop_over(engine, tokenizer).run([(0, prompt)], params)
    record = gen.extra["thinking"]
    assert record["waits"] >= 1 and gen.extra["requests"] >= 2
    wait = tokenizer("Wait", add_special_tokens=False)["input_ids"]
    second_ids = engine.added[1][2]
    assert second_ids[-len(wait):] == wait
    assert "</think>" not in tokenizer.decode(second_ids[len(prompt):])
    with pytest.raises(ValueError, match="n = 1"):
        loop_over(engine, tokenizer, n=2).submit(0, prompt, params)


def test_replicas_get_chunks_as_they_drain_and_send_each_result_back(tokenizer):
    """deal_out with two in-process replicas, each serving a RequestLoop over a scripted
    engine through the same queues as the worker processes."""
    outbox = queue.Queue()
    workers, loops = [], []

    def model(context):
        return EOS if len(context) >= 1 + context[0] % 5 else 7

    for rank in range(2):
        inbox = queue.Queue()
        loops.append(loop_over(ScriptedEngine(model), tokenizer))
        threading.Thread(target=vllm.serve, args=(loops[-1], rank, inbox, outbox),
                         daemon=True).start()
        workers.append((inbox, outbox, None))
    prompts = [[n] for n in range(9)]
    jobs = [(s, prompts[s:s + 2]) for s in range(0, 9, 2)]
    results = dict(vllm.deal_out(workers, jobs, SamplingParams(max_new_tokens=8), 2))
    for inbox, _, _ in workers:
        inbox.put(None)
    assert sorted(results) == list(range(9))
    assert all(results[n].completion_tokens == n % 5 + 1 for n in range(9))
    assert all(loop.engine.added for loop in loops)  # both replicas worked


def test_vllm_replica_error_is_raised():
    outbox = queue.Queue()
    inbox = queue.Queue()
    outbox.put((0, None, None, "RuntimeError: CUDA out of memory"))
    with pytest.raises(RuntimeError, match="replica 0 failed: RuntimeError: CUDA out of memory"):
        list(vllm.deal_out([(inbox, outbox, None)], [(0, [[1]])], GREEDY, 4))


def test_llamacpp_arguments():
    assert llamacpp.llama_arguments("m.gguf", n_gpu_layers=-1, n_threads=2) == {
        "model_path": "m.gguf", "n_ctx": 8192, "n_gpu_layers": -1, "n_batch": 512, "seed": 0,
        "verbose": False, "n_threads": 2}
    args = llamacpp.completion_arguments("Hi", SAMPLED, stop=["\n\n"])
    assert args == {"prompt": "Hi", "max_tokens": 128, "temperature": 0.6, "top_p": 0.95,
                    "top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0,
                    "seed": prompt_seed(3, "Hi"), "stop": ["\n\n"]}
    chat = [{"role": "user", "content": "Hi"}]
    args = llamacpp.completion_arguments(chat, GREEDY)
    assert args["messages"] == chat and "prompt" not in args and args["temperature"] == 0.0


def test_llamacpp_response_to_generation():
    response = {"id": "cmpl-1", "object": "text_completion",
                "choices": [{"text": " Paris.", "index": 0, "logprobs": None,
                             "finish_reason": "length"}],
                "usage": {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}}
    gen = llamacpp.to_generation(response, 0.5)
    assert (gen.text, gen.prompt_tokens, gen.completion_tokens, gen.finish_reason) == (
        " Paris.", 6, 3, "length")
    chat = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "4"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}}
    gen = llamacpp.to_generation(chat, 0.5)
    assert (gen.text, gen.completion_tokens, gen.finish_reason) == ("4", 2, "stop")


@pytest.mark.parametrize("kind,module", [("vllm", "vllm"), ("llamacpp", "llama_cpp")])
def test_missing_library_says_what_to_install(kind, module):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    with pytest.raises(ImportError, match=rf"crbench\[{kind}\]"):
        make_engine(kind, "some-model")
