"""A validated query's WHERE clause as far as Cassandra 5.0's storage-attached indexes
(SAI) can answer it, for the Cassandra view store.

What SAI in Cassandra 5.0 answers (checked against the real server): `=`, `<`, `<=`, `>`,
`>=` on numeric columns, `=` on text columns, combined with AND. It has no OR, NOT, `!=`,
IS [NOT] NULL, ranges on text, or indexes on blobs. So the WHERE clause's top-level
conjunction is split: every conjunct SAI can answer exactly is pushed down (a query with an
indexed equality never scans the table), and the others are evaluated on the fetched rows
by the query language's evaluator (`query/evaluator.py`), which keeps the result exactly
the rows the evaluator selects. Pushed conjuncts may select a superset when their column
is stored approximately (doubles, uint64 as double); the evaluator then runs as well.

Each filter column is stored in the CQL type of `CqlColumn`, with the values of
`columns.py` converted as below; a parameter gets the same conversion when it is bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from .columns import StoredValue, extractor
from .query import And, Comparison, ComparisonOp, FilterColumn, Kind, Literal, ValidatedQuery
from .query.columns import enum_type, resolve

_INT64 = (-(2**63), 2**63 - 1)
_UINT64_NAMES = frozenset({"uint64", "fixed64", "google.protobuf.UInt64Value"})
_FLOAT_NAMES = frozenset(
    {"double", "float", "google.protobuf.DoubleValue", "google.protobuf.FloatValue"}
)
CqlValue = int | float | str | bytes | None


@dataclass(frozen=True)
class CqlColumn:
    """How one filter column is stored: its CQL type, whether it has an SAI index, which
    operators SAI answers on it, and whether those answers are exact."""

    cql_type: str
    indexed: bool
    ordered: bool
    """`<`, `<=`, `>`, `>=` are pushed (else only `=`)."""
    exact: bool
    """SAI selects exactly what the evaluator selects (else a superset)."""
    widen: bool = False
    """Stored rounded (uint64 as double): `<` is pushed as `<=`, `>` as `>=`."""

    def store(self, value: StoredValue) -> CqlValue:
        """The stored column value of a `columns.py` value."""
        if value is None:
            return None
        if self.cql_type == "double":
            assert isinstance(value, int | float)
            return float(value) + 0.0  # -0.0 is 0.0 to the evaluator, not to Cassandra
        if self.cql_type == "varint":  # a timestamp's fixed-width digits
            return int(value)
        return value


def cql_column(column: FilterColumn) -> CqlColumn:
    kind, name = column.type.kind, column.type.name
    if kind is Kind.NUMBER and name in _UINT64_NAMES:
        # Beyond int64 `columns.py` stores a float: ordered, not exact.
        return CqlColumn("double", indexed=True, ordered=True, exact=False, widen=True)
    if kind is Kind.NUMBER and name in _FLOAT_NAMES:
        # Cassandra orders NaN above everything and equal to itself; the evaluator
        # compares it false: SAI may select more, never less.
        return CqlColumn("double", indexed=True, ordered=True, exact=False)
    if kind is Kind.NUMBER:
        return CqlColumn("bigint", indexed=True, ordered=True, exact=True)
    if kind is Kind.STRING:
        # SAI on text: equality only (case-sensitive, not normalized: exact).
        return CqlColumn("text", indexed=True, ordered=False, exact=True)
    if kind in (Kind.BOOL, Kind.ENUM):
        return CqlColumn("bigint", indexed=True, ordered=False, exact=True)
    if kind is Kind.TIMESTAMP:
        # Seconds since year 1 then nanos, as one integer: ordered and exact.
        return CqlColumn("varint", indexed=True, ordered=True, exact=True)
    if kind is Kind.BYTES:
        return CqlColumn("blob", indexed=False, ordered=False, exact=True)  # SAI has no blobs
    # Other messages: 1 when set, read only by IS [NOT] NULL, which SAI cannot answer.
    return CqlColumn("bigint", indexed=False, ordered=False, exact=True)


_Binder = Callable[[Message], StoredValue]


@dataclass(frozen=True)
class _Pushable:
    column: int
    op: ComparisonOp
    bind: _Binder


@dataclass(frozen=True)
class Bound:
    """One request's pushdown: `where` (CQL with `?` marks, "" for none) and its values;
    `empty` when the conjunction cannot be TRUE for any row (a NULL or impossible
    parameter); `filter` when the evaluator must also run on the fetched rows."""

    where: str
    values: tuple[CqlValue, ...]
    empty: bool
    filter: bool


@dataclass(frozen=True)
class CqlCondition:
    """A query's pushable conjuncts over the stored columns; `bind` per request."""

    columns: tuple[CqlColumn, ...]
    pushable: tuple[_Pushable, ...]
    complete: bool
    """Every conjunct is pushable: with exact columns the evaluator need not run."""

    def bind(self, request: Message) -> Bound:
        parts: list[str] = []
        values: list[CqlValue] = []
        needs_filter = not self.complete
        for p in self.pushable:
            column = self.columns[p.column]
            value = p.bind(request)
            if value is None:  # UNKNOWN for every row: a conjunction of it is never TRUE
                return Bound("", (), empty=True, filter=False)
            pushed = _pushed(column, p.op, value)
            if pushed is None:  # FALSE for every row
                return Bound("", (), empty=True, filter=False)
            if isinstance(
                pushed, _Keep
            ):  # not expressible in CQL for this value: the evaluator does it
                needs_filter = True
                continue
            op, bound = pushed
            parts.append(f"c{p.column} {op} ?")
            values.append(bound)
            if not column.exact:
                needs_filter = True
        return Bound(" AND ".join(parts), tuple(values), empty=False, filter=needs_filter)


