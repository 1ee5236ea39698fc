"""The view query language of protocol 0.7 (grammar and semantics in docs/views.md):
parse a query, check it against the view's messages, filter rows with it.

    query = parse_query("SELECT * FROM customers WHERE name = :customer_name")
    checked = validate_query(query, tables={"customers": Customer.DESCRIPTOR},
                             request=ByName.DESCRIPTOR, response=Customer.DESCRIPTOR,
                             streamed=True)
    matches = compile_filter(checked)
    matches(customer, request)  # True when the row is selected
"""

from larder_sidecar.views.query.ast import (
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
    Position,
    Projection,
    Query,
    SelectAll,
    Selection,
    SelectItem,
    TableRef,
    Value,
)
from larder_sidecar.views.query.columns import Kind, ValueType
from larder_sidecar.views.query.errors import (
    Problem,
    QueryError,
    QuerySyntaxError,
    QueryValidationError,
)
from larder_sidecar.views.query.evaluator import RowFilter, Truth, compile_filter
from larder_sidecar.views.query.parser import PROTOCOL, RESERVED, parse_query
from larder_sidecar.views.query.validator import FilterColumn, ValidatedQuery, validate_query

__all__ = [
    "PROTOCOL",
    "RESERVED",
    "And",
    "ColumnRef",
    "Comparison",
    "ComparisonOp",
    "Condition",
    "FilterColumn",
    "IsNull",
    "Kind",
    "Literal",
    "Not",
    "Or",
    "Parameter",
    "Position",
    "Problem",
    "Projection",
    "Query",
    "QueryError",
    "QuerySyntaxError",
    "QueryValidationError",
    "RowFilter",
    "SelectAll",
    "SelectItem",
    "Selection",
    "TableRef",
    "Truth",
    "ValidatedQuery",
    "Value",
    "ValueType",
    "compile_filter",
    "parse_query",
    "validate_query",
]
