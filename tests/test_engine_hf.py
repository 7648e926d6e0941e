"""The hf engine on the real demo model: greedy equals transformers' `generate`, batched or not."""

from __future__ import annotations

import pytest

from crbench.engines import SamplingParams, make_engine

PROMPTS = [
    "Question: Today, Emily went to the beach. Between what times could she have gone?\nAnswer:",
    [{"role": "user", "content": "What is 7 times 8? Answer briefly."}],
    "The three primary colours are",
    "def fibonacci(n):",
    [{"role": "user", "content": "Name a planet."}],
    "Write a long story about a dragon who learns to bake bread in a small village by the sea.",
]


@pytest.fixture(scope="module")
def engine(demo_model):
    engine = make_engine("hf", str(demo_model), batch_size=4, dtype="float32")
    yield engine
    engine.close()


def reference_greedy(engine, prompt, max_new_tokens):
    """transformers' own generate on the single prompt, no padding."""
    import torch

    ids = torch.tensor([engine.encode(prompt)])
    with torch.inference_mode():
        out = engine.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
            max_new_tokens=max_new_tokens, eos_token_id=engine.eos_ids,
            pad_token_id=engine.tokenizer.pad_token_id,
        )
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.slow
def test_greedy_matches_transformers_generate_batched_and_single(engine):
    params = SamplingParams(max_new_tokens=24)
    expected = [reference_greedy(engine, prompt, params.max_new_tokens) for prompt in PROMPTS]
    # the chat prompts stop early, so rows leave the batch and waiting prompts take their slots
    assert any(len(tokens) < params.max_new_tokens for tokens in expected)
    for batch_size in (4, 2):
        engine.batch_size = batch_size
        batched = dict(engine.generate(PROMPTS, params))
        assert sorted(batched) == list(range(len(PROMPTS)))
        for i in range(len(PROMPTS)):
            assert batched[i].token_ids == expected[i], (batch_size, i)
    engine.batch_size = 4
    for i, prompt in enumerate(PROMPTS[:3]):
        single = dict(engine.generate([prompt], params))[0]
        assert single.token_ids == expected[i], i


@pytest.mark.slow
def test_speculative_greedy_equals_generate_in_fewer_forwards(engine):
    """Drafts looked up in the row's own text are fed with its last token; the row keeps what
    the model agrees with. Same tokens as `generate`, fewer forwards than tokens (the demo
    model repeats itself, so drafts are often right), with rows ending at different columns.
    The rows' tokens go in packed, without padding to the longest draft."""
    from crbench.engines.hf_attention import PACKED

    params = SamplingParams(max_new_tokens=64)
    prompts = [PROMPTS[0], PROMPTS[5], PROMPTS[3], PROMPTS[1]]
    expected = [reference_greedy(engine, prompt, params.max_new_tokens) for prompt in prompts]
    calls = []  # per forward: (tokens fed, rows, the most tokens fed to a row); 0 rows: prefill
    forward = engine.model.forward

    def counted(*args, **kwargs):
        packed = kwargs.get(PACKED)
        width = packed.width if packed is not None else 0
        rows = packed.gather.numel() // width if packed is not None else 0
        calls.append((kwargs["input_ids"].shape[1], rows, width))
        return forward(*args, **kwargs)

    engine.model.forward = counted
    try:
        engine.speculate = 0
        plain = dict(engine.generate(prompts, params))
        plain_forwards = len(calls)
        engine.speculate = 8
        for batch_size, step_tokens in ((4, 128), (2, 7), (4, 4)):
            engine.batch_size, engine.step_tokens = batch_size, step_tokens
            calls.clear()
            results = dict(engine.generate(prompts, params))
            for i in range(len(prompts)):
                assert results[i].token_ids == expected[i], (batch_size, step_tokens, i)
            steps = [call for call in calls if call[1]]
            widths = [width for _, _, width in steps]
            if step_tokens >= 2 * batch_size:  # room for drafts
                assert max(widths) > 1
                # drafts of different lengths: fewer tokens fed than rows x longest draft
                assert sum(t for t, _, _ in steps) < sum(r * w for _, r, w in steps)
                if batch_size == 4:  # as the plain run
                    assert len(calls) < plain_forwards - 8, (len(calls), plain_forwards)
            else:  # a full batch of 4 fed 4 tokens: no room for a draft
                assert max(widths[:3]) == 1
    finally:
        engine.model.forward = forward
        engine.batch_size, engine.step_tokens, engine.speculate = 4, 128, 8
    assert [plain[i].token_ids for i in range(len(prompts))] == expected


