"""What the Cassandra store pushes into CQL for SAI, and what it leaves to the evaluator
(`views/cql.py`); the rows it then selects are compared with the evaluator's on the real
Cassandra in tests/integration/views/test_cassandra_store.py."""

from __future__ import annotations

import math

from larder_sidecar.views.cql import CqlCondition, cql_column, translate
from larder_sidecar.views.query import FilterColumn

from .conftest import ViewTypes


def _condition(types: ViewTypes, text: str) -> tuple[CqlCondition, tuple[FilterColumn, ...]]:
    checked = types.validate(text)
    columns = tuple(sorted(checked.filter_columns, key=lambda c: c.path))
    return translate(checked, columns), columns


def _where(types: ViewTypes, text: str, **request: object) -> tuple[str, tuple[object, ...], bool]:
    condition, columns = _condition(types, text)
    bound = condition.bind(types.message("Filter", **request))
    assert not bound.empty
    names = {f"c{i}": ".".join(c.path) for i, c in enumerate(columns)}
    where = bound.where
    for short, long in sorted(names.items(), reverse=True):
        where = where.replace(short, long)
    return where, bound.values, bound.filter


def test_equalities_and_ranges_on_indexed_columns_are_pushed_whole(types: ViewTypes) -> None:
    where, values, needs_filter = _where(
        types, "SELECT * FROM customers WHERE name = :customer_name AND age >= :min_age",
        customer_name="Ann", min_age=30,
    )
    assert where == "name = ? AND age >= ?"
    assert values == ("Ann", 30)
    assert not needs_filter  # exact columns, every conjunct pushed: no evaluator


def test_what_sai_cannot_answer_is_left_to_the_evaluator(types: ViewTypes) -> None:
    for text in [
        "SELECT * FROM customers WHERE name > :customer_name",  # no ranges on text
        "SELECT * FROM customers WHERE name != :customer_name",
        "SELECT * FROM customers WHERE name = :customer_name OR age > 3",
        "SELECT * FROM customers WHERE NOT (age < 3)",
        "SELECT * FROM customers WHERE score IS NULL",
        "SELECT * FROM customers WHERE avatar = :avatar",  # SAI has no blob index
    ]:
        condition, _ = _condition(types, text)
        assert condition.pushable == (), text
        assert not condition.complete, text
    # The indexable conjunct of a mixed AND is pushed, the evaluator checks the rest.
    where, values, needs_filter = _where(
        types, "SELECT * FROM customers WHERE age = 7 AND (name = 'x' OR active = TRUE)"
    )
    assert (where, values, needs_filter) == ("age = ?", (7,), True)


def test_a_null_parameter_or_an_impossible_equality_selects_nothing(types: ViewTypes) -> None:
    condition, _ = _condition(types, "SELECT * FROM customers WHERE nickname = :nickname")
    assert condition.bind(types.message("Filter")).empty  # :nickname unset: UNKNOWN
    condition, _ = _condition(types, "SELECT * FROM customers WHERE age = 7.5")
    assert condition.bind(types.message("Filter")).empty  # an int32 is never 7.5


def test_a_fraction_against_an_integer_column_is_rounded_to_the_same_rows(
    types: ViewTypes,
) -> None:
    cases = {"> 1.5": ("age > ?", 1), ">= 1.5": ("age >= ?", 2), "< 2.5": ("age < ?", 3),
             "<= 2.5": ("age <= ?", 2), "> -1.5": ("age > ?", -2)}
    for op, (where, value) in cases.items():
        got = _where(types, f"SELECT * FROM customers WHERE age {op}")
        assert got == (where, (value,), False), op


def test_approximate_columns_are_checked_by_the_evaluator(types: ViewTypes) -> None:
    # uint64 is stored as a double: `>` is widened to `>=`, the evaluator decides.
    where, values, needs_filter = _where(types, "SELECT * FROM customers WHERE visits > 3")
    assert (where, values, needs_filter) == ("visits >= ?", (3.0,), True)
    # doubles: NaN orders differently in Cassandra.
    assert _where(types, "SELECT * FROM customers WHERE balance < 1")[2]
    # An integer beyond int64 against an int64 column is not pushed: the evaluator.
    assert _where(types, "SELECT * FROM customers WHERE score < 9223372036854775808") == (
        "", (), True
    )
    assert _where(types, "SELECT * FROM customers WHERE score < 9223372036854775807") == (
        "score < ?", (2**63 - 1,), False
    )


def test_stored_values_take_the_column_types(types: ViewTypes) -> None:
    checked = types.validate(
        "SELECT * FROM customers WHERE balance = 0 AND joined >= :since AND status = 'ACTIVE' "
        "AND avatar = :avatar AND address IS NULL"
    )
    by_path = {c.path: cql_column(c) for c in checked.filter_columns}
    balance = by_path[("balance",)]
    assert balance.cql_type == "double"
    zero = balance.store(-0.0)
    assert isinstance(zero, float)
    assert math.copysign(1, zero) == 1  # -0.0 is 0.0, as the evaluator says
    joined = by_path[("joined",)]
    assert (joined.cql_type, joined.store("000000000001000000005")) == ("varint", 1000000005)
    assert (by_path[("status",)].cql_type, by_path[("status",)].indexed) == ("bigint", True)
    assert (by_path[("avatar",)].cql_type, by_path[("avatar",)].indexed) == ("blob", False)
    assert not by_path[("address",)].indexed  # presence only: IS NULL has no SAI form
