"""Cue lists and the rule-based sentence labeller, on hand-written sentences."""

from __future__ import annotations

import pytest

from crbench.cues import DEFAULT_CUES, OTHER, CueSet, split_sentences
from crbench.errors import InputError

TRACE = (
    "Okay, so the problem asks for x. Wait, 3.5 is wrong!\n"
    "Hmmm, maybe 25? But butter is no marker. Let me double check: 25."
)


def test_sentences_keep_offsets_and_decimals() -> None:
    segments = split_sentences(TRACE)
    assert [s.text for s in segments] == [
        "Okay, so the problem asks for x.",
        "Wait, 3.5 is wrong!",
        "Hmmm, maybe 25?",
        "But butter is no marker.",
        "Let me double check: 25.",
    ]
    for segment in segments:
        assert TRACE[segment.start:segment.end] == segment.text
    assert segments[1].start == 33 and segments[1].end == 52


def test_split_of_blank_and_unterminated_text() -> None:
    assert split_sentences("") == []
    assert split_sentences("  \n\n ") == []
    assert [s.text for s in split_sentences("one\n\ntwo")] == ["one", "two"]
    assert [s.text for s in split_sentences("no end")] == ["no end"]


def test_hesitation_markers_whole_words_with_positions() -> None:
    found = DEFAULT_CUES.markers(TRACE)
    assert [(m.marker, m.start, TRACE[m.start:m.end]) for m in found] == [
        ("wait", 33, "Wait"),
        ("hmm", 53, "Hmmm"),
        ("but", 69, "But"),  # "butter" is not counted
        ("let me double-check", 94, "Let me double check"),
    ]
    assert DEFAULT_CUES.marker_counts("but but BUT, wait") == {"but": 3, "wait": 1}
    assert DEFAULT_CUES.marker_names == ("wait", "alternatively", "hmm", "but",
                                         "let me double-check")


def test_overlapping_markers_keep_the_longer() -> None:
    cues = CueSet(hesitation=("let me", "let me double-check"))
    found = cues.markers("Let me double-check this; let me see.")
    assert [m.marker for m in found] == ["let me double-check", "let me"]


@pytest.mark.parametrize(("sentence", "label"), [
    ("Wait, that's not right.", "backtracking"),
    ("Actually, I made a mistake above.", "backtracking"),
    ("Hmm, maybe the answer is 7.", "uncertainty-estimation"),
    ("I'm not sure this holds.", "uncertainty-estimation"),
    ("Let me test it with n = 3.", "example-testing"),
    ("For example, plug in x = 2.", "example-testing"),
    ("Recall the formula for the area of a circle.", "adding-knowledge"),
    ("By definition a prime has two divisors.", "adding-knowledge"),
    ("Okay, so we need to find the sum.", "initializing"),
    ("Therefore x equals 4.", "deduction"),
    ("x equals 4.", OTHER),
    ("Testament, butter, maybee.", OTHER),  # parts of words are not cues
])
def test_labels(sentence: str, label: str) -> None:
    assert DEFAULT_CUES.label(sentence) == label


def test_priority_decides_between_cues() -> None:
    sentence = "Wait, let me check with an example."
    assert DEFAULT_CUES.label(sentence) == "backtracking"
    reordered = CueSet(priority=("example-testing", "backtracking"))
    assert reordered.label(sentence) == "example-testing"


def test_label_trace_labels_every_sentence() -> None:
    labels = [label for _, label in DEFAULT_CUES.label_trace(TRACE)]
    assert labels == ["initializing", "backtracking", "uncertainty-estimation", OTHER,
                      "example-testing"]


def test_cues_from_mapping() -> None:
    cues = CueSet.from_mapping({"hesitation": ["so"], "behaviours": {"doubt": ["perhaps"]}})
    assert cues.marker_counts("So, so. Also") == {"so": 2}
    assert cues.label("Perhaps.") == "doubt" and cues.label("Wait.") == OTHER
    assert CueSet.from_mapping({}).hesitation == DEFAULT_CUES.hesitation


@pytest.mark.parametrize(("data", "message"), [
    ({"hesitation": "wait"}, "list of phrases"),
    ({"hesitation": ["wait", 3]}, "not a cue phrase"),
    ({"hesitation": ["  "]}, "not a cue phrase"),
    ({"behaviours": ["wait"]}, "table of phrase lists"),
    ({"priority": ["nonsense"]}, "unknown behaviours"),
    ({"markers": ["wait"]}, "unknown cue settings"),
])
def test_bad_cue_settings_are_input_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        CueSet.from_mapping(data, "spec.toml")
