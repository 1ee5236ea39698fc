"""Checks a parsed query against the view's messages: the table's row type, the query
method's request type and its reply. Every problem is collected and reported at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from larder_sidecar.views.query.ast import (
    ColumnRef,
    Comparison,
    IsNull,
    Literal,
    Parameter,
    Position,
    Projection,
    Query,
    SelectAll,
)
from larder_sidecar.views.query.columns import (
    Kind,
    PathError,
    ResolvedPath,
    ValueType,
    describe_field_type,
    enum_type,
    is_repeated,
    message_type,
    resolve,
    same_field_type,
)
from larder_sidecar.views.query.errors import Problem, QueryValidationError


@dataclass(frozen=True)
class FilterColumn:
    """A column the WHERE clause reads: what storage extracts and indexes at write time."""

    path: tuple[str, ...]
    type: ValueType


@dataclass(frozen=True)
class ValidatedQuery:
    """A query known to fit its messages, with what serving it needs.

    `result_field` is set for `SELECT * AS name`: all rows go into that repeated field of a
    single reply. Otherwise each row is one reply message (a stream, or for a unary method
    the first row, NOT_FOUND when there is none).
    """

    query: Query
    row_type: Descriptor
    request_type: Descriptor
    response_type: Descriptor
    streamed: bool
    result_field: str | None
    filter_columns: tuple[FilterColumn, ...]


def validate_query(
    query: Query,
    *,
    tables: Mapping[str, Descriptor],
    request: Descriptor,
    response: Descriptor,
    streamed: bool,
) -> ValidatedQuery:
    """Check `query` against the view's tables (name to row type), the method's request
    type, its reply type and whether the reply is a stream.

    Raises QueryValidationError listing every problem, each naming the column, parameter,
    table or reply field concerned.
    """
    checker = _Checker(query, request)
    row = tables.get(query.table.name)
    if row is None:
        known = ", ".join(sorted(tables)) or "none"
        checker.problem(
            query.table.name,
            f"the view has no table '{query.table.name}' (its tables: {known})",
            query.table.position,
        )
    else:
        checker.check_where(row)
        checker.check_selection(row, response, streamed)
    if checker.problems:
        raise QueryValidationError(query.text or str(query), checker.problems)
    assert row is not None
    selection = query.selection
    return ValidatedQuery(
        query=query,
        row_type=row,
        request_type=request,
        response_type=response,
        streamed=streamed,
        result_field=selection.alias if isinstance(selection, SelectAll) else None,
        filter_columns=tuple(
            FilterColumn(column.path, resolve(row, column.path).type)
            for column in query.filter_columns()
        ),
    )


class _Checker:
    def __init__(self, query: Query, request: Descriptor):
        self.query = query
        self.request = request
        self.problems: list[Problem] = []

    def problem(self, subject: str, message: str, position: Position) -> None:
        self.problems.append(Problem(subject, message, position))

    def _column(
        self, row: Descriptor, column: ColumnRef, *, repeated_last: bool = False
    ) -> ResolvedPath | None:
        try:
            return resolve(row, column.path, repeated_last=repeated_last)
        except PathError as e:
            self.problem(column.dotted, f"column '{column.dotted}': {e}", column.position)
            return None

    def _parameter(
        self, parameter: Parameter, *, repeated_last: bool = False
    ) -> ResolvedPath | None:
        try:
            return resolve(self.request, parameter.path, repeated_last=repeated_last)
        except PathError as e:
            self.problem(
                str(parameter),
                f"parameter '{parameter}' is not in the request {self.request.full_name}: {e}",
                parameter.position,
            )
            return None

    # -- WHERE --------------------------------------------------------------------------

    def check_where(self, row: Descriptor) -> None:
        for condition in self.query.conditions():
            if isinstance(condition, IsNull):
                self._column(row, condition.column)
            elif isinstance(condition, Comparison):
                self._comparison(row, condition)

    def _comparison(self, row: Descriptor, comparison: Comparison) -> None:
        column = comparison.column
        resolved = self._column(row, column)
        value = comparison.value
        if isinstance(value, Parameter):
            parameter = self._parameter(value)
            if resolved is None or parameter is None:
                return
            if not self._comparable_column(resolved, comparison):
                return
            if not resolved.type.comparable_with(parameter.type):
                self.problem(
                    str(value),
                    f"parameter '{value}' is {parameter.type.name}, "
                    f"column '{column}' is {resolved.type.name}: they cannot be compared",
                    value.position,
                )
        elif resolved is not None and self._comparable_column(resolved, comparison):
            self._literal(resolved, comparison, value)

    def _comparable_column(self, resolved: ResolvedPath, comparison: Comparison) -> bool:
        column, kind = comparison.column, resolved.type.kind
        if kind is Kind.MESSAGE:
            self.problem(
                column.dotted,
                f"column '{column}' is a message ({resolved.type.name}); compare one of its "
                "fields, or test it with IS NULL",
                column.position,
            )
            return False
        if comparison.op.orders and not kind.ordered:
            self.problem(
                column.dotted,
                f"'{comparison.op.value}' does not apply to column '{column}' of type "
                f"{resolved.type.name}; use = or !=",
                column.position,
            )
            return False
        return True

    def _literal(self, resolved: ResolvedPath, comparison: Comparison, literal: Literal) -> None:
        kind, value = resolved.type.kind, literal.value
        if kind is Kind.ENUM and isinstance(value, str):
            values = enum_type(resolved.last)
            if value not in values.values_by_name:
                names = ", ".join(v.name for v in values.values)
                self.problem(
                    str(literal),
                    f"{literal} is not a value of {values.full_name} "
                    f"(column '{comparison.column}'; its values: {names})",
                    literal.position,
                )
            return
        fits = (
            (kind is Kind.STRING and isinstance(value, str))
            or (kind is Kind.BOOL and isinstance(value, bool))
            or (
                kind is Kind.NUMBER
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            )
        )
        if not fits:
            self.problem(
                str(literal),
                f"column '{comparison.column}' is {resolved.type.name}; "
                f"it cannot be compared with the {_literal_kind(literal)} {literal}",
                literal.position,
            )

    # -- SELECT -------------------------------------------------------------------------

    def check_selection(self, row: Descriptor, response: Descriptor, streamed: bool) -> None:
        selection = self.query.selection
        if isinstance(selection, SelectAll) and selection.alias is None:
            self._row_fits(row, response, f"the reply {response.full_name}", selection.position)
        elif isinstance(selection, SelectAll):
            self._collected(row, response, streamed, selection)
        else:
            self._projection(row, response, selection)

    def _collected(
        self, row: Descriptor, response: Descriptor, streamed: bool, selection: SelectAll
    ) -> None:
        alias = selection.alias
        assert alias is not None
        subject = f"* AS {alias}"
        if streamed:
            self.problem(
                subject,
                f"'{subject}' collects every row into one reply, so the method cannot "
                "return a stream",
                selection.position,
            )
        field = response.fields_by_name.get(alias)
        if field is None:
            self.problem(
                subject,
                f"the reply {response.full_name} has no field '{alias}' for '{subject}'",
                selection.position,
            )
        elif (
            not is_repeated(field)
            or field.type != FieldDescriptor.TYPE_MESSAGE
            or message_type(field).GetOptions().map_entry
        ):
            self.problem(
                subject,
                f"field '{alias}' of the reply {response.full_name} is "
                f"{describe_field_type(field)}; '{subject}' needs a repeated message field",
                selection.position,
            )
        else:
            self._row_fits(
                row, message_type(field), f"field '{alias}' of the reply", selection.position
            )

    def _row_fits(self, row: Descriptor, target: Descriptor, what: str, at: Position) -> None:
        """Rows are copied into `target` field by field, by name; each field of `target`
        must be a field of the row of the same type."""
        if target.full_name == row.full_name:
            return
        for field in target.fields:
            source = row.fields_by_name.get(field.name)
            if source is None:
                self.problem(
                    field.name,
                    f"{what} ({target.full_name}) has field '{field.name}', "
                    f"which the row type {row.full_name} lacks",
                    at,
                )
            elif not same_field_type(source, field):
                self.problem(
                    field.name,
                    f"field '{field.name}' is {describe_field_type(field)} in {what} "
                    f"({target.full_name}) but {describe_field_type(source)} in the row type "
                    f"{row.full_name}",
                    at,
                )

    def _projection(self, row: Descriptor, response: Descriptor, selection: Projection) -> None:
        seen: set[str] = set()
        for item in selection.items:
            name = item.output_name
            if name in seen:
                self.problem(
                    name, f"two select items fill the reply field '{name}'", item.position
                )
                continue
            seen.add(name)
            expression = item.expression
            if isinstance(expression, ColumnRef):
                resolved = self._column(row, expression, repeated_last=True)
            else:
                resolved = self._parameter(expression, repeated_last=True)
            target = response.fields_by_name.get(name)
            if target is None:
                self.problem(
                    name,
                    f"the reply {response.full_name} has no field '{name}' for '{item}'",
                    item.position,
                )
            elif resolved is not None and not same_field_type(resolved.last, target):
                self.problem(
                    name,
                    f"'{expression}' is {describe_field_type(resolved.last)} but the reply "
                    f"field '{name}' is {describe_field_type(target)}",
                    item.position,
                )


def _literal_kind(literal: Literal) -> str:
    value = literal.value
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    return "number"
