"""The trace browser: written by the real CLI from a real store, opened in headless Chromium.

The store holds three AIME-style items (answers 25, 30 and 7), a dense model and its 3-bit
child, scored by the real scorer:

    item 0  dense states 25, then answers 30 (wrong, abandoned-correct); q3 answers 25: a flip
    item 1  dense answers 30; q3 is cut off in a loop of "Wait, is it 25?": a flip, truncated
    item 2  both answer 7; q3's thinking holds <script>, </details>, an <img onerror> and
            HTML entities, which must stay text
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from chromium import headless_chromium

from crbench.records import GenerationRecord, VariantRecord
from crbench.scoring import score_generation
from crbench.tasks import aime24
from crbench.tasks.base import Item

INJECT = ("<script>document.body.setAttribute('data-pwned','script')</script>"
          "<img src=x onerror=\"document.body.setAttribute('data-pwned','img')\">")
EVIL = (f"Hmm, what about {INJECT} and </details></pre><details open> with &amp; and &lt;b&gt;"
        " and <b>bold</b>?\nAnswer: 7\n</think>\n\\boxed{7}")
EVIL_LABEL = "q3<img src=y onerror=\"document.body.setAttribute('data-pwned','label')\">"
OUTPUT = ("Let me compute 5 times 5.\nAnswer: 25\nWait, I should add 5 more.\nAnswer: 30\n"
          "</think>\nSo \\boxed{30}.")
LOOP = "Answer: 25\n" + "Wait, is it 25? " * 40
PROMPT = "{problem}\n<think>\n"
ITEMS = [Item(0, "q0", {"problem": "5 times 5?"}, 25), Item(1, "q1", {"problem": "6 times 5?"}, 30),
         Item(2, "q2", {"problem": "3 plus 4?"}, 7)]


def build_store(tmp_path: Path) -> Path:
    from crbench.store import connect, insert_generation, put_variant

    data = tmp_path / "aime.jsonl"
    data.write_text("".join(json.dumps({"id": i.id, "problem": i.fields["problem"],
                                        "answer": i.reference}) + "\n" for i in ITEMS))
    options = json.dumps({"path": str(data), "style": "completion"})
    made = [("dense", 0, OUTPUT, "stop"), ("dense", 1, OUTPUT, "stop"),
            ("dense", 2, "Answer: 7\n</think>\\boxed{7}", "stop"),
            (EVIL_LABEL, 0, "Answer: 25\n</think>\\boxed{25}", "stop"),
            (EVIL_LABEL, 1, LOOP, "length"), (EVIL_LABEL, 2, EVIL, "stop")]
    run = tmp_path / "run"
    conn = connect(run)
    put_variant(conn, VariantRecord("dense", "dense"))
    put_variant(conn, VariantRecord(EVIL_LABEL, "dense", "gptq", parent="dense", bits=3))
    for n, (variant, index, output, finish) in enumerate(made):
        item = ITEMS[index]
        prompt = PROMPT.format(**item.fields)
        key = f"k{n}"
        generation = GenerationRecord(
            key=key, variant=variant, base_model="dense", engine="hf", task="aime",
            task_id="aime24", task_options=options, item_index=index, item_id=item.id,
            repeat=0, seed=0, sampling="{}", prompt=prompt, output=output, reasoning=None,
            prompt_tokens=8, completion_tokens=60, thinking_tokens=50, answer_tokens=10,
            finish_reason=finish, truncated=finish == "length", wall_s=0.1)
        score = score_generation(aime24, item, output, prompt=prompt, finish_reason=finish,
                                 key=key)
        insert_generation(conn, generation, score)
    conn.close()
    return run


def crbench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crbench.cli", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = build_store(tmp_path_factory.mktemp("browse"))
    done = crbench("browse", str(run))
    assert done.returncode == 0, done.stderr
    path = run / "report" / "browser.html"
    assert done.stdout.strip() == str(path)
    return path


def test_the_page_holds_every_generation_escaped(page: Path) -> None:
    text = page.read_text()
    assert text.count('<div class="gen">') == 6
    assert text.count("<details><summary>thinking") == 6  # every trace here thinks: folded
    assert text.count('<section class="item"') == 3
    assert "<script>document" not in text and "<img src=x" not in text
    assert "<img src=y" not in text and "</details></pre><details open>" not in text
    assert "&lt;script&gt;document.body.setAttribute" in text
    assert "&amp;amp; and &amp;lt;b&amp;gt;" in text  # entities are shown as typed
    assert "&lt;/details&gt;&lt;/pre&gt;&lt;details open&gt;" in text
    # Highlights: the first correct statement, hesitation markers (also inside it).
    assert '<mark class="first" title="first correct statement">Answer: 25</mark>' in text
    assert '<mark class="hes" title="wait">Wait</mark>' in text
    assert '<mark class="hes" title="hmm">Hmm</mark>' in text
    assert "abandoned-correct" in text and "ends in a loop (period 6 words)" in text
    # The only script is the page's own, allowed by its hash; nothing is fetched.
    scripts = re.findall(r"<script>(.*?)</script>", text, re.S)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in text and "default-src 'none'" in text
    assert not re.search(r'(src|href)="', text)
    assert "innerHTML" not in scripts[0] and "insertAdjacentHTML" not in scripts[0]


def test_browse_refuses_a_missing_store_in_one_line(tmp_path: Path) -> None:
    bad = crbench("browse", str(tmp_path / "missing"))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "no results store" in bad.stderr


def test_browse_writes_where_it_is_told(tmp_path: Path) -> None:
    run = build_store(tmp_path)
    out = tmp_path / "elsewhere" / "traces.html"
    done = crbench("browse", str(run), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.is_file() and not (run / "report").exists()


# --- in a real browser ---------------------------------------------------------------------

CSP = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>')


def test_model_text_stays_text_even_without_the_policy(page: Path, tmp_path: Path) -> None:
    """With the Content-Security-Policy removed every script on the page runs: escaping alone
    must keep the model's markup inert."""
    copy = tmp_path / "open.html"
    copy.write_text(CSP.sub("", page.read_text()))
    dom = headless_chromium(copy.as_uri(), tmp_path, "--dump-dom")
    assert 'data-shown="3"' in dom  # the page's own script ran
    assert 'data-pwned="' not in dom
    assert "&lt;script&gt;document.body.setAttribute" in dom
    # 3 prompts and 6 thinking folds, all closed: the "</details>...<details open>" in the
    # output neither closed a fold nor opened one
    assert dom.count("<details>") == 9 and "<details open" not in dom


