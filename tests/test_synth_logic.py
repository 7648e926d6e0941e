"""The logic family and its solver: labels checked against z3 on the very sentences the model
reads, the solver checked against brute force and z3 on random clause sets, hand-labelled
problems, label balance and inference depth growing with difficulty."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter

import pytest
import z3  # a test dependency (the [test] extra): the judge must be there, never skipped
from hypothesis import given, settings
from hypothesis import strategies as st

from crbench.logic import VAR, Inconsistent, Lit, decide, derivation_depth, ground, satisfiable
from crbench.tasks import synth_logic

DIFFICULTIES = [1, 2, 3, 4, 6, 8]


# --- z3 as the independent judge ------------------------------------------------------------


class Z3Reader:
    """Turns the family's English sentences into z3 formulas over an uninterpreted domain
    (quantifiers kept, nothing grounded), written here from the sentence shapes alone."""

    def __init__(self):
        self.thing = z3.DeclareSort("Thing")
        self.x = z3.Const("x", self.thing)

    def pred(self, noun: str):
        return z3.Function(noun, self.thing, z3.BoolSort())

    def sentence(self, text: str):
        if m := re.fullmatch(r"(\w+) is (not )?a (\w+)\.", text):
            atom = self.pred(m[3])(z3.Const(m[1], self.thing))
            return z3.Not(atom) if m[2] else atom
        if m := re.fullmatch(r"(All|No) (\w+)s are (\w+)s\.", text):
            head = self.pred(m[3])(self.x)
            return z3.ForAll(self.x, z3.Implies(self.pred(m[2])(self.x),
                                                head if m[1] == "All" else z3.Not(head)))
        if m := re.fullmatch(r"(Every|No) (\w+) that is a (\w+) is a (\w+)\.", text):
            head = self.pred(m[4])(self.x)
            body = z3.And(self.pred(m[2])(self.x), self.pred(m[3])(self.x))
            return z3.ForAll(self.x, z3.Implies(body, head if m[1] == "Every" else z3.Not(head)))
        raise AssertionError(f"unexpected sentence {text!r}")

    def label(self, premises: list, conclusion) -> str:
        def proves(goal) -> bool:
            solver = z3.Solver()
            solver.add(*premises, z3.Not(goal))
            result = solver.check()
            assert result != z3.unknown
            return result == z3.unsat

        consistent = z3.Solver()
        consistent.add(*premises)
        assert consistent.check() == z3.sat, "premises are contradictory"
        if proves(conclusion):
            return "True"
        return "False" if proves(z3.Not(conclusion)) else "Uncertain"


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_every_label_agrees_with_z3_on_the_text(difficulty):
    reader = Z3Reader()
    for item in synth_logic.generate(24, difficulty, seed=3):
        premises = [reader.sentence(s) for s in item.fields["premises"]]
        assert reader.label(premises, reader.sentence(item.fields["conclusion"])) == \
            item.reference, item


def clause_to_z3(reader: Z3Reader, clause) -> object:
    def lit(lit: Lit):
        term = reader.x if lit.term == VAR else z3.Const(lit.term, reader.thing)
        atom = reader.pred(lit.pred)(term)
        return atom if lit.positive else z3.Not(atom)

    formula = z3.Or(*[lit(lit_) for lit_ in clause])
    return z3.ForAll(reader.x, formula) if any(lit_.term == VAR for lit_ in clause) else formula


# Random clause sets in the solver's fragment: 1-3 literals over 4 predicates, each about the
# variable or one of two constants (a clause is either universal or ground).
predicates = st.sampled_from(["p", "q", "r", "s"])
universal_clause = st.lists(st.tuples(predicates, st.booleans()), min_size=1, max_size=3).map(
    lambda lits: tuple(Lit(p, VAR, s) for p, s in lits))
ground_clause = st.lists(st.tuples(predicates, st.sampled_from(["a", "b"]), st.booleans()),
                         min_size=1, max_size=2).map(
    lambda lits: tuple(Lit(p, c, s) for p, c, s in lits))
clause_sets = st.lists(st.one_of(universal_clause, ground_clause), min_size=1, max_size=6)
conclusions = st.builds(Lit, predicates, st.sampled_from(["a", "b"]), st.booleans())


@settings(max_examples=150, deadline=None)
@given(clause_sets, conclusions)
def test_solver_agrees_with_z3_on_random_clause_sets(clauses, conclusion):
    reader = Z3Reader()
    premises = [clause_to_z3(reader, c) for c in clauses]
    check = z3.Solver()
    check.add(*premises)
    if check.check() == z3.unsat:
        with pytest.raises(Inconsistent):
            decide(clauses, conclusion)
        return
    assert decide(clauses, conclusion) == reader.label(premises, clause_to_z3(reader,
                                                                              (conclusion,)))


ground_clauses = st.lists(
    st.frozensets(st.tuples(st.sampled_from("pqrst"), st.just("a"), st.booleans()),
                  min_size=1, max_size=3), max_size=12)


@settings(max_examples=300, deadline=None)
@given(ground_clauses)
def test_dpll_agrees_with_truth_tables(clauses):
    atoms = sorted({(p, c) for clause in clauses for p, c, _ in clause})
    by_enumeration = any(
        all(any(dict(zip(atoms, values, strict=True))[(p, c)] == s for p, c, s in clause)
            for clause in clauses)
        for values in itertools.product([False, True], repeat=len(atoms))
    )
    assert satisfiable(clauses) == by_enumeration


def test_grounding_instantiates_rules_over_every_constant():
    rule = (Lit("p", VAR, False), Lit("q", VAR, True))
    grounded = ground([rule, (Lit("p", "a"),), (Lit("r", "b"),)])
    assert frozenset({("p", "a", False), ("q", "a", True)}) in grounded
    assert frozenset({("p", "b", False), ("q", "b", True)}) in grounded
    assert len(grounded) == 4


def test_hand_labelled_problems(fixtures):
    """Textbook syllogisms and fallacies, labelled by hand, in FOLIO JSONL."""
    rows = [json.loads(line) for line in
            (fixtures / "synth_logic_hand.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 8
    for row in rows:
        premises = [synth_logic.parse(s) for s in row["premises"].splitlines()]
        (conclusion,) = synth_logic.parse(row["conclusion"])
        assert decide(premises, conclusion) == row["label"], row["conclusion"]


# --- the generated items --------------------------------------------------------------------


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_labels_are_balanced(difficulty):
    counts = Counter(item.reference for item in synth_logic.generate(30, difficulty, seed=1))
    assert counts == {"True": 10, "False": 10, "Uncertain": 10}


def measured(item) -> tuple[int, int | None]:
    """(number of premises, inference depth) of an item, read back from its sentences."""
    premises = [synth_logic.parse(s) for s in item.fields["premises"]]
    (conclusion,) = synth_logic.parse(item.fields["conclusion"])
    return len(premises), derivation_depth(premises, conclusion)


def test_harder_levels_need_more_premises_and_longer_chains():
    previous_premises, previous_depth = 0.0, 0.0
    for difficulty in range(1, 9):
        stats = [measured(item) for item in synth_logic.generate(15, difficulty, seed=2)]
        premises = sum(p for p, _ in stats) / len(stats)
        depths = [d for _, d in stats if d is not None]
        depth = sum(depths) / len(depths)
        assert premises > previous_premises and depth > previous_depth, difficulty
        previous_premises, previous_depth = premises, depth


def test_decided_items_need_exactly_difficulty_steps():
    for difficulty in (1, 3, 5):
        for item in synth_logic.generate(12, difficulty, seed=4):
            _, depth = measured(item)
            if item.reference != "Uncertain":
                assert depth == difficulty, item


def test_sentences_render_and_parse_back():
    for item in synth_logic.generate(20, 5, seed=0):
        for sentence in [*item.fields["premises"], item.fields["conclusion"]]:
            assert synth_logic.render(synth_logic.parse(sentence)) == sentence
    with pytest.raises(ValueError):
        synth_logic.parse("Some wugs are blickets.")


def test_easiest_level_is_one_rule_and_one_fact():
    for item in synth_logic.generate(9, 1, seed=0):
        kinds = sorted(len(synth_logic.parse(s)) for s in item.fields["premises"])
        assert kinds == [1, 2]