def test_transformers_generate_loop_gives_the_same_tokens(demo_model, engine):
    params = SamplingParams(max_new_tokens=12)
    ours = dict(engine.generate(PROMPTS, params))
    fallback = make_engine("hf", str(demo_model), batch_size=3, loop="generate", dtype="fp32")
    theirs = dict(fallback.generate(PROMPTS, params))
    for i in range(len(PROMPTS)):
        assert theirs[i].token_ids == ours[i].token_ids, i
        assert theirs[i].finish_reason == ours[i].finish_reason


def test_generation_fields(engine):
    params = SamplingParams(max_new_tokens=8)
    results = dict(engine.generate(PROMPTS, params))
    for i, gen in results.items():
        assert gen.prompt_tokens == len(engine.encode(PROMPTS[i]))
        assert gen.completion_tokens == len(gen.token_ids)
        hit_eos = gen.token_ids[-1] in engine.eos_ids
        assert gen.finish_reason == ("stop" if hit_eos else "length")
        assert gen.completion_tokens == 8 or hit_eos
        assert gen.text == engine.tokenizer.decode(gen.token_ids, skip_special_tokens=True)
        assert gen.wall_s > 0
    # the chat prompt "7 times 8" is answered and ends with <|im_end|> within a few tokens
    short = dict(engine.generate([PROMPTS[1]], SamplingParams(max_new_tokens=40)))[0]
    assert short.finish_reason == "stop"
    assert "56" in short.text


def test_one_new_token_finishes_at_prefill(engine):
    results = dict(engine.generate(PROMPTS, SamplingParams(max_new_tokens=1)))
    assert sorted(results) == list(range(len(PROMPTS)))
    assert all(gen.completion_tokens == 1 for gen in results.values())


def test_sampling_is_seeded_per_prompt(engine):
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=16, seed=7)
    together = dict(engine.generate(PROMPTS, params))
    alone = dict(engine.generate([PROMPTS[3]], params))[0]
    assert alone.token_ids == together[3].token_ids
    again = dict(engine.generate(PROMPTS[2:4], params))
    assert again[1].token_ids == together[3].token_ids
    other_seed = dict(engine.generate([PROMPTS[3]], SamplingParams(
        temperature=1.0, top_p=0.95, max_new_tokens=16, seed=8)))[0]
    assert other_seed.token_ids != alone.token_ids
    # a vanishing nucleus keeps only the most likely token: greedy
    nucleus = dict(engine.generate(PROMPTS[:3], SamplingParams(
        temperature=1.0, top_p=1e-6, max_new_tokens=10)))
    greedy = dict(engine.generate(PROMPTS[:3], SamplingParams(max_new_tokens=10)))
    assert all(nucleus[i].token_ids == greedy[i].token_ids for i in range(3))


def test_chat_prompt_uses_chat_template(engine):
    ids = engine.encode([{"role": "user", "content": "hi"}])
    text = engine.tokenizer.decode(ids)
    assert "<|im_start|>user" in text and text.rstrip().endswith("<|im_start|>assistant")


def test_count_tokens(engine):
    assert engine.count_tokens("") == 0
    assert engine.count_tokens("hello world") == len(engine.tokenizer.encode("hello world"))


def test_unknown_engine_and_loop_are_refused(demo_model):
    from crbench.errors import InputError

    with pytest.raises(InputError, match="unknown engine"):
        make_engine("nonesuch", str(demo_model))
    with pytest.raises(ValueError, match="loop"):
        make_engine("hf", str(demo_model), loop="fast")


@pytest.mark.slow
def test_bf16_tokens_are_greedy_up_to_bf16_rounding(demo_model):
    """In bf16, batching changes roundings enough to flip near-ties, so tokens can differ from
    `generate` (measured: 5 of 6 prompts identical alone, 4 of 6 in a batch of 4). What must
    hold within bf16: every token is the model's greedy choice given the output before it, up
    to two bf16 steps of the logits (one teacher-forced forward per output)."""
    import torch

    engine = make_engine("hf", str(demo_model), batch_size=4, dtype="bf16")
    assert engine.model.dtype == torch.bfloat16
    results = dict(engine.generate(PROMPTS, SamplingParams(max_new_tokens=24)))
    assert sorted(results) == list(range(len(PROMPTS)))
    for i, gen in results.items():
        ids = engine.encode(PROMPTS[i])
        with torch.inference_mode():
            logits = engine.model(input_ids=torch.tensor([ids + gen.token_ids])).logits
        logits = logits[0, len(ids) - 1:-1].float()
        best = logits.max(-1).values
        chosen = logits.gather(-1, torch.tensor(gen.token_ids)[:, None])[:, 0]
        assert ((best - chosen) <= best.abs() * 2**-6).all(), i
