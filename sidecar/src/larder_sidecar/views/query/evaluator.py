"""Evaluates a validated query's WHERE clause over rows given as protobuf messages.

SQL's three-valued logic: a comparison with a NULL operand is UNKNOWN (None here), NOT
UNKNOWN is UNKNOWN, AND is FALSE if any operand is FALSE, OR is TRUE if any is TRUE, and a
row is selected only when the whole condition is TRUE. What is NULL is in docs/views.md.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from larder_sidecar.views.query.ast import (
    And,
    Comparison,
    ComparisonOp,
    Condition,
    IsNull,
    Literal,
    Not,
    Or,
)
from larder_sidecar.views.query.columns import (
    TIMESTAMP,
    WRAPPERS,
    Kind,
    enum_type,
    message_type,
    resolve,
)
from larder_sidecar.views.query.validator import ValidatedQuery

Truth = bool | None  # None is UNKNOWN
_Predicate = Callable[[Message, Message], Truth]
_Getter = Callable[[Message], Any]

_COMPARE: dict[ComparisonOp, Callable[[Any, Any], bool]] = {
    ComparisonOp.EQ: operator.eq,
    ComparisonOp.NE: operator.ne,
    ComparisonOp.LT: operator.lt,
    ComparisonOp.LE: operator.le,
    ComparisonOp.GT: operator.gt,
    ComparisonOp.GE: operator.ge,
}


class RowFilter:
    """The WHERE clause of one query as a Python predicate over (row, request)."""

    def __init__(self, validated: ValidatedQuery):
        self._validated = validated
        where = validated.query.where
        self._predicate: _Predicate | None = None if where is None else self._compile(where)

    def __call__(self, row: Message, request: Message) -> bool:
        """Whether the query selects `row` for this `request` (the condition is TRUE)."""
        return self.truth(row, request) is True

    def truth(self, row: Message, request: Message) -> Truth:
        """The condition's value for `row`: True, False, or None for UNKNOWN."""
        return True if self._predicate is None else self._predicate(row, request)

    def _compile(self, condition: Condition) -> _Predicate:
        if isinstance(condition, Comparison):
            return self._comparison(condition)
        if isinstance(condition, IsNull):
            get = _getter(resolve(self._validated.row_type, condition.column.path).fields)
            if condition.negated:
                return lambda row, _request: get(row) is not None
            return lambda row, _request: get(row) is None
        if isinstance(condition, Not):
            inner = self._compile(condition.operand)
            return lambda row, request: _not(inner(row, request))
        parts = tuple(self._compile(operand) for operand in condition.operands)
        if isinstance(condition, And):
            return lambda row, request: _all(part(row, request) for part in parts)
        assert isinstance(condition, Or)
        return lambda row, request: _any(part(row, request) for part in parts)

    def _comparison(self, comparison: Comparison) -> _Predicate:
        column = resolve(self._validated.row_type, comparison.column.path)
        get_column = _getter(column.fields)
        compare = _COMPARE[comparison.op]
        value = comparison.value
        get_value: _Getter
        if isinstance(value, Literal):
            constant: Any = value.value
            if column.type.kind is Kind.ENUM:  # a literal names an enum value
                constant = enum_type(column.last).values_by_name[str(constant)].number
            get_value = lambda _request: constant  # noqa: E731
        else:
            get_value = _getter(resolve(self._validated.request_type, value.path).fields)

        def predicate(row: Message, request: Message) -> Truth:
            left = get_column(row)
            right = get_value(request)
            if left is None or right is None:
                return None
            return bool(compare(left, right))

        return predicate


def compile_filter(validated: ValidatedQuery) -> RowFilter:
    """The WHERE clause of `validated` as a predicate: `compile_filter(q)(row, request)`."""
    return RowFilter(validated)


def _getter(fields: tuple[FieldDescriptor, ...]) -> _Getter:
    """Reads the value at the end of `fields` from a message, None where it is NULL."""
    *outer, last = fields
    names = [field.name for field in outer]
    present = bool(last.has_presence)
    convert = _converter(last)

    def get(message: Message) -> Any:
        for name in names:
            if not message.HasField(name):
                return None
            message = getattr(message, name)
        if present and not message.HasField(last.name):
            return None
        return convert(getattr(message, last.name))

    return get


def _converter(field: FieldDescriptor) -> Callable[[Any], Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        name = message_type(field).full_name
        if name in WRAPPERS:
            return lambda wrapper: wrapper.value
        if name == TIMESTAMP:
            return lambda timestamp: (timestamp.seconds, timestamp.nanos)
    return lambda value: value


def _not(value: Truth) -> Truth:
    return None if value is None else not value


def _all(values: Any) -> Truth:
    unknown = False
    for value in values:
        if value is False:
            return False
        if value is None:
            unknown = True
    return None if unknown else True


def _any(values: Any) -> Truth:
    unknown = False
    for value in values:
        if value is True:
            return True
        if value is None:
            unknown = True
    return None if unknown else False
