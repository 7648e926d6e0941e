"""Synthetic multi-hop questions over invented facts, with a difficulty knob, scored like MuSiQue.

    Who is the founder of the maker of the Vantrel 7?
    paragraphs: "Vantrel 7: The Vantrel 7 is made by Quorvex Labs. ..." (supporting)
                "Quorvex Labs: Quorvex Labs was founded by Talvo Brenik. ..." (supporting)
                + distractor paragraphs about other invented things     -> "Talvo Brenik"

Difficulty d is the number of hops: the question composes d relations, each stated in one
supporting paragraph, and 2(d-1) distractor paragraphs (20 paragraphs at most, as in MuSiQue)
state the same kinds of facts about other invented entities: level 1 is one paragraph and one
question about it. Every name is invented, so nothing can be answered from memory: the default
mode is "open" (paragraphs in the prompt); "closed" is honoured for symmetry with musique.
Every item is checked: following the supporting paragraphs from the question's entity reaches
the answer, and no distractor paragraph or the question mentions it.

Items have the musique field contract (`fields={"question", "paragraphs", "mode"}`, a list of
accepted answers as reference); `write` emits MuSiQue JSONL and prompt/score are musique's own.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crbench.errors import InputError
from crbench.tasks.base import Item, Score
from crbench.tasks.synth_common import (
    DEFAULT_N,
    invented_word,
    item_rng,
    load_items,
    real_task,
    think,
    write_jsonl,
)

NAME = "synth_multihop"
REAL_TASK = "musique"
MODES = ("open", "closed")
MAX_PARAGRAPHS = 20


@dataclass(frozen=True)
class Relation:
    subject: str  # entity kind
    object: str
    fact: str  # the sentence a paragraph states: "{s} was founded by {o}."
    phrase: str  # a noun phrase for the object, to nest inside a longer question
    question: str  # the one-hop question whose answer is the object


RELATIONS = {
    "maker": Relation("product", "company", "{s} is made by {o}.",
                      "the maker of {s}", "Which company makes {s}?"),
    "founder": Relation("company", "person", "{s} was founded by {o}.",
                        "the founder of {s}", "Who founded {s}?"),
    "mother": Relation("person", "person", "The mother of {s} is {o}.",
                       "the mother of {s}", "Who is the mother of {s}?"),
    "birthplace": Relation("person", "city", "{s} was born in the town of {o}.",
                           "the birthplace of {s}", "In which town was {s} born?"),
    "mayor": Relation("city", "person", "The mayor of {s} is {o}.",
                      "the mayor of {s}", "Who is the mayor of {s}?"),
    "employer": Relation("person", "company", "{s} works for {o}.",
                         "the employer of {s}", "Which company does {s} work for?"),
    "headquarters": Relation("company", "city", "{s} has its headquarters in the town of {o}.",
                             "the headquarters town of {s}",
                             "In which town does {s} have its headquarters?"),
}
START_KINDS = ["product", "product", "company", "person", "city"]

COMPANY_SUFFIXES = ["Labs", "Works", "Industries", "Systems", "Group", "Foundry"]
TOWN_SUFFIXES = ["ford", "holm", "by", "stad", "wick", "port", "dale"]
JOBS = ["a chemist", "an engineer", "a sculptor", "a lawyer", "a pilot", "a baker", "a farmer",
        "a teacher", "a surveyor", "a composer"]
GOODS = ["kettles", "bicycles", "lamps", "tractors", "radios", "shoes", "clocks", "boats"]


def new_entity(rng: random.Random, kind: str, taken: set[str]) -> str:
    """A fresh invented name of `kind`, sharing no word with any name already used."""
    while True:
        if kind == "product":
            name = f"the {invented_word(rng)} {rng.randint(2, 9)}"
        elif kind == "company":
            name = f"{invented_word(rng)} {rng.choice(COMPANY_SUFFIXES)}"
        elif kind == "person":
            name = f"{invented_word(rng)} {invented_word(rng)}"
        else:
            name = invented_word(rng, 1) + rng.choice(TOWN_SUFFIXES)
        words = set(name.split()) - {"the"} - set(COMPANY_SUFFIXES)
        if not any(words & set(other.split()) for other in taken):
            taken.add(name)
            return name


def aliases(name: str, kind: str) -> list[str]:
    """Other accepted answers: a company without its suffix, a product without "the"."""
    if kind == "company":
        return [name.rsplit(" ", 1)[0]]
    if kind == "product":
        return [name.removeprefix("the ")]
    return []


def upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def filler(rng: random.Random, name: str, kind: str) -> str:
    """A second sentence that makes a paragraph read like an encyclopedia entry."""
    if kind == "product":
        return f"It first went on sale in {rng.randint(1950, 2020)}."
    if kind == "company":
        return f"It makes {rng.choice(GOODS)} and employs about {rng.randint(2, 90) * 100} people."
    if kind == "person":
        return f"{name.split()[0]} worked as {rng.choice(JOBS)} for many years."
    return f"It has about {rng.randint(2, 300) * 1000} inhabitants."


def paragraph(rng: random.Random, relation: Relation, subject: str, obj: str,
              supporting: bool) -> dict[str, Any]:
    text = upper_first(relation.fact.format(s=subject, o=obj))
    text = f"{text} {filler(rng, subject, relation.subject)}"
    return {"title": upper_first(subject.removeprefix("the ")), "paragraph_text": text,
            "is_supporting": supporting}


def choose_relations(rng: random.Random, hops: int) -> list[str]:
    """A path of `hops` relations, each starting where the last ended, none used twice in a row."""
    kind, path = rng.choice(START_KINDS), list[str]()
    for _ in range(hops):
        options = [name for name, r in RELATIONS.items()
                   if r.subject == kind and (not path or name != path[-1])]
        path.append(rng.choice(options))
        kind = RELATIONS[path[-1]].object
    return path


def distractor_count(difficulty: int) -> int:
    return min(2 * (difficulty - 1), MAX_PARAGRAPHS - difficulty)


def make_item(index: int, difficulty: int, seed: int, mode: str = "open") -> Item:
    rng = item_rng(NAME, seed, difficulty, index)
    path = choose_relations(rng, difficulty)
    taken: set[str] = set()
    chain = [new_entity(rng, RELATIONS[path[0]].subject, taken)]
    for name in path:
        chain.append(new_entity(rng, RELATIONS[name].object, taken))
    paragraphs = [paragraph(rng, RELATIONS[name], chain[i], chain[i + 1], True)
                  for i, name in enumerate(path)]
    # Distractors: the same kinds of fact about other invented entities.
    for _ in range(distractor_count(difficulty)):
        relation = RELATIONS[rng.choice(path)]
        subject = new_entity(rng, relation.subject, taken)
        paragraphs.append(paragraph(rng, relation, subject,
                                    new_entity(rng, relation.object, taken), False))
    rng.shuffle(paragraphs)

    phrase = chain[0]
    for name in path[:-1]:
        phrase = RELATIONS[name].phrase.format(s=phrase)
    question = upper_first(RELATIONS[path[-1]].question.format(s=phrase))
    answer = chain[-1]
    item = Item(
        index=index,
        id=f"{difficulty}hop__synth-d{difficulty}-s{seed}-{index:04d}",
        fields={"question": question, "paragraphs": paragraphs, "mode": mode},
        reference=[answer, *aliases(answer, RELATIONS[path[-1]].object)],
    )
    check(item, chain)
    return item


def fact_pattern(relation: Relation) -> re.Pattern:
    escaped = re.escape(relation.fact)
    return re.compile(escaped.replace(r"\{s\}", "(?P<s>.+?)").replace(r"\{o\}", "(?P<o>.+?)"))


FACT_PATTERNS = {name: fact_pattern(relation) for name, relation in RELATIONS.items()}


def hops(question: str, paragraphs: list[dict]) -> list[tuple[int, str, str, str]]:
    """Follow the supporting paragraphs from the entity the question names:
    [(paragraph index, relation, subject, object), ...] in hop order."""
    facts = []
    for idx, p in enumerate(paragraphs):
        if not p["is_supporting"]:
            continue
        sentence = p["paragraph_text"].split(". ")[0].rstrip(".") + "."
        for name, pattern in FACT_PATTERNS.items():
            m = pattern.fullmatch(sentence)
            if m:
                facts.append((idx, name, m["s"], m["o"]))
                break
    path = [f for f in facts if f[2].lower() in question.lower()]
    if len(path) != 1:
        return []  # the question must name exactly one starting point
    while len(path) < len(facts):
        following = [f for f in facts if f[2].lower() == path[-1][3].lower()]
        if len(following) != 1:
            break
        path.append(following[0])
    return path


def check(item: Item, chain: list[str]) -> None:
    """Following the supporting paragraphs from the question's entity must reach the answer
    through every supporting paragraph, and no distractor (nor the question) may state it."""
    question, paragraphs = item.fields["question"], item.fields["paragraphs"]
    path = hops(question, paragraphs)
    supporting = sum(p["is_supporting"] for p in paragraphs)
    if [h[3] for h in path] != chain[1:] or len(path) != supporting:
        raise RuntimeError(f"{item.id}: the supporting paragraphs do not lead to the answer")
    answer = chain[-1]
    if answer in question or any(answer in p["paragraph_text"] for p in paragraphs
                                 if not p["is_supporting"]):
        raise RuntimeError(f"{item.id}: the answer is stated outside its supporting paragraph")


def generate(n: int, difficulty: int, seed: int = 0, mode: str = "open") -> list[Item]:
    if mode not in MODES:
        raise InputError(None, f"mode must be one of {', '.join(MODES)}, got {mode!r}", "mode")
    return [make_item(i, difficulty, seed, mode) for i in range(n)]


def decomposition(item: Item) -> list[dict[str, Any]]:
    """MuSiQue's `question_decomposition`: one single-hop question per supporting paragraph, in
    hop order; "#1" stands for the first hop's answer."""
    steps = []
    for i, (idx, name, subject, obj) in enumerate(hops(item.fields["question"],
                                                       item.fields["paragraphs"])):
        if i == 0:  # a product's name opens its paragraph as "The ..."
            subject = "the " + subject[4:] if subject.startswith("The ") else subject
        asked = RELATIONS[name].question.format(s=subject if i == 0 else f"#{i}")
        steps.append({"id": i + 1, "question": upper_first(asked), "answer": obj,
                      "paragraph_support_idx": idx})
    return steps


