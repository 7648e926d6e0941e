"""Budget forcing (thinking_budget, min_thinking): the per-sequence control on hand-made token
streams, then the hf engine on the real demo model, checked token by token.

SmolLM2 does not think by itself; a prompt prefilled with `<think>` makes it think, and a
few-shot prompt whose examples close their thinking early makes it write `</think>` (three
tokens: "</", "think", ">") after about nine tokens, so min_thinking has something to suppress.
"""

from __future__ import annotations

import pytest
import torch

from crbench.engines import SamplingParams, make_engine
from crbench.engines.budget import ANSWER_CUE, WAIT_TEXT, ForcingTokens, ThinkingControl

FEW_SHOT = ("Q: 2+2?\n<think>2 plus 2 makes 4.</think> 4\nQ: 3+5?\n<think>3 plus 5 makes 8."
            "</think> 8\nQ: 7+6?\n<think>")
OPEN_ENDED = ("Question: Emily went to the beach. Between what times could she have gone? "
              "Think first.\n<think>\n")
EOS = 0


# --- the control alone: one character per token ----------------------------------------------


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def text_of(ids: list[int]) -> str:
    return "".join("<eos>" if i == EOS else chr(i) for i in ids)


def control(prompt: str = "<think>", **params) -> ThinkingControl:
    forced = ForcingTokens(close=chars("</think>" + "|A:"), wait=chars("W"))
    return ThinkingControl.start(SamplingParams(max_new_tokens=100, **params), forced, [EOS],
                                 text_of, prompt)


def feed(ctl: ThinkingControl, sampled: str) -> list[int]:
    """Run `sampled` (one char per step, as the model would sample them) through the control,
    applying its edits as an engine does; the completion."""
    tokens: list[int] = []
    first = ctl.at_start()
    queue: list[int] = list(first.insert) if first else []
    for char in sampled:
        if queue:
            tokens.append(queue.pop(0))
            continue
        tokens.append(ord(char) if char != "$" else EOS)
        edit = ctl.step(tokens)
        if edit is not None:
            del tokens[len(tokens) - edit.drop:]
            queue = list(edit.insert)
        elif tokens[-1] == EOS:
            break
    return tokens


def test_budget_closes_after_exactly_n_thinking_tokens():
    ctl = control(thinking_budget=5)
    out = text_of(feed(ctl, "abcdefghijklmnopqrst"))
    assert out.startswith("abcde</think>|A:")
    assert ctl.record()["thinking_tokens"] == 5 and ctl.record()["forced_close"]
    assert ctl.record()["inserted"] == [[5, len("</think>|A:")]]


def test_natural_close_within_budget_is_left_alone():
    ctl = control(thinking_budget=50)
    assert text_of(feed(ctl, "abc</think>answer")) == "abc</think>answer"
    record = ctl.record()
    assert record["closed"] and not record["forced_close"] and record["thinking_tokens"] == 3


def test_early_close_becomes_wait_until_min_thinking():
    ctl = control(min_thinking=6)
    out = text_of(feed(ctl, "ab</think>xyz</think>answer"))
    # "ab" + "</think>" (dropped, all 8 tokens) -> "W"; then the model's next chars go on
    assert out.startswith("abW")
    assert ctl.record()["waits"] >= 1
    thinking = out.split("</think>")[0]
    assert len(thinking) >= 6


def test_end_of_sequence_inside_thinking_is_a_wait_too():
    ctl = control(min_thinking=4)
    out = text_of(feed(ctl, "ab$cdefg$"))  # the sampled "c" is replaced by the inserted "W"
    assert out == "abWdefg<eos>"
    assert ctl.record()["waits"] == 1


def test_thinking_opened_by_the_model_and_budget_zero():
    ctl = control(prompt="Q:", thinking_budget=3)
    out = text_of(feed(ctl, "hmm <think>abcdefghijklmnopqrstuvwxyz"))
    assert out.startswith("hmm <think>abc</think>")
    assert ctl.record()["thinking_tokens"] == 3
    zero = control(thinking_budget=0)
    assert text_of(feed(zero, "abcdefghijklmn")).startswith("</think>|A:")
    assert zero.record()["thinking_tokens"] == 0


def test_min_above_budget_is_refused():
    with pytest.raises(ValueError, match="above thinking_budget"):
        SamplingParams(thinking_budget=4, min_thinking=5)


# --- the hf engine on the demo model ----------------------------------------------------------


@pytest.fixture(scope="module")
def engine(demo_model):
    engine = make_engine("hf", str(demo_model), batch_size=2, dtype="float32")
    yield engine
    engine.close()


def close_ids(engine) -> list[int]:
    return engine.tokenizer("</think>" + ANSWER_CUE, add_special_tokens=False)["input_ids"]


def thinking_length(engine, tokens: list[int]) -> int:
    """Tokens before the first token sequence spelling `</think>` (all, if none)."""
    tag = engine.tokenizer("</think>", add_special_tokens=False)["input_ids"]
    for i in range(len(tokens) - len(tag) + 1):
        if tokens[i:i + len(tag)] == tag:
            return i
    return len(tokens)