class _Keep:
    pass


_KEEP = _Keep()


def _pushed(
    column: CqlColumn, op: ComparisonOp, value: StoredValue
) -> tuple[str, CqlValue] | _Keep | None:
    """The CQL operator and value for `column op value`; None when no row can match,
    `_KEEP` when this value cannot be pushed exactly (the evaluator filters instead)."""
    if column.cql_type == "bigint":
        if isinstance(value, float):
            if math.isnan(value) or math.isinf(value):
                return _KEEP
            if not value.is_integer():
                # An integer column against a fraction: round to the same selection.
                if op is ComparisonOp.EQ:
                    return None
                rounded = (
                    math.floor(value)
                    if op in (ComparisonOp.GT, ComparisonOp.LE)
                    else (math.ceil(value))
                )
                value = rounded
            value = int(value)
        if not isinstance(value, int) or not _INT64[0] <= value <= _INT64[1]:
            return _KEEP
        return op.value, value
    if column.cql_type == "double":
        if isinstance(value, int) and float(value) != value and not column.widen:
            return _KEEP  # not exactly a double: the evaluator compares it exactly
        if not isinstance(value, int | float):
            return _KEEP
        stored = column.store(value)
        if column.widen:
            op = {ComparisonOp.LT: ComparisonOp.LE, ComparisonOp.GT: ComparisonOp.GE}.get(op, op)
        return op.value, stored
    if column.cql_type == "varint":
        return op.value, column.store(value)
    if isinstance(value, str):
        return op.value, value
    return _KEEP


def _conjuncts(query: ValidatedQuery) -> list[object]:
    where = query.query.where
    if where is None:
        return []
    if isinstance(where, And):
        return list(where.operands)
    return [where]


def _binder(query: ValidatedQuery, c: Comparison) -> _Binder:
    value = c.value
    if isinstance(value, Literal):
        constant = value.value
        if resolve(query.row_type, c.column.path).type.kind is Kind.ENUM:
            last = resolve(query.row_type, c.column.path).last
            constant = enum_type(last).values_by_name[str(constant)].number
        fixed: StoredValue = int(constant) if isinstance(constant, bool) else constant
        return lambda _request: fixed
    return extractor(query.request_type, value.path)


def translate(query: ValidatedQuery, columns: Sequence[FilterColumn]) -> CqlCondition:
    """The pushable part of `query`'s WHERE clause over the table's stored `columns`."""
    index = {c.path: i for i, c in enumerate(columns)}
    stored = tuple(cql_column(c) for c in columns)
    pushable: list[_Pushable] = []
    complete = True
    for conjunct in _conjuncts(query):
        if isinstance(conjunct, Comparison) and conjunct.op is not ComparisonOp.NE:
            i = index[conjunct.column.path]
            column = stored[i]
            if column.indexed and (column.ordered or conjunct.op is ComparisonOp.EQ):
                pushable.append(_Pushable(i, conjunct.op, _binder(query, conjunct)))
                continue
        complete = False
    return CqlCondition(stored, tuple(pushable), complete)