@pytest.mark.parametrize(("fragment", "shown"), [
    ("", 3), ("flip", 2), ("truncated", 1), ("abandoned", 1), ("flip,truncated", 1),
    ("v=1", 3), ("v=1,abandoned", 0), ("t=0,flip", 2),
    ("t=9", 3),  # no such task: the select falls back to "all"
])
def test_filters_in_chromium(page: Path, tmp_path: Path, fragment: str, shown: int) -> None:
    """The real page, policy and all: its script runs (the hash matches) and filters."""
    dom = headless_chromium(f"{page.as_uri()}#{fragment}", tmp_path, "--dump-dom")
    assert f'data-shown="{shown}"' in dom
    assert f'<span id="count">{shown}</span>' in dom
    assert dom.count('<section class="item"') == 3
    assert dom.count('<section class="item" data-task="0" hidden="">') == 3 - shown


# --- highlighting, by hand and by property -------------------------------------------------


def test_highlight_by_hand() -> None:
    from crbench.browser import highlight
    from crbench.cues import Marker

    text = "Wait, <b>Answer: 25</b> but & more"
    markers = [Marker("wait", 0, 4), Marker("but", 24, 27)]
    first = (9, 19)  # "Answer: 25"
    assert highlight(text, markers, first) == (
        '<mark class="hes" title="wait">Wait</mark>, &lt;b&gt;'
        '<mark class="first" title="first correct statement">Answer: 25</mark>&lt;/b&gt; '
        '<mark class="hes" title="but">but</mark> &amp; more')
    # A marker across the edge of the first statement is marked on both sides of it.
    crossing = highlight("ab cd", [Marker("x", 1, 4)], (0, 2))
    assert crossing == ('<mark class="first" title="first correct statement">a'
                        '<mark class="hes" title="x">b</mark></mark>'
                        '<mark class="hes" title="x"> c</mark>d')


def test_highlight_keeps_every_character_as_text() -> None:
    import html

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from crbench.browser import highlight
    from crbench.cues import DEFAULT_CUES

    alphabet = st.sampled_from(list("ab <>&\"'/;") + ["wait", "but", "Hmm", "</details>", "\n"])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(alphabet, max_size=40).map("".join), st.integers(0, 60), st.integers(0, 60))
    def check(text: str, a: int, b: int) -> None:
        a, b = sorted((min(a, len(text)), min(b, len(text))))
        out = highlight(text, DEFAULT_CUES.markers(text), (a, b))
        tags = re.findall(r"<[^>]*>", out)
        assert all(re.fullmatch(r'<mark class="(hes|first)" title="[^"<>]*">|</mark>', t)
                   for t in tags), tags
        assert html.unescape(re.sub(r"<[^>]*>", "", out)) == text

    check()
