"""Synthetic deduction problems with a difficulty knob, labelled by a solver, scored like FOLIO.

    All blickets are wugs. No wugs are zorbs. Max is a blicket.
    Conclusion: Max is a zorb.                                   -> False

Difficulty d is the length of the inference chain a reader must follow (checked on every item
by `crbench.logic.derivation_depth`), with d-1 distractor premises, shuffled premise order from
level 2, backward chains (modus tollens) possible from level 3 and a two-condition rule from
level 4. Uncertain items break the chain the way classic fallacies do: the converse of a rule,
denying the antecedent (affirming the consequent, going backward), or a fact about someone else.
Labels True / False / Uncertain are balanced in every block of three items and decided by the
exact solver in `crbench.logic`, never by the generator's intent alone: an item is kept
only when the solver agrees with the label it was built for.

Items have the folio field contract (`fields={"premises": [...], "conclusion"}`, a label string);
`write` emits FOLIO JSONL (premises joined by newlines, with premises-FOL / conclusion-FOL) and
prompt/score are folio's own.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from crbench.errors import InputError
from crbench.logic import VAR, Clause, Inconsistent, Lit, decide, derivation_depth, to_fol
from crbench.tasks.base import Item, Score
from crbench.tasks.synth_common import (
    DEFAULT_N,
    balanced_label,
    item_rng,
    load_items,
    real_task,
    think,
    write_jsonl,
)

NAME = "synth_logic"
REAL_TASK = "folio"
LABELS = ["True", "False", "Uncertain"]

# Invented nouns (all consonant-initial, all pluralised with -s) and people.
NOUNS = ["blicket", "wug", "zorb", "glimmet", "fep", "snarp", "trindle", "vorp", "quiddle",
         "flurn", "gromp", "dorvil", "kelmit", "pindle", "drobble", "morkin", "tazzle", "wibbet",
         "lurnit", "sprock", "nibbet", "crundle", "yorrel", "tepler", "hoskin", "bramlet"]
NAMES = ["Max", "Wren", "Fiona", "Rex", "Sally", "Polly", "Stella", "Sam", "Theo", "Nadia",
         "Igor", "Jade"]


# --- sentences <-> clauses ------------------------------------------------------------------


def fact(pred: str, who: str, positive: bool = True) -> Clause:
    return (Lit(pred, who, positive),)


def rule(conditions: list[str], pred: str, positive: bool = True) -> Clause:
    """∀x (conditions(x) → [¬]pred(x)), as the clause ¬c1 ∨ ... ∨ [¬]pred."""
    return (*(Lit(c, VAR, False) for c in conditions), Lit(pred, VAR, positive))


def render(clause: Clause) -> str:
    if len(clause) == 1:
        (lit,) = clause
        return f"{lit.term} is {'' if lit.positive else 'not '}a {lit.pred}."
    *conditions, head = (lit.pred for lit in clause)
    positive = clause[-1].positive
    if len(conditions) == 1:
        return f"{'All' if positive else 'No'} {conditions[0]}s are {head}s."
    first, second = conditions
    return f"{'Every' if positive else 'No'} {first} that is a {second} is a {head}."


PATTERNS = [
    (re.compile(r"(\w+) is (not )?a (\w+)\.$"),
     lambda m: fact(m[3], m[1], positive=not m[2])),
    (re.compile(r"(All|No) (\w+)s are (\w+)s\.$"),
     lambda m: rule([m[2]], m[3], positive=m[1] == "All")),
    (re.compile(r"(Every|No) (\w+) that is a (\w+) is a (\w+)\.$"),
     lambda m: rule([m[2], m[3]], m[4], positive=m[1] == "Every")),
]


def parse(sentence: str) -> Clause:
    """The clause a rendered sentence states (the inverse of `render`)."""
    for pattern, build in PATTERNS:
        m = pattern.match(sentence)
        if m:
            return build(m)
    raise ValueError(f"not a synth_logic sentence: {sentence!r}")


# --- generation -----------------------------------------------------------------------------


def build(rng: random.Random, d: int, label: str) -> tuple[list[Clause], Lit]:
    """One candidate problem aimed at `label` with a chain of d rules (the solver then checks)."""
    nouns = rng.sample(NOUNS, len(NOUNS))
    chain, spare = nouns[: d + 1], nouns[d + 1:]
    who, other = rng.sample(NAMES, 2)
    backward = d >= 3 and rng.random() < 1 / 3
    negative_last = not backward and rng.random() < 0.5

    rules = [rule([chain[i - 1]], chain[i]) for i in range(1, d + 1)]
    if negative_last:
        rules[-1] = rule([chain[d - 1]], chain[d], positive=False)
    extra_facts = []
    if d >= 4:  # one step needs two conditions, the second stated as a fact
        i = rng.randrange(d - 1 if negative_last else d)
        condition = spare.pop()
        rules[i] = rule([chain[i], condition], chain[i + 1])
        extra_facts.append(fact(condition, who))
    if backward:  # start from "not the last", conclude "not the first" (modus tollens)
        start, derived = fact(chain[d], who, False), Lit(chain[0], who, False)
    else:
        start, derived = fact(chain[0], who), Lit(chain[d], who, not negative_last)

    if label == "True":
        conclusion = derived
    elif label == "False":
        conclusion = derived.negated()
    else:  # break the chain, the way classic fallacies do
        conclusion = derived if rng.random() < 0.5 else derived.negated()
        breaks = ["deny"] + (["converse"] if d > 1 or not negative_last else [])
        breaks += ["someone else"] if d >= 2 else []
        how = rng.choice(breaks)
        (first,) = start
        if how == "deny":  # denying the antecedent (or, going backward, affirming the consequent)
            start = (first.negated(),)
        elif how == "converse":  # a positive rule stated the wrong way round
            j = rng.randrange(d - 1 if negative_last else d)
            rules[j] = rule([chain[j + 1]], chain[j])
        else:  # the starting fact is about another person
            start = (Lit(first.pred, other, first.positive),)
    premises = [*rules, start, *extra_facts]
    while len(premises) < len(rules) + len(extra_facts) + d:  # d-1 distinct distractors
        extra = distractor(rng, chain, spare, who, other)
        if extra not in premises:
            premises.append(extra)
    if d >= 2:
        rng.shuffle(premises)
    return premises, conclusion


def distractor(rng: random.Random, chain: list[str], spare: list[str], who: str,
               other: str) -> Clause:
    """A premise beside the chain: a branch off it, a rule into it, or a fact about someone."""
    kind = rng.choice(["branch", "into", "other", "own"])
    if kind == "other":
        return fact(rng.choice(chain), other, positive=rng.random() < 0.5)
    fresh = spare.pop()
    if kind == "branch":
        return rule([rng.choice(chain)], fresh, positive=rng.random() < 0.7)
    if kind == "into":
        return rule([fresh], rng.choice(chain))
    return fact(fresh, who, positive=rng.random() < 0.5)


def make_item(index: int, difficulty: int, seed: int) -> Item:
    rng = item_rng(NAME, seed, difficulty, index)
    label = balanced_label(LABELS, NAME, seed, difficulty, index)
    for _ in range(1000):
        premises, conclusion = build(rng, difficulty, label)
        try:
            if decide(premises, conclusion) != label:
                continue  # a distractor changed the answer: draw again
        except Inconsistent:
            continue
        if label != "Uncertain" and derivation_depth(premises, conclusion) != difficulty:
            continue  # a distractor gave a shortcut
        return Item(
            index=index,
            id=f"synth-logic-d{difficulty}-s{seed}-{index:04d}",
            fields={"premises": [render(p) for p in premises],
                    "conclusion": render((conclusion,))},
            reference=label,
        )
    raise RuntimeError(f"no {label} item at difficulty {difficulty} (seed {seed}, item {index})")


def generate(n: int, difficulty: int, seed: int = 0) -> list[Item]:
    return [make_item(i, difficulty, seed) for i in range(n)]


def write(items: list[Item], path: str | Path) -> Path:
    """FOLIO JSONL (the hub's v2 layout: premises joined by newlines) with the FOL forms."""
    rows = []
    for item in items:
        try:
            fol = [to_fol(parse(s)) for s in item.fields["premises"]]
            conclusion_fol = to_fol(parse(item.fields["conclusion"]))
        except ValueError as exc:
            raise InputError(None, str(exc), f"item {item.id}") from None
        rows.append({
            "story_id": item.index,
            "example_id": item.id,
            "premises": "\n".join(item.fields["premises"]),
            "premises-FOL": "\n".join(fol),
            "conclusion": item.fields["conclusion"],
            "conclusion-FOL": conclusion_fol,
            "label": item.reference,
        })
    return write_jsonl(rows, path)


def load(path: str | None = None, *, limit: int | None = None, seed: int = 0,
         difficulty: int = 1, n: int = DEFAULT_N, **options: Any) -> list[Item]:
    return load_items(generate, REAL_TASK, path, limit=limit, seed=seed, difficulty=difficulty,
                      n=n, options=options)


def prompt(item: Item, style: str = "completion") -> str | list[dict]:
    return real_task(REAL_TASK).prompt(item, style)


def score(item: Item, output: str, *, hit_limit: bool = False) -> Score:
    return real_task(REAL_TASK).score(item, output, hit_limit=hit_limit)


# --- solver trace: what follows about the conclusion's subject, one rule at a time ---------------


def trace(item: Item) -> str:
    """`<think>` the facts about the conclusion's subject, then each rule that adds one ("So Max
    is a wug."), until the conclusion's predicate is settled or nothing more follows `</think>`
    then "Answer: <label>" (what folio reads). Unit propagation over the ground rules; checked
    against the exact solver's label."""
    premises = [parse(p) for p in item.fields["premises"]]
    (goal,) = parse(item.fields["conclusion"])
    who = goal.term
    known = {lit.pred: lit.positive for (lit,) in (p for p in premises if len(p) == 1)
             if lit.term == who}
    steps = [render(((Lit(pred, who, positive)),)) for pred, positive in known.items()]
    if not steps:
        steps.append(f"No premise is about {who}.")
    rules = [(text, clause) for text, clause in zip(item.fields["premises"], premises, strict=True)
             if len(clause) > 1]
    while goal.pred not in known:
        new = next((pair for pair in (_fires(clause, known) for _, clause in rules) if pair), None)
        if new is None:
            break
        index = next(i for i, (_, clause) in enumerate(rules) if _fires(clause, known) == new)
        text, _ = rules.pop(index)
        known[new[0]] = new[1]
        steps.append(f"{text} So {render((Lit(new[0], who, new[1]),))}")
    label = ("Uncertain" if goal.pred not in known
             else "True" if known[goal.pred] == goal.positive else "False")
    if label != item.reference:
        raise ValueError(f"{item.id}: the trace reaches {label}, the label is {item.reference}")
    verdict = {"True": "it is true", "False": "it is false",
               "Uncertain": f"nothing settles whether {who} is a {goal.pred}"}[label]
    steps.append(f"The conclusion: {item.fields['conclusion']} So {verdict}.")
    return think(steps, f"Answer: {label}")


def _fires(clause: Clause, known: dict[str, bool]) -> tuple[str, bool] | None:
    """(predicate, value) a rule adds about the subject: every literal but one is false by what
    is known and the last is unknown (modus ponens, or tollens when that one is a condition)."""
    unknown = [lit for lit in clause if lit.pred not in known]
    if len(unknown) != 1:
        return None
    if any(known[lit.pred] == lit.positive for lit in clause if lit.pred in known):
        return None  # the rule is already satisfied: it says nothing new
    (lit,) = unknown
    return lit.pred, lit.positive