def write(items: list[Item], path: str | Path) -> Path:
    """MuSiQue JSONL: id, paragraphs (with idx), question, answer, aliases, answerable."""
    rows = []
    for item in items:
        answer, *other_answers = item.reference
        rows.append({
            "id": item.id,
            "paragraphs": [{"idx": i, **p} for i, p in enumerate(item.fields["paragraphs"])],
            "question": item.fields["question"],
            "question_decomposition": decomposition(item),
            "answer": answer,
            "answer_aliases": other_answers,
            "answerable": True,
        })
    return write_jsonl(rows, path)


def load(path: str | None = None, *, limit: int | None = None, seed: int = 0,
         difficulty: int = 1, n: int = DEFAULT_N, **options: Any) -> list[Item]:
    mode = options.pop("mode", "open")  # invented facts make closed-book pointless
    if path is not None:
        options["mode"] = mode
    return load_items(lambda k, d, s: generate(k, d, s, mode), REAL_TASK, path, limit=limit,
                      seed=seed, difficulty=difficulty, n=n, options=options)


def prompt(item: Item, style: str = "completion") -> str | list[dict]:
    return real_task(REAL_TASK).prompt(item, style)


def score(item: Item, output: str, *, hit_limit: bool = False) -> Score:
    return real_task(REAL_TASK).score(item, output, hit_limit=hit_limit)


# --- solver trace: the supporting facts in hop order ---------------------------------------------


def trace(item: Item) -> str:
    """`<think>` the fact each hop reads, in hop order `</think>` then "Answer: <name>" (what
    musique reads). Open book: the facts are the paragraphs' own sentences."""
    path = hops(item.fields["question"], item.fields["paragraphs"])
    if not path:
        raise ValueError(f"{item.id}: the supporting paragraphs do not answer the question")
    steps = [upper_first(RELATIONS[name].fact.format(s=subject, o=obj))
             for _, name, subject, obj in path]
    return think(steps, f"Answer: {path[-1][3]}")
