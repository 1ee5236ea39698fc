"""A validated query's WHERE clause as an SQLite condition over a table's stored filter
columns (`c0`, `c1`, … in `TableSchema.columns` order), with its parameters bound from the
request at query time.

SQL's NULL logic is the query language's (docs/views.md, "NULL"): a comparison with NULL is
NULL (UNKNOWN), `NOT NULL` is NULL, AND/OR follow the same tables, and WHERE keeps only
TRUE. Columns are stored with the conversions of `columns.py`, parameters get the same, so
the store selects exactly the rows the evaluator (`query/evaluator.py`) selects; a unit
test compares the two over generated rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from .columns import StoredValue, extractor
from .query import (
    And,
    Comparison,
    Condition,
    IsNull,
    Kind,
    Literal,
    Not,
    Or,
    ValidatedQuery,
)
from .query.columns import enum_type, resolve

_Binder = Callable[[Message], StoredValue]


@dataclass(frozen=True)
class SqlCondition:
    """`sql` with `?` placeholders; `bind(request)` gives their values in order."""

    sql: str
    binders: tuple[_Binder, ...]

    def bind(self, request: Message) -> tuple[StoredValue, ...]:
        return tuple(binder(request) for binder in self.binders)


def _constant(value: StoredValue) -> _Binder:
    return lambda _request: value


def translate(query: ValidatedQuery, columns: Sequence[tuple[str, ...]]) -> SqlCondition:
    """The WHERE clause of `query` over the stored columns `columns` (paths, in storage
    order); `1` when the query has none. Every column the clause reads must be stored."""
    index = {path: i for i, path in enumerate(columns)}
    binders: list[_Binder] = []

    def column(path: tuple[str, ...]) -> str:
        if path not in index:
            raise ValueError(f"column {'.'.join(path)} is not stored for this table")
        return f"c{index[path]}"

    def walk(condition: Condition) -> str:
        if isinstance(condition, IsNull):
            return f"{column(condition.column.path)} IS {'NOT ' if condition.negated else ''}NULL"
        if isinstance(condition, Comparison):
            return comparison(condition)
        if isinstance(condition, Not):
            return f"NOT ({walk(condition.operand)})"
        joiner = " AND " if isinstance(condition, And) else " OR "
        assert isinstance(condition, And | Or)
        return "(" + joiner.join(f"({walk(o)})" for o in condition.operands) + ")"

    def comparison(c: Comparison) -> str:
        resolved = resolve(query.row_type, c.column.path)
        value = c.value
        if isinstance(value, Literal):
            constant = value.value
            if resolved.type.kind is Kind.ENUM:  # a literal names an enum value
                constant = enum_type(resolved.last).values_by_name[str(constant)].number
            binders.append(_constant(int(constant) if isinstance(constant, bool) else constant))
        else:
            binders.append(extractor(query.request_type, value.path))
        return f"{column(c.column.path)} {c.op.value} ?"

    where = query.query.where
    sql = "1" if where is None else walk(where)
    return SqlCondition(sql, tuple(binders))
