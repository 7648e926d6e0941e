"""A small, exact first-order solver for the premises of `synth_logic`.

The fragment: clauses over unary predicates, each literal about a named constant or about the one
variable x, which is universally quantified over the whole clause:

    "All blickets are wugs."           ∀x (¬Blicket(x) ∨ Wug(x))
    "No blicket is a wug."             ∀x (¬Blicket(x) ∨ ¬Wug(x))
    "Every blicket that is a wug is a zorb."   ∀x (¬Blicket(x) ∨ ¬Wug(x) ∨ Zorb(x))
    "Max is not a blicket."            ¬Blicket(max)

Such a set has no existentials and no functions, so by Herbrand's theorem it is unsatisfiable
exactly when its grounding over its own constants is; entailment is then decided by DPLL on the
ground clauses: premises ⊨ φ iff premises ∧ ¬φ is unsatisfiable. A conclusion is "True" if
entailed, "False" if its negation is entailed, "Uncertain" otherwise (FOLIO's labels).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

VAR = "x"

GroundLit = tuple[str, str, bool]  # (predicate, constant, positive)


@dataclass(frozen=True)
class Lit:
    pred: str
    term: str  # a constant, or VAR
    positive: bool = True

    def negated(self) -> Lit:
        return Lit(self.pred, self.term, not self.positive)


Clause = tuple[Lit, ...]  # a disjunction; universally quantified over x when any literal uses it


class Inconsistent(ValueError):
    """The premises contradict each other: every conclusion would follow."""


def constants(clauses: Iterable[Clause]) -> list[str]:
    found = sorted({lit.term for clause in clauses for lit in clause if lit.term != VAR})
    return found or ["c0"]  # the Herbrand universe is never empty


def ground(clauses: list[Clause]) -> list[frozenset[GroundLit]]:
    """Instantiate x with every constant; drop tautologies (a literal and its negation)."""
    out = []
    for clause in clauses:
        # A clause without x is ground already: one pass, its own constants kept.
        terms = constants(clauses) if any(lit.term == VAR for lit in clause) else [VAR]
        for c in terms:
            g = frozenset((lit.pred, c if lit.term == VAR else lit.term, lit.positive)
                          for lit in clause)
            if not any((p, t, not s) in g for p, t, s in g):
                out.append(g)
    return out


def unit_propagate(
    clauses: list[frozenset[GroundLit]], assignment: dict[tuple[str, str], bool]
) -> bool:
    """Extend `assignment` with every forced literal; False on a conflict."""
    changed = True
    while changed:
        changed = False
        for clause in clauses:
            open_lits = []
            satisfied = False
            for pred, c, positive in clause:
                value = assignment.get((pred, c))
                if value is None:
                    open_lits.append((pred, c, positive))
                elif value == positive:
                    satisfied = True
                    break
            if satisfied:
                continue
            if not open_lits:
                return False
            if len(open_lits) == 1:
                pred, c, positive = open_lits[0]
                assignment[(pred, c)] = positive
                changed = True
    return True


def satisfiable(
    clauses: list[frozenset[GroundLit]], assignment: dict[tuple[str, str], bool] | None = None
) -> bool:
    """DPLL: unit propagation, then split on an unassigned atom of the first open clause."""
    assignment = dict(assignment or {})
    if not unit_propagate(clauses, assignment):
        return False
    for clause in clauses:
        if any(assignment.get((p, c)) == s for p, c, s in clause):
            continue
        pred, c, _ = next(lit for lit in clause if (lit[0], lit[1]) not in assignment)
        return any(satisfiable(clauses, {**assignment, (pred, c): value})
                   for value in (True, False))
    return True


def entails(premises: list[Clause], conclusion: Lit) -> bool:
    return not satisfiable(ground([*premises, (conclusion.negated(),)]))


def decide(premises: list[Clause], conclusion: Lit) -> str:
    """FOLIO label of a ground literal conclusion: "True", "False" or "Uncertain"."""
    if not satisfiable(ground([*premises, (conclusion,)])) and not satisfiable(
        ground([*premises, (conclusion.negated(),)])
    ):
        raise Inconsistent("the premises are contradictory")
    if entails(premises, conclusion):
        return "True"
    if entails(premises, conclusion.negated()):
        return "False"
    return "Uncertain"


def derivation_depth(premises: list[Clause], conclusion: Lit) -> int | None:
    """Rounds of unit propagation from the premises alone until the conclusion or its negation
    is derived (0: stated as a fact); None if it never is.

    This counts the chained inference steps (modus ponens and tollens) a reader has to make.
    """
    clauses = ground(premises)
    target = (conclusion.pred, conclusion.term)
    known: dict[tuple[str, str], bool] = {}
    rounds = 0  # round 0 derives the stated facts
    while True:
        new = {}
        for clause in clauses:
            if any(known.get((p, c)) == s for p, c, s in clause):
                continue
            open_lits = [(p, c, s) for p, c, s in clause if (p, c) not in known]
            if len(open_lits) == 1:
                pred, c, positive = open_lits[0]
                new[(pred, c)] = positive
        if not new:
            return None
        known.update(new)
        if target in known:
            return rounds
        rounds += 1


def to_fol(clause: Clause) -> str:
    """FOLIO-style text: rules as implications, "∀x (Blicket(x) ∧ Wug(x) → ¬Zorb(x))"."""

    def atom(lit: Lit) -> str:
        return f"{lit.pred.capitalize()}({lit.term.lower()})"

    if not any(lit.term == VAR for lit in clause):
        return " ∨ ".join(("" if lit.positive else "¬") + atom(lit) for lit in clause)
    body = [lit for lit in clause if not lit.positive][: len(clause) - 1]
    head = [lit for lit in clause if lit not in body]
    consequent = " ∨ ".join(("" if lit.positive else "¬") + atom(lit) for lit in head)
    if not body:
        return f"∀x ({consequent})"
    return f"∀x ({' ∧ '.join(atom(lit) for lit in body)} → {consequent})"
