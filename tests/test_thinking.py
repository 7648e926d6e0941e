"""Thinking analyses on hand-written traces with known answers at known positions.

Every expected number below was worked out by hand from the trace text (token positions with a
whitespace tokenizer, so they can be counted by eye)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from crbench.records import GenerationRecord, ScoreRecord, StoredGeneration, VariantRecord
from crbench.tasks import aime24
from crbench.tasks.base import Item
from crbench.thinking import (
    TokenAxis,
    Trace,
    correct_at_budget,
    default_budgets,
    first_correct,
    loop_at_end,
    prefix_output,
    reader,
    token_axis,
    trace_of,
)
from crbench.thinking_summary import (
    LengthPoint,
    analyse,
    budget_curves,
    first_correct_rows,
    hesitation_rows,
    length_points,
    loop_rows,
    spearman,
    trace_facts,
)

ITEM = Item(0, "q0", {"problem": "What is 5 times 5?"}, 25)
READ = reader(aime24, ITEM)

# 16 whitespace tokens: "Answer: 25" ends at token 8, "Answer: 30" at token 16.
TRACE = "Let me compute 5 times 5.\nAnswer: 25\nWait, I should add 5 more.\nAnswer: 30\n"
OUTPUT = TRACE + "</think>\nSo \\boxed{30}."  # what an R1-style model writes after `<think>\n`


def words(text: str) -> list[int]:
    """A whitespace tokenizer: the end offset of each word."""
    return [m.end() for m in re.finditer(r"\S+", text)]


def chars(text: str) -> list[int]:
    """One token per character."""
    return list(range(1, len(text) + 1))


def make_trace(trace: str = TRACE, *, correct: bool = False, variant: str = "dense",
               item: int = 0, repeat: int = 0, tokens: int = 20, completion: int = 30,
               truncated: bool = False, text: str | None = None, read: object = READ) -> Trace:
    return Trace(key=f"{variant}-{item}-{repeat}", variant=variant, task="aime", item_index=item,
                 repeat=repeat, text=text if text is not None else f"<think>\n{trace}",
                 trace=trace, has_thinking=True, trace_tokens=tokens,
                 completion_tokens=completion, correct=correct, truncated=truncated,
                 hit_limit=truncated, read=read)  # type: ignore[arg-type]


def test_proxy_axis_spreads_the_stored_count_over_characters() -> None:
    axis = token_axis("x" * 40, 10)
    assert axis.ends == (4, 8, 12, 16, 20, 24, 28, 32, 36, 40) and not axis.exact
    assert axis.tokens_to(10) == 3  # 10 characters need the tokens ending at 4, 8 and 12
    assert axis.tokens_to(12) == 3 and axis.tokens_to(0) == 0 and axis.tokens_to(99) == 10
    assert axis.chars_in(3) == 12 and axis.chars_in(0) == 0 and axis.chars_in(50) == 40
    assert token_axis("two words", 0).ends == (3, 9)  # no stored count: one token per word
    assert token_axis("", 5) == TokenAxis((), False)


def test_exact_axis_from_a_tokenizer() -> None:
    axis = token_axis(TRACE, 999, words)
    assert axis.exact and len(axis) == 16
    assert TRACE[:axis.chars_in(8)].endswith("Answer: 25")
    assert TRACE[:axis.chars_in(16)].endswith("Answer: 30")


def test_cut_reading_by_hand() -> None:
    trace = make_trace(text=f"<think>\n{OUTPUT}")
    axis = token_axis(TRACE, 20, words)
    readings = [correct_at_budget(trace, axis, b) for b in range(0, 18)]
    # no explicit answer before token 8; "Answer: 25" from 8; from 16 (the trace's length) the
    # whole output is read, and it ends in \boxed{30}.
    assert readings == [False] * 8 + [True] * 8 + [False, False]
    assert prefix_output(TRACE, axis, 8) == "<think>\nLet me compute 5 times 5.\nAnswer: 25"


def test_a_cut_inside_a_number_reads_the_part_before_it() -> None:
    trace = make_trace()
    axis = token_axis(TRACE, 0, chars)
    end = TRACE.index("Answer: 25") + len("Answer: 25")
    assert correct_at_budget(trace, axis, end - 1) is False  # reads "Answer: 2"
    assert correct_at_budget(trace, axis, end) is True
    assert correct_at_budget(make_trace(read=None), axis, end) is None  # no item data


def test_mid_thought_prose_is_not_read_from_a_cut_trace() -> None:
    trace = make_trace("So 5 times 5 is 25. Then I add more and get", tokens=12)
    axis = token_axis(trace.trace, 0, words)
    assert correct_at_budget(trace, axis, 6) is False  # "25" without an explicit marker


def test_first_correct_position_and_overthinking_by_hand() -> None:
    trace = make_trace()
    axis = token_axis(TRACE, 20, words)
    found = first_correct(trace, axis)
    assert found is not None
    assert TRACE[found.start:found.end] == "Answer: 25"
    assert (found.token, found.trace_tokens, found.after) == (8, 16, 8)
    assert found.overthinking_share == pytest.approx(0.5)


def test_first_correct_on_a_plain_number_sentence() -> None:
    # The weak rule (last number of the segment) counts: "That gives 25." states 25.
    trace = make_trace("First 5 times 5. That gives 25. Then 25 again.")
    found = first_correct(trace, token_axis(trace.trace, 0, words))
    assert found is not None and trace.trace[found.start:found.end] == "That gives 25."
    assert found.token == 7
    assert first_correct(make_trace("Only 7 and 30 here."), token_axis("a", 1)) is None
    assert first_correct(make_trace(read=None), token_axis(TRACE, 20)) is None


def test_default_budgets() -> None:
    assert default_budgets(17) == [1, 2, 4, 8, 16, 17]
    assert default_budgets(16) == [1, 2, 4, 8, 16]
    assert default_budgets(0) == [0]
    budgets = default_budgets(40000)
    assert budgets == [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 40000]


def test_loops_at_the_end() -> None:
    text = "Start here. " + "I will check again. " * 10 + "I will"
    loop = loop_at_end(text)
    assert loop is not None and loop.period == 5  # "i will check again ."
    assert loop.words == 53 and loop.repeats == pytest.approx(10.6)
    assert text[loop.start:].startswith(". I will check again.")
    assert loop_at_end("the the the the") is None  # fewer than 20 words
    assert loop_at_end("the " * 30) is not None and loop_at_end("the " * 30).period == 1
    assert loop_at_end(TRACE * 2) is None  # two copies are not 3 repeats
    assert loop_at_end("no loop at all, just a sentence that goes on and never repeats "
                       "a block of words in the same order at its very end.") is None


def test_trace_of_a_stored_generation() -> None:
    prompt = "What is 5 times 5?\n<think>\n"
    stored = StoredGeneration(generation(OUTPUT, prompt=prompt), score(correct=False))
    trace = trace_of(stored, READ)
    assert trace is not None and trace.has_thinking and trace.trace == f"\n{TRACE}"
    assert trace.text == f"<think>\n{OUTPUT}" and trace.trace_tokens == 20
    plain = trace_of(StoredGeneration(generation("It is 25.", prompt="[]"), score(True)), READ)
    assert plain is not None and not plain.has_thinking and plain.trace == "It is 25."
    assert plain.trace_tokens == 5  # the answer tokens
    assert trace_of(StoredGeneration(generation("x"), None), READ) is None  # not scored yet


def test_summaries_by_hand() -> None:
    right = "Answer: 25\n"
    traces = [
        make_trace(correct=False, item=0, tokens=20),  # states 25, then 30: abandoned
        make_trace(right + "Hmm, but wait.", correct=True, item=1, tokens=10),
        make_trace("Answer: 7. But wait, but no.", correct=False, item=2, tokens=10),
        make_trace(right, correct=True, variant="q3", item=0, tokens=40, completion=60),
        make_trace("Answer: 30", correct=False, variant="q3", item=1, tokens=40,
                   completion=60),
        make_trace("Answer: 30", correct=False, variant="q3", item=2, tokens=40,
                   completion=60, truncated=True),
    ]
    facts = [trace_facts(t, words) for t in traces]
    curves = budget_curves(facts, {"aime": [2, 100]}, n_boot=200)
    at = {(p.variant, p.budget): p for p in curves}
    # dense at 2 tokens: item 1 reads "Answer: 25" (2 words) -> 1 of 3; whole traces: 1 of 3
    assert at[("dense", 2)].accuracy == pytest.approx(1 / 3)
    assert at[("dense", 2)].cut == 1.0  # every dense trace is longer than 2 words
    assert at[("dense", 100)].accuracy == pytest.approx(1 / 3) and at[("dense", 100)].cut == 0
    assert at[("q3", 2)].accuracy == pytest.approx(1 / 3)
    assert 0 <= at[("dense", 2)].lo <= 1 / 3 <= at[("dense", 2)].hi <= 1
    first = {r.variant: r for r in first_correct_rows(facts)}
    assert (first["dense"].traces, first["dense"].stated, first["dense"].wrong,
            first["dense"].abandoned) == (3, 2, 2, 1)
    assert first["dense"].abandoned_rate == pytest.approx(0.5)
    # overthinking: item 0: 8 of 16 tokens after; item 1: "Answer: 25" is tokens 1-2 of 5
    assert first["dense"].overthinking == pytest.approx((8 / 16 + 3 / 5) / 2)
    assert first["dense"].positions == pytest.approx((8 / 16, 2 / 5))
    assert first["q3"].abandoned == 0 and first["q3"].stated == 1
    assert first["dense"].abandoned_truncated == 0  # item 0 was not truncated
    hesitation = {r.variant: r for r in hesitation_rows(facts)}
    # dense: wait(1) in item 0; hmm, but, wait in item 1; but, wait, but in item 2 -> 7 markers
    assert hesitation["dense"].counts == {"wait": 3, "hmm": 1, "but": 3}
    assert hesitation["dense"].tokens == 40 and hesitation["dense"].per_1k == pytest.approx(175)
    assert hesitation["q3"].total == 0 and hesitation["q3"].per_1k == 0
    loops = {r.variant: r for r in loop_rows(facts)}
    assert (loops["q3"].truncated, loops["q3"].looping) == (1, 0)
    assert math.isnan(loops["dense"].share)
    points = length_points(facts, {"q3": "dense"})
    assert len(points) == 1 and points[0].samples == 3
    assert points[0].growth == pytest.approx(1.0)  # 60 against 30 completion tokens
    assert points[0].accuracy_change == pytest.approx(0.0)


def test_spearman_of_length_growth_against_accuracy_change() -> None:
    points = [LengthPoint(f"v{i}", "dense", 10, tokens, 100.0, acc, 0.8)
              for i, (tokens, acc) in enumerate([(110, 0.7), (150, 0.5), (300, 0.1),
                                                 (200, 0.3)])]
    result = spearman(points)
    assert result.rho == pytest.approx(-1.0) and result.n == 4
    swapped = [points[0], points[1], LengthPoint("v2", "dense", 10, 300, 100, 0.3, 0.8),
               LengthPoint("v3", "dense", 10, 200, 100, 0.1, 0.8)]
    # ranks of growth 1,2,4,3 against ranks of change 4,3,2,1: d^2 = 9+1+4+4 = 18
    assert spearman(swapped).rho == pytest.approx(1 - 6 * 18 / (4 * 15))
    assert math.isnan(spearman(points[:2]).rho)  # too few points


def test_analyse_pairs_variants_with_their_parents() -> None:
    variants = {"dense": VariantRecord("dense", "dense"),
                "q3": VariantRecord("q3", "dense", "gptq", parent="dense", bits=3)}
    traces = [make_trace(correct=False), make_trace("Answer: 25", variant="q3", correct=True)]
    result = analyse(traces, variants, {"dense": words, "q3": words}, n_boot=100)
    assert result.parents == {"q3": "dense"} and result.exact_tokens
    assert {p.budget for p in result.curves} == {1, 2, 4, 8, 16}
    assert [f.abandoned for f in result.facts] == [True, False]
    assert not analyse(traces, variants, n_boot=100).exact_tokens


# --- from a real store --------------------------------------------------------------------


def generation(output: str, *, prompt: str = "What is 5 times 5?\n<think>\n",
               variant: str = "dense", item: int = 0, item_id: str = "q0", options: str = "{}",
               thinking: int = 20, completion: int = 30, key: str = "k0") -> GenerationRecord:
    return GenerationRecord(
        key=key, variant=variant, base_model="dense", engine="hf", task="aime",
        task_id="aime24", task_options=options, item_index=item, item_id=item_id, repeat=0,
        seed=0, sampling="{}", prompt=prompt, output=output, reasoning=None, prompt_tokens=9,
        completion_tokens=completion, thinking_tokens=thinking,
        answer_tokens=completion - thinking if prompt.endswith("<think>\n") else 5,
        finish_reason="stop", truncated=False, wall_s=0.1)


def score(correct: bool, key: str = "k0") -> ScoreRecord:
    return ScoreRecord(key=key, extracted=None, correct=correct, no_answer=False,
                       truncated=False, rule="boxed-after-think")


def build_run(tmp_path: Path) -> tuple[Path, Path]:
    """A store with two AIME-style items (answers 25 and 30), a dense model and a 3-bit child:

        dense item 0: states 25 ("Answer: 25"), ends with \\boxed{30}: wrong, abandoned-correct
        dense item 1: OUTPUT again, right for 30 ("Answer: 30" is its last line)
        q3 item 0: "Answer: 25", \\boxed{25}: right
        q3 item 1: "Answer: 25", then "Answer: 31", \\boxed{31}: wrong, never states 30
    """
    from crbench.store import connect, insert_generation, put_variant

    data = tmp_path / "aime.jsonl"
    rows = [{"id": "q0", "problem": "What is 5 times 5?", "answer": 25},
            {"id": "q1", "problem": "What is 6 times 5?", "answer": 30}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = json.dumps({"path": str(data), "style": "completion"})
    run_dir = tmp_path / "run"
    conn = connect(run_dir)
    put_variant(conn, VariantRecord("dense", "dense"))
    put_variant(conn, VariantRecord("q3", "dense", "gptq", parent="dense", bits=3))
    made = [("dense", 0, OUTPUT, False), ("dense", 1, OUTPUT, True),
            ("q3", 0, "Answer: 25\n</think>\\boxed{25}", True),
            ("q3", 1, "Answer: 25\nWait.\nAnswer: 31\n</think>\\boxed{31}", False)]
    for variant, item, output, correct in made:
        key = f"{variant}{item}"
        insert_generation(conn, generation(output, variant=variant, item=item,
                                           item_id=f"q{item}", options=options, key=key),
                          score(correct, key))
    conn.close()
    return run_dir, data


def test_analyse_a_stored_run(tmp_path: Path) -> None:
    from crbench.store_read import read_run
    from crbench.thinking_summary import analyse_run

    run_dir, data = build_run(tmp_path)
    result = analyse_run(read_run(run_dir), n_boot=100)
    assert result.problems == [] and result.parents == {"q3": "dense"}
    by_key = {f.trace.key: f for f in result.facts}
    assert by_key["dense0"].abandoned and not by_key["dense1"].abandoned
    assert by_key["dense1"].first is not None  # "Answer: 30" states item 1's answer
    assert by_key["q30"].first is not None and by_key["q31"].first is None
    assert not result.exact_tokens  # no model folder: the character proxy
    data.unlink()
    missing = analyse_run(read_run(run_dir), n_boot=100)
    assert len(missing.problems) == 1 and missing.problems[0].startswith("aime: ")
    assert missing.curves == [] and len(missing.facts) == 4


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    import csv

    with path.open(newline="", encoding="utf-8") as f:
        return {row["variant"]: row for row in csv.DictReader(f)}


def test_report_section_matches_hand_computation(tmp_path: Path) -> None:
    from crbench.report import write_report

    run_dir, _ = build_run(tmp_path)
    report, written = write_report(run_dir, tmp_path / "report", ("csv",), n_boot=200)
    section = next(s for s in report.sections if s.title == "Thinking")
    assert "docs/thinking.md" in section.text
    csv_dir = written["csv"]
    # Proxy axis: 20 stored tokens over each trace's characters. Dense traces ("\n" + TRACE,
    # 76 characters): token 16 ends at character 61, inside "Wait, ...": item 0 reads
    # "Answer: 25" (right), item 1 the same (wrong for 30). q3 item 0 (12 characters) at 16
    # tokens is "\nAnswer: 2" (wrong); q3 item 1 at 16 tokens ends in "Answe" after
    # "Answer: 25" (wrong). Whole traces (20 tokens): one right of two for each.
    budget = read_csv(csv_dir / "thinking_budget_1_aime.csv")
    assert float(budget["dense"]["acc_16"]) == 50 and float(budget["q3"]["acc_16"]) == 0
    assert float(budget["dense"]["acc_20"]) == 50 and float(budget["q3"]["acc_20"]) == 50
    assert float(budget["dense"]["acc_8"]) == 0  # 8 tokens end inside "Answer"
    assert float(budget["dense"]["cut_16"]) == 100 and float(budget["dense"]["cut_20"]) == 0
    assert budget["q3"]["parent"] == "dense" and budget["dense"]["parent"] == ""
    first = read_csv(csv_dir / "thinking_first_correct.csv")
    # dense item 0: "Answer: 25" ends at character 37 -> token 10 of 20 (50%); item 1:
    # "Answer: 30" ends at character 75 -> token 20 of 20 (100%).
    assert float(first["dense"]["median_first_pct"]) == 75
    assert float(first["dense"]["overthinking_pct"]) == 25
    assert (first["dense"]["wrong"], first["dense"]["abandoned"]) == ("1", "1")
    assert first["dense"]["abandoned_truncated"] == "0"
    assert float(first["dense"]["abandoned_pct_of_wrong"]) == 100
    assert first["dense"]["first_at_50_60pct"] == first["dense"]["first_at_90_100pct"] == "1"
    assert float(first["q3"]["states_answer_pct"]) == 50 and first["q3"]["abandoned"] == "0"
    hesitation = read_csv(csv_dir / "thinking_hesitation.csv")
    # dense: one "Wait" per trace, 40 stored tokens -> 50 per 1k; q3: one "Wait" in 40
    assert float(hesitation["dense"]["markers_per_1k"]) == 50
    assert float(hesitation["dense"]["wait_per_1k"]) == 50
    assert float(hesitation["q3"]["markers_per_1k"]) == 25
    length = read_csv(csv_dir / "thinking_length.csv")
    assert float(length["q3"]["growth_pct"]) == float(length["q3"]["accuracy_change_pp"]) == 0
    assert "figures" not in written  # CSV only: no figures drawn
    _, with_figures = write_report(run_dir, tmp_path / "report2", ("md",), n_boot=100)
    for name in ("thinking_budget", "thinking_first_correct", "thinking_length"):
        assert (with_figures["figures"] / f"{name}.png").stat().st_size > 1000
    assert "## Thinking" in with_figures["md"].read_text()


def test_items_from_the_hub_are_never_fetched() -> None:
    from crbench.thinking import load_traces

    stored = StoredGeneration(generation(OUTPUT, options="{}"), score(False))
    traces, problems = load_traces([stored])
    assert len(traces) == 1 and traces[0].read is None  # still counted, just not re-read
    assert len(problems) == 1 and "Hugging Face hub" in problems[0]
    assert problems[0].startswith("aime:")  # the task's label


def test_positions_in_the_demo_models_tokens(demo_model: Path) -> None:
    from transformers import AutoTokenizer

    from crbench.thinking import hf_tokenizer, variant_tokenizers

    tokenize = hf_tokenizer(str(demo_model))
    assert tokenize is not None
    ids = AutoTokenizer.from_pretrained(demo_model)(TRACE, add_special_tokens=False).input_ids
    axis = token_axis(TRACE, 999, tokenize)
    assert axis.exact and len(axis) == len(ids)
    # The prefix of n tokens is what the tokenizer decodes from the first n ids.
    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    for n in (1, 5, 9, len(ids)):
        assert TRACE[:axis.chars_in(n)] == tokenizer.decode(ids[:n])
    variants = {"dense": VariantRecord("dense", "dense", model_path=str(demo_model)),
                "q3": VariantRecord("q3", "dense", "gptq", model_path="/nonexistent"),
                "other": VariantRecord("other", "other")}
    found = variant_tokenizers(variants)
    assert found["dense"] is not None and found["q3"] is not None  # the sibling's tokenizer
    assert found["other"] is None
    assert hf_tokenizer("/nonexistent") is None
