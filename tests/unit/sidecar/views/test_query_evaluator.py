"""The evaluator: WHERE clauses over protobuf rows with SQL's three-valued logic, what is
NULL, and the comparisons of every kind of column."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import Message
from larder_sidecar.views.query import Truth, compile_filter

from tests.unit.sidecar.views.conftest import ViewTypes

T, F, U = True, False, None  # U is UNKNOWN

# Rows and requests that make each atom TRUE, FALSE or UNKNOWN:
#   A: score > :max_score      (both optional; an unset one is NULL)
#   B: nickname = :nickname    (both StringValue wrappers; unset is NULL)
A_ROW: dict[Truth, dict[str, Any]] = {T: {"score": 5}, F: {"score": 0}, U: {}}
B_ROW: dict[Truth, dict[str, Any]] = {
    T: {"nickname": {"value": "al"}},
    F: {"nickname": {"value": "bo"}},
    U: {},
}
REQUEST = {"max_score": 1, "nickname": {"value": "al"}}

AND = {
    (T, T): T, (T, F): F, (T, U): U,
    (F, T): F, (F, F): F, (F, U): F,
    (U, T): U, (U, F): F, (U, U): U,
}  # fmt: skip
OR = {
    (T, T): T, (T, F): T, (T, U): T,
    (F, T): T, (F, F): F, (F, U): U,
    (U, T): T, (U, F): U, (U, U): U,
}  # fmt: skip
NOT = {T: F, F: T, U: U}


def truth(types: ViewTypes, where: str, row: Message, request: Message | None = None) -> Truth:
    validated = types.validate(f"SELECT * FROM customers WHERE {where}")
    return compile_filter(validated).truth(row, request or types.message("Filter"))


def selected(types: ViewTypes, where: str, row: Message, request: Message | None = None) -> bool:
    validated = types.validate(f"SELECT * FROM customers WHERE {where}")
    return compile_filter(validated)(row, request or types.message("Filter"))


@pytest.mark.parametrize(("a", "b"), list(AND))
def test_and_truth_table(types: ViewTypes, a: Truth, b: Truth) -> None:
    row = types.message("Customer", **A_ROW[a], **B_ROW[b])
    request = types.message("Filter", **REQUEST)
    where = "score > :max_score AND nickname = :nickname"
    assert truth(types, "score > :max_score", row, request) is a
    assert truth(types, "nickname = :nickname", row, request) is b
    assert truth(types, where, row, request) is AND[a, b]
    assert selected(types, where, row, request) is (AND[a, b] is True)


@pytest.mark.parametrize(("a", "b"), list(OR))
def test_or_truth_table(types: ViewTypes, a: Truth, b: Truth) -> None:
    row = types.message("Customer", **A_ROW[a], **B_ROW[b])
    request = types.message("Filter", **REQUEST)
    where = "score > :max_score OR nickname = :nickname"
    assert truth(types, where, row, request) is OR[a, b]
    assert selected(types, where, row, request) is (OR[a, b] is True)


@pytest.mark.parametrize("a", list(NOT))
def test_not_truth_table(types: ViewTypes, a: Truth) -> None:
    row = types.message("Customer", **A_ROW[a])
    request = types.message("Filter", **REQUEST)
    assert truth(types, "NOT score > :max_score", row, request) is NOT[a]
    assert truth(types, "NOT NOT score > :max_score", row, request) is a
    assert selected(types, "NOT score > :max_score", row, request) is (NOT[a] is True)


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_every_comparison_with_null_is_unknown(types: ViewTypes, op: str) -> None:
    unset = types.message("Customer")
    request = types.message("Filter", max_score=3)
    assert truth(types, f"score {op} 3", unset, request) is None
    assert truth(types, f"score {op} :max_score", unset, request) is None
    # A NULL parameter makes the comparison UNKNOWN too, whatever the row holds.
    assert truth(types, f"age {op} :age_limit", types.message("Customer", age=3)) is None


def test_null_is_not_selected_by_not_equal(types: ViewTypes) -> None:
    rows = [
        types.message("Customer", score=5),
        types.message("Customer", score=6),
        types.message("Customer"),
    ]
    validated = types.validate("SELECT * FROM customers WHERE score != 5")
    matches = compile_filter(validated)
    assert [matches(row, types.message("Filter")) for row in rows] == [False, True, False]
    either = compile_filter(
        types.validate("SELECT * FROM customers WHERE score != 5 OR score IS NULL")
    )
    assert [either(row, types.message("Filter")) for row in rows] == [False, True, True]


WHAT_IS_NULL: list[tuple[str, dict[str, Any], bool]] = [
    # (column, row fields, whether the column IS NULL)
    # Plain proto3 scalars have no presence: the default value is a value, not NULL.
    ("name", {}, False),
    ("age", {}, False),
    ("active", {}, False),
    ("status", {}, False),
    ("avatar", {}, False),
    # proto3 `optional` scalars: NULL until set, even to the default.
    ("score", {}, True),
    ("score", {"score": 0}, False),
    # Wrappers and timestamps: NULL until set, even to the default.
    ("nickname", {}, True),
    ("nickname", {"nickname": {"value": ""}}, False),
    ("joined", {}, True),
    ("joined", {"joined": {"seconds": 0}}, False),
    # Messages: NULL until set, and so is every path through an unset message.
    ("address", {}, True),
    ("address", {"address": {}}, False),
    ("address.city", {}, True),
    ("address.city", {"address": {}}, False),
    ("address.geo.lat", {"address": {"city": "Oslo"}}, True),
    ("address.geo.lat", {"address": {"geo": {}}}, False),
]


@pytest.mark.parametrize(
    ("column", "fields", "null"), WHAT_IS_NULL, ids=[f"{c}-{f}" for c, f, _ in WHAT_IS_NULL]
)
def test_what_is_null(types: ViewTypes, column: str, fields: dict[str, Any], null: bool) -> None:
    row = types.message("Customer", **fields)
    assert truth(types, f"{column} IS NULL", row) is null
    assert truth(types, f"{column} IS NOT NULL", row) is (not null)


def test_a_parameter_through_an_unset_message_is_null(types: ViewTypes) -> None:
    row = types.message("Customer", age=0)
    assert truth(types, "age = :range.low", row, types.message("Filter")) is None
    assert truth(types, "age = :range.low", row, types.message("Filter", range={})) is True


COMPARISONS: list[tuple[str, dict[str, Any], dict[str, Any], Truth]] = [
    # (condition, row fields, request fields, value)
    ("name = :customer_name", {"name": "Ann"}, {"customer_name": "Ann"}, T),
    ("name = :customer_name", {"name": "Ann"}, {"customer_name": "ann"}, F),
    ("name = 'Ann'", {"name": "Ann"}, {}, T),
    ("name = ''", {}, {}, T),  # an unset plain string is ''
    ("name != 'Ann'", {"name": "Bob"}, {}, T),
    # Strings order by code point (UTF-8 byte order): upper case before lower case.
    ("name < 'a'", {"name": "Z"}, {}, T),
    ("name < 'Z'", {"name": "a"}, {}, F),
    ("name > 'Å'", {"name": "Z"}, {}, F),
    ("name >= 'Ann'", {"name": "Ann"}, {}, T),
    ("name <= 'Ann'", {"name": "Anna"}, {}, F),
    ("name = 'O''Hara'", {"name": "O'Hara"}, {}, T),
    # Numbers compare across integer and floating types.
    ("age > :min_age", {"age": 30}, {"min_age": 29}, T),
    ("age > :min_age", {"age": 30}, {"min_age": 30}, F),
    ("age >= :min_age", {"age": 30}, {"min_age": 30}, T),
    ("age < 30.5", {"age": 30}, {}, T),
    ("age <= -1", {"age": -1}, {}, T),
    ("balance = :min_age", {"balance": 2.0}, {"min_age": 2}, T),
    ("balance > :balance", {"balance": 0.1}, {"balance": 0.05}, T),
    ("visits > 9223372036854775807", {"visits": 2**63}, {}, T),
    ("age < :age_limit", {"age": 17}, {"age_limit": {"value": 18}}, T),
    ("age < :age_limit", {"age": 18}, {"age_limit": {"value": 18}}, F),
    ("age = :range.low", {"age": 4}, {"range": {"low": 4}}, T),
    ("address.geo.lat > 59.9", {"address": {"geo": {"lat": 60.0}}}, {}, T),
    # Booleans.
    ("active = TRUE", {"active": True}, {}, T),
    ("active = TRUE", {}, {}, F),
    ("active != :active", {"active": True}, {"active": False}, T),
    # Enums, by name or by a parameter of the same enum.
    ("status = 'ACTIVE'", {"status": 1}, {}, T),
    ("status = 'SUSPENDED'", {"status": 1}, {}, F),
    ("status = 'STATUS_UNSPECIFIED'", {}, {}, T),
    ("status != :status", {"status": 2}, {"status": 1}, T),
    ("status = :status", {"status": 2}, {"status": 2}, T),
    # Bytes.
    ("avatar = :avatar", {"avatar": b"\x00\x01"}, {"avatar": b"\x00\x01"}, T),
    ("avatar != :avatar", {"avatar": b"\x00\x01"}, {"avatar": b"\x00"}, T),
    # Timestamps order by seconds, then nanos.
    (
        "joined >= :since",
        {"joined": {"seconds": 10, "nanos": 5}},
        {"since": {"seconds": 10, "nanos": 5}},
        T,
    ),
    (
        "joined > :since",
        {"joined": {"seconds": 10, "nanos": 5}},
        {"since": {"seconds": 10, "nanos": 6}},
        F,
    ),
    ("joined > :since", {"joined": {"seconds": 11}}, {"since": {"seconds": 10, "nanos": 999}}, T),
    # Wrappers compare their value.
    ("nickname = 'al'", {"nickname": {"value": "al"}}, {}, T),
    ("nickname = ''", {"nickname": {"value": ""}}, {}, T),
    ("nickname = ''", {}, {}, U),
    # A value on the left of the query text is turned around correctly.
    ("30 < age", {"age": 31}, {}, T),
    ("30 < age", {"age": 29}, {}, F),
    (":min_age >= age", {"age": 5}, {"min_age": 5}, T),
]


@pytest.mark.parametrize(
    ("where", "row", "asked", "expected"), COMPARISONS, ids=[c[0] for c in COMPARISONS]
)
def test_comparisons(
    types: ViewTypes, where: str, row: dict[str, Any], asked: dict[str, Any], expected: Truth
) -> None:
    request = types.message("Filter", **asked)
    assert truth(types, where, types.message("Customer", **row), request) is expected


def test_without_where_every_row_is_selected(types: ViewTypes) -> None:
    matches = compile_filter(types.validate("SELECT * FROM customers"))
    assert matches.truth(types.message("Customer"), types.message("Filter")) is True
    assert matches(types.message("Customer", name="x"), types.message("Filter")) is True


def test_filtering_a_table(types: ViewTypes) -> None:
    customers = [
        types.message("Customer", customer_id="1", name="Ann", address={"city": "New York"}),
        types.message("Customer", customer_id="2", name="Ann", address={"city": "San Francisco"}),
        types.message("Customer", customer_id="3", name="Ann", address={"city": "Boston"}),
        types.message("Customer", customer_id="4", name="Bob", address={"city": "New York"}),
        types.message("Customer", customer_id="5", name="Ann"),
    ]
    validated = types.validate(
        "SELECT * FROM customers WHERE\n"
        "  name = :customer_name AND address.city = 'New York' OR\n"
        "  name = :customer_name AND address.city = 'San Francisco'"
    )
    matches = compile_filter(validated)
    request = types.message("Filter", customer_name="Ann")
    assert [c.customer_id for c in customers if matches(c, request)] == ["1", "2"]  # type: ignore[attr-defined]