def greedy_mismatches(engine, prompt: str, tokens: list[int]) -> set[int]:
    """Positions where the output is not the model's greedy choice given everything before
    it (one teacher-forced forward over prompt + output)."""
    prompt_ids = engine.encode(prompt)
    ids = torch.tensor([prompt_ids + tokens])
    with torch.inference_mode():
        logits = engine.model(input_ids=ids).logits[0]
    choice = logits[len(prompt_ids) - 1:-1].argmax(-1).tolist()
    return {i for i, (a, b) in enumerate(zip(choice, tokens, strict=True)) if a != b}


def inserted_positions(record: dict) -> set[int]:
    return {start + k for start, length in record["inserted"] for k in range(length)}


@pytest.mark.slow
def test_hf_thinking_never_exceeds_the_budget(engine):
    budget = 12
    params = SamplingParams(max_new_tokens=40, thinking_budget=budget)
    prompts = [FEW_SHOT, OPEN_ENDED, OPEN_ENDED + "Let me see.", FEW_SHOT + "7 plus"]
    results = dict(engine.generate(prompts, params))  # batch of 2: rows leave and join
    assert sorted(results) == [0, 1, 2, 3]
    forced = 0
    for i, gen in results.items():
        tokens, record = gen.token_ids, gen.extra["thinking"]
        assert len(tokens) == gen.completion_tokens <= 40
        assert thinking_length(engine, tokens) <= budget, i
        if record["forced_close"]:
            forced += 1
            assert record["thinking_tokens"] == budget
            assert tokens[budget:budget + len(close_ids(engine))] == close_ids(engine)
        else:  # the few-shot prompt closes its thinking by itself, within the budget
            assert record["thinking_tokens"] == thinking_length(engine, tokens) < budget
        # every token not inserted by the forcing is the model's greedy choice after it
        assert greedy_mismatches(engine, prompts[i], tokens) <= inserted_positions(record), i
    assert forced >= 2


@pytest.mark.slow
def test_hf_min_thinking_replaces_an_early_close_by_wait(engine):
    params = SamplingParams(max_new_tokens=40, min_thinking=16)
    gen = dict(engine.generate([FEW_SHOT], params))[0]
    record = gen.extra["thinking"]
    assert record["waits"] >= 1 and WAIT_TEXT in gen.text
    assert thinking_length(engine, gen.token_ids) >= 16
    # the three tokens of each suppressed "</think>" were taken out of the cache: what follows
    # each "Wait" is the greedy continuation of the edited text
    assert greedy_mismatches(engine, FEW_SHOT, gen.token_ids) <= inserted_positions(record)
    plain = dict(engine.generate([FEW_SHOT], SamplingParams(max_new_tokens=40)))[0]
    assert thinking_length(engine, plain.token_ids) < 16  # without it, it does close early
    assert "thinking" not in plain.extra


# --- the OpenAI-compatible engine against a real `transformers serve` -------------------------


@pytest.fixture(scope="module")
def server(demo_model):
    from test_engine_openai import free_port, start_server, stop

    port = free_port()
    process = start_server(demo_model, port)
    yield f"http://127.0.0.1:{port}/v1"
    stop(process)


@pytest.mark.slow
def test_openai_two_stage_completions_keep_the_budget(server, demo_model, engine):
    remote = make_engine("openai", str(demo_model), base_url=server, concurrency=2)
    budget = 12
    story = [{"role": "user", "content": "Tell a long story about a dragon."}]
    prompts = [OPEN_ENDED, FEW_SHOT, story]
    # a chat prompt reaches /completions through the local chat template, prefilled with <think>
    chat_prefilled = remote.completion_text(prompts[2]) + "<think>\n"
    prompts[2] = chat_prefilled
    params = SamplingParams(max_new_tokens=40, thinking_budget=budget)
    results = dict(remote.generate(prompts, params))
    assert sorted(results) == [0, 1, 2]
    forced = 0
    for i, gen in results.items():
        record = gen.extra["thinking"]
        local = engine.tokenizer(gen.text, add_special_tokens=False)["input_ids"]
        assert thinking_length(engine, local) <= budget, i  # counted again from the text
        assert thinking_length(engine, gen.token_ids) <= budget, i
        assert gen.completion_tokens == len(gen.token_ids) <= 40
        if record["forced_close"]:
            forced += 1
            assert record["thinking_tokens"] == budget
            assert gen.token_ids[budget:budget + len(close_ids(engine))] == close_ids(engine)
            assert gen.extra["requests"] >= 2
            assert "</think>" + ANSWER_CUE in gen.text
    assert forced >= 2, [(g.text, g.extra) for g in results.values()]
    # the first request of the open-ended prompt is the hf engine's greedy thinking, cut at the
    # budget: the same 12 tokens
    local_gen = dict(engine.generate([OPEN_ENDED], params))[0]
    assert results[0].token_ids[:budget] == local_gen.token_ids[:budget]


@pytest.mark.slow
def test_openai_min_thinking_says_wait(server, demo_model, engine):
    remote = make_engine("openai", str(demo_model), base_url=server)
    gen = dict(remote.generate([FEW_SHOT], SamplingParams(max_new_tokens=40, min_thinking=16)))[0]
    record = gen.extra["thinking"]
    assert record["waits"] >= 1 and WAIT_TEXT in gen.text
    assert thinking_length(engine, gen.token_ids) >= 16
    assert gen.extra["requests"] >= 2
