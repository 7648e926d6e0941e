"""The report's two verdict sections, on stores written here through the store module with
numbers checked by hand: "Does it think longer?" (issue #13: each compressed variant's thinking
tokens against its parent's, paired) and "Protected modules at equal bits" (issue #14: siblings
at the same settings, some keeping modules dense, compared on the same questions)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from test_report import generation, new_store, read_csv

from crbench import report, store
from crbench.records import ScoreRecord, VariantRecord

N_ITEMS = 8
TASKS = ("aime24", "folio")  # reasoning tasks, pooled by both sections
EVIL = "<script>alert(1)</script>"
EVIL_PATTERN = "<img src=x onerror=alert(2)>"


def add(conn: store.Store, variant: str, task: str, item: int, *, thinking: int = 0,
        correct: bool = True, repeat: int = 0) -> None:
    g = generation(variant=variant, base="r1", task=task, task_id=task, options={}, item=item,
                   repeat=repeat, tokens=1000)
    g = dataclasses.replace(g, thinking_tokens=thinking, answer_tokens=1000 - thinking)
    assert store.insert_generation(conn, g, ScoreRecord(g.key, "x", correct, False, False, "t"))


def quantized(name: str, method: str, bits: float, manifest: dict | None = None,
              bits_per_weight: float | None = None) -> VariantRecord:
    return VariantRecord(name, "r1", method, parent="r1", bits=bits, group_size=128,
                         bits_per_weight=bits_per_weight,
                         manifest=json.dumps(manifest) if manifest is not None else None)


def section_titles(rep: report.Report) -> list[str]:
    return [s.title for s in rep.sections]


def table(rep: report.Report, name: str) -> report.Table:
    return next(t for t in report.tables(rep) if t.name == name)


# --- Does it think longer? ------------------------------------------------------------------

# Thinking tokens of the parent on item i of either task: 100 + 10 i (mean 135 over 0..7).
SHIFT = {  # child -> its thinking tokens minus the parent's on item i
    "gptq-w3": lambda i: 10,  # longer on every question: Δ = 10, interval [10, 10]
    "rtn-w4": lambda i: 6 if i % 2 == 0 else -4,  # mixed: Δ = +1, interval across 0
    EVIL: lambda i: -20,  # shorter everywhere, under a hostile name
}


def thinking_store(path: Path, shift: dict = SHIFT, parent_thinks: bool = True) -> Path:
    conn = new_store(path)
    store.put_variant(conn, VariantRecord("r1", "r1", "dense"))
    for name in shift:
        store.put_variant(conn, quantized(name, "gptq", 3.0))
    for task in TASKS:
        for i in range(N_ITEMS):
            base = 100 + 10 * i if parent_thinks else 0
            for repeat in range(2):  # repeats alike: the per-question mean is the value
                add(conn, "r1", task, i, thinking=base, repeat=repeat)
                for name, delta in shift.items():
                    add(conn, name, task, i, thinking=base + delta(i) if base else 0,
                        repeat=repeat)
    conn.close()
    return path


def report_of(tmp_path_factory, name: str, build) -> tuple[report.Report, dict[str, Path]]:
    """Every format of the report of the store `build` writes, in a fresh folder."""
    tmp = tmp_path_factory.mktemp(name)
    return report.write_report(build(tmp / "run"), tmp / "out", report.FORMATS, n_boot=200)


@pytest.fixture(scope="module")
def thinking_report(tmp_path_factory) -> tuple[report.Report, dict[str, Path]]:
    return report_of(tmp_path_factory, "thinking_length", thinking_store)


def test_thinking_length_verdicts_in_csv(thinking_report):
    _, files = thinking_report
    pooled = {r["variant"]: r for r in read_csv(files["csv"] / "thinks_longer.csv")}
    longer = pooled["gptq-w3"]
    assert (longer["parent"], longer["tasks"], longer["questions"]) == ("r1", "2", "16")
    assert float(longer["parent_thinking_tokens"]) == pytest.approx(135)
    assert float(longer["variant_thinking_tokens"]) == pytest.approx(145)
    for field in ("diff_tokens", "diff_lo", "diff_hi"):
        assert float(longer[field]) == pytest.approx(10)
    # 16 differences, all +10: tied ranks, so scipy's normal approximation with the tie
    # correction: W+ = 136, mean 68, variance 16·17·33/24 − (16³ − 16)/48 = 289, z = 4.
    assert float(longer["wilcoxon_p"]) == pytest.approx(math.erfc(4 / math.sqrt(2)))
    assert longer["verdict"] == "thinks longer"
    mixed = pooled["rtn-w4"]
    assert float(mixed["variant_thinking_tokens"]) == pytest.approx(136)
    assert float(mixed["diff_tokens"]) == pytest.approx(1)  # above 0, but not the interval
    assert float(mixed["diff_lo"]) < 0 < float(mixed["diff_hi"])
    # 8 at +6 (ranks 9..16) and 8 at −4 (ranks 1..8): W+ = 100, mean 68, tie-corrected
    # variance 374 − 2 (8³ − 8)/48 = 353.
    z = (100 - 68) / math.sqrt(353)
    assert float(mixed["wilcoxon_p"]) == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert mixed["verdict"] == "no detectable difference"
    shorter = pooled[EVIL]
    assert float(shorter["diff_tokens"]) == pytest.approx(-20)
    assert float(shorter["diff_hi"]) == pytest.approx(-20)
    assert shorter["verdict"] == "thinks shorter"
    per_task = {(r["variant"], r["task"]): r
                for r in read_csv(files["csv"] / "thinks_longer_by_task.csv")}
    assert len(per_task) == 3 * len(TASKS)
    folio = per_task[("gptq-w3", "folio")]
    assert folio["questions"] == "8" and float(folio["diff_tokens"]) == pytest.approx(10)
    # 8 tied differences: scipy's exact permutation test, all 2^8 sign patterns: 2 / 2^8.
    assert float(folio["wilcoxon_p"]) == pytest.approx(2 * 0.5**8)
    assert per_task[("rtn-w4", "aime24")]["verdict"] == "no detectable difference"


def test_thinking_length_page_and_summary(thinking_report):
    rep, files = thinking_report
    titles = section_titles(rep)
    assert titles.index("Does it think longer?") == titles.index(
        "Paired comparison with the parent") + 1
    section = rep.sections[titles.index("Does it think longer?")]
    assert section.text == (
        "Think longer than their parent (paired bootstrap 95% interval above 0): gptq-w3. "
        f"Think shorter than their parent (paired bootstrap 95% interval below 0): {EVIL}. "
        "No detectable difference: rtn-w4.")
    rows = {row[0]: row for row in table(rep, "thinks_longer").rows}
    assert rows["gptq-w3"][3:] == ["16", "135.0", "145.0", "+10.0 [+10.0, +10.0]", "<0.001",
                                   "thinks longer"]
    md = files["md"].read_text()
    assert "Think longer than their parent (paired bootstrap 95% interval above 0): gptq-w3." in md
    assert "| gptq-w3 | r1 | 2 | 16 | 135.0 | 145.0 | +10.0 \\[+10.0, +10.0\\] | &lt;0.001 | " \
           "thinks longer |" in md
    page = files["html"].read_text()
    assert "<script>alert" not in page
    assert "below 0): &lt;script&gt;alert(1)&lt;/script&gt;." in page
    assert "<td class=\"text\">&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page
    assert r"\textless{}script\textgreater{}alert(1)" in files["latex"].read_text()


def test_thinking_length_left_out_without_parent_or_thinking(tmp_path):
    no_thinking = thinking_store(tmp_path / "flat", parent_thinks=False)
    rep, _ = report.write_report(no_thinking, tmp_path / "out1", ["csv"], n_boot=20)
    assert "Paired comparison with the parent" in section_titles(rep)  # pairs exist ...
    assert "Does it think longer?" not in section_titles(rep)  # ... but nothing thinks
    conn = new_store(tmp_path / "alone")
    for i in range(3):
        add(conn, "r1", "folio", i, thinking=50)
    conn.close()
    rep, _ = report.write_report(tmp_path / "alone", tmp_path / "out2", ["csv"], n_boot=20)
    assert "Does it think longer?" not in section_titles(rep)


# --- Protected modules at equal bits --------------------------------------------------------

N_PROTECT = 12  # items per task: 24 questions pooled


def manifest(kept: list[str], dense: list[str], params: bool = False) -> dict:
    """A compression.json as the pipeline writes it: 12 modules, those in `kept` dense."""
    names = [f"model.layers.{layer}.{m}" for layer in range(3)
             for m in ("self_attn.q_proj", "mlp.up_proj", "mlp.gate_proj", "mlp.down_proj")]
    modules = [{"module": n, "layer": int(n.split(".")[2]), "kept_dense": n in kept}
               for n in names]
    for m in modules if params else []:
        m["params"] = 100
    return {"method": "gptq", "recipe": {"method": "gptq", "bits": 3, "dense": dense},
            "modules": modules}


LAST_MLP = [f"model.layers.2.mlp.{m}" for m in ("up_proj", "gate_proj", "down_proj")]
RIGHT = {  # variant -> (task, item) it gets right; each task has items 0..11
    "gptq-w3": {(t, i) for t in TASKS for i in (0, 1)},
    # two questions fixed and two broken against gptq-w3: Δ 0, McNemar p = 1
    "gptq-w3-keep-last-mlp": {(t, i) for t in TASKS for i in (0, 2)},
    "gptq-w3-protect": {(t, i) for t in TASKS for i in range(N_PROTECT)},  # everything
    "awq-w3-a": set(),  # unprotected siblings of their own: no group
    "awq-w3-b": {(t, i) for t in TASKS for i in range(N_PROTECT)},
}


def protection_store(path: Path, protect: bool = True) -> Path:
    conn = new_store(path)
    store.put_variant(conn, VariantRecord("r1", "r1", "dense"))
    unprotected = manifest([], [])
    records = [
        quantized("gptq-w3", "gptq", 3.0, unprotected, 3.25),
        quantized("gptq-w3-keep-last-mlp", "gptq", 3.0,
                  manifest(LAST_MLP, ["layers.-1.mlp.*"], params=True) if protect
                  else unprotected, 3.5),
        quantized("gptq-w3-protect", "gptq", 3.0,
                  manifest(LAST_MLP[:2], [EVIL_PATTERN, "model.layers.2.mlp.up_proj"])
                  if protect else None, 3.5),
        quantized("awq-w3-a", "awq", 3.0, unprotected, 3.25),
        quantized("awq-w3-b", "awq", 3.0, unprotected, 3.25),
    ]
    for v in records:
        store.put_variant(conn, v)
    for name, right in [("r1", set()), *RIGHT.items()]:
        for task in TASKS:
            for i in range(N_PROTECT):
                add(conn, name, task, i, thinking=0, correct=(task, i) in right)
    conn.close()
    return path


@pytest.fixture(scope="module")
def protection_report(tmp_path_factory) -> tuple[report.Report, dict[str, Path]]:
    return report_of(tmp_path_factory, "protection", protection_store)


def test_protection_members(protection_report):
    rep, files = protection_report
    names = [t.name for t in report.tables(rep) if t.name.startswith("protection")]
    assert names == ["protection_1", "protection_1_pairs"]  # the awq siblings protect nothing
    members = {r["variant"]: r for r in read_csv(files["csv"] / "protection_1.csv")}
    assert list(members) == ["gptq-w3", "gptq-w3-keep-last-mlp", "gptq-w3-protect"]
    keep, protect, none = (members["gptq-w3-keep-last-mlp"], members["gptq-w3-protect"],
                           members["gptq-w3"])
    assert (keep["dense_modules"], keep["listed_modules"]) == ("3", "12")
    assert float(keep["dense_weights_pct"]) == pytest.approx(25)  # 3 of 12 modules, equal size
    assert keep["dense_patterns"] == "layers.-1.mlp.*"
    assert protect["dense_modules"] == "2" and protect["dense_weights_pct"] == ""  # no sizes
    assert none["dense_modules"] == "0" and none["dense_patterns"] == ""
    assert float(keep["bits_per_weight"]) == 3.5 and float(none["bits_per_weight"]) == 3.25
    assert float(none["folio_pct"]) == pytest.approx(100 * 2 / 12)
    assert float(none["pooled_pct"]) == pytest.approx(100 * 4 / 24)
    assert float(protect["pooled_pct"]) == float(protect["pooled_lo"]) == 100
    rows = {row[0]: row for row in table(rep, "protection_1").rows}
    assert rows["gptq-w3-keep-last-mlp"][1:4] == ["3 of 12 modules", "layers.-1.mlp.*", "25.00"]
    assert rows["gptq-w3"][1] == "none"


def test_protection_pairs_and_verdicts(protection_report):
    rep, files = protection_report
    pairs = {(r["first"], r["second"], r["task"]): r
             for r in read_csv(files["csv"] / "protection_1_pairs.csv")}
    assert len(pairs) == 3 * (1 + len(TASKS))  # 3 pairs: pooled and per task
    wins = pairs[("gptq-w3", "gptq-w3-protect", "")]  # pooled
    # protect is right on the 20 questions gptq-w3 gets wrong, and on its 4 as well.
    assert (wins["only_first_right"], wins["only_second_right"]) == ("0", "20")
    assert (wins["both_right"], wins["both_wrong"], wins["questions"]) == ("4", "0", "24")
    assert float(wins["mcnemar_p"]) == pytest.approx(2 * 0.5**20)
    assert float(wins["diff_pp"]) == pytest.approx(100 * 20 / 24)
    assert float(wins["diff_lo"]) > 0 and wins["winner"] == "gptq-w3-protect"
    lo, hi = float(wins["diff_lo"]), float(wins["diff_hi"])
    assert wins["verdict"] == (f"gptq-w3-protect beats gptq-w3 by 83.3 pp [{lo:.1f}, {hi:.1f}] "
                               "(McNemar p = 1.9e-06)")
    folio = pairs[("gptq-w3", "gptq-w3-protect", "folio")]
    assert float(folio["mcnemar_p"]) == pytest.approx(2 * 0.5**10)
    tie = pairs[("gptq-w3", "gptq-w3-keep-last-mlp", "")]
    assert (tie["only_first_right"], tie["only_second_right"]) == ("2", "2")
    assert float(tie["mcnemar_p"]) == pytest.approx(1) and float(tie["diff_pp"]) == 0
    assert tie["winner"] == ""
    lo, hi = float(tie["diff_lo"]), float(tie["diff_hi"])
    assert lo < 0 < hi
    assert tie["verdict"] == ("gptq-w3 and gptq-w3-keep-last-mlp are not distinguishable on "
                              "these questions: Δ gptq-w3-keep-last-mlp − gptq-w3 = +0.0 pp "
                              f"[{lo:+.1f}, {hi:+.1f}] (McNemar p = 1.000)")
    # The first of a pair can win too: the sentence then names it first, with a positive Δ.
    loses = pairs[("gptq-w3-keep-last-mlp", "gptq-w3-protect", "")]
    assert loses["winner"] == "gptq-w3-protect"
    section = next(s for s in rep.sections if s.title == "Protected modules at equal bits")
    assert "(tasks pooled: aime24, folio; each task in the tables)" in section.text
    assert section.text.endswith(
        f"gptq W3 g128 from r1: {tie['verdict']}. {wins['verdict']}. {loses['verdict']}.")
    md = files["md"].read_text()
    assert "gptq-w3-protect beats gptq-w3 by 83.3 pp \\[" in md
    assert "| gptq-w3 | gptq-w3-protect | pooled | 24 | 0 | 20 | &lt;0.001 | 83.3 \\[" in md
    page = files["html"].read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page


def test_protection_left_out_without_dense_modules(tmp_path):
    rep, _ = report.write_report(protection_store(tmp_path / "run", protect=False),
                                 tmp_path / "out", ["csv"], n_boot=20)
    assert "Protected modules at equal bits" not in section_titles(rep)
    assert not [t for t in report.tables(rep) if t.name.startswith("protection")]
