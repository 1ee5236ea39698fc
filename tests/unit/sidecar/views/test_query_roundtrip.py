"""Random queries survive printing and parsing: `parse_query(str(q)) == q` for ASTs built
by a seeded generator, covering nesting, every operator and every literal form."""

from __future__ import annotations

import random

import pytest
from larder_sidecar.views.query import (
    And,
    ColumnRef,
    Comparison,
    ComparisonOp,
    Condition,
    IsNull,
    Literal,
    Not,
    Or,
    Parameter,
    Projection,
    Query,
    SelectAll,
    Selection,
    SelectItem,
    TableRef,
    parse_query,
)

NAMES = ["name", "address", "city", "geo", "order", "limit", "like", "in", "_x", "a1", "Z"]


def _path(rng: random.Random) -> tuple[str, ...]:
    return tuple(rng.choice(NAMES) for _ in range(rng.randint(1, 3)))


def _literal(rng: random.Random) -> Literal:
    kind = rng.randrange(4)
    if kind == 0:
        alphabet = "ab 'Ø\"%_\\:*"
        return Literal("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))))
    if kind == 1:
        return Literal(rng.randint(-(2**63), 2**64))
    if kind == 2:
        return Literal(rng.choice([0.5, -2.25, 1e-07, 3.0e20, rng.uniform(-1e6, 1e6)]))
    return Literal(rng.random() < 0.5)


def _condition(rng: random.Random, depth: int) -> Condition:
    choice = rng.randrange(5 if depth > 0 else 2)
    if choice == 0:
        value = Parameter(_path(rng)) if rng.random() < 0.5 else _literal(rng)
        return Comparison(ColumnRef(_path(rng)), rng.choice(list(ComparisonOp)), value)
    if choice == 1:
        return IsNull(ColumnRef(_path(rng)), negated=rng.random() < 0.5)
    if choice == 2:
        return Not(_condition(rng, depth - 1))
    kind = And if choice == 3 else Or
    operands: list[Condition] = []
    while len(operands) < rng.randint(2, 4):
        operand = _condition(rng, depth - 1)
        if not isinstance(operand, kind):  # chains of one kind are flat in parsed ASTs
            operands.append(operand)
    return kind(tuple(operands))


def _selection(rng: random.Random) -> Selection:
    if rng.random() < 0.4:
        return SelectAll(rng.choice([None, "results"]))
    items = []
    for _ in range(rng.randint(1, 4)):
        expression = ColumnRef(_path(rng)) if rng.random() < 0.7 else Parameter(_path(rng))
        items.append(SelectItem(expression, rng.choice([None, "alias", "in"])))
    return Projection(tuple(items))


def _query(rng: random.Random) -> Query:
    where = _condition(rng, rng.randint(0, 4)) if rng.random() < 0.9 else None
    return Query(_selection(rng), TableRef(rng.choice(NAMES)), where)


@pytest.mark.parametrize("seed", range(300))
def test_printed_queries_parse_back(seed: int) -> None:
    query = _query(random.Random(seed))
    text = str(query)
    assert parse_query(text) == query, text
