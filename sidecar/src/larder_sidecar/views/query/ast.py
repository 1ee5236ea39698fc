"""The parsed form of a view query: immutable nodes, each knowing where in the text it began.

Positions are left out of equality, so two parses of differently spaced text compare
equal; comparisons are normalised to put the column on the left (`:x < price` is kept as
`price > :x`), which is what storage and the evaluator need.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Position:
    """A place in the query text: 1-based line and column, 0-based character offset."""

    line: int
    column: int
    offset: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


_NOWHERE = Position(1, 1, 0)


@dataclass(frozen=True)
class ColumnRef:
    """A column of the table's row type, by field path (`address.city`)."""

    path: tuple[str, ...]
    position: Position = field(default=_NOWHERE, compare=False)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def __str__(self) -> str:
        return self.dotted


@dataclass(frozen=True)
class Parameter:
    """A field of the request message, by field path (`:customer_name`, `:filter.city`)."""

    path: tuple[str, ...]
    position: Position = field(default=_NOWHERE, compare=False)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def __str__(self) -> str:
        return f":{self.dotted}"


@dataclass(frozen=True)
class Literal:
    """A constant in the query: a string, an integer, a float or a boolean."""

    value: str | int | float | bool
    position: Position = field(default=_NOWHERE, compare=False)
    # Part of equality, so that TRUE is not 1 and 1 is not 1.0 (Python says they are).
    kind: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", type(self.value).__name__)

    def __str__(self) -> str:
        if isinstance(self.value, bool):
            return "TRUE" if self.value else "FALSE"
        if isinstance(self.value, str):
            return "'" + self.value.replace("'", "''") + "'"
        return repr(self.value)


Value = Parameter | Literal


class ComparisonOp(enum.Enum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="

    @property
    def mirrored(self) -> ComparisonOp:
        """The operator with its operands swapped: `a < b` is `b > a`."""
        return _MIRRORED[self]

    @property
    def orders(self) -> bool:
        """Whether the operator needs an ordered type (not just equality)."""
        return self not in (ComparisonOp.EQ, ComparisonOp.NE)


_MIRRORED = {
    ComparisonOp.EQ: ComparisonOp.EQ,
    ComparisonOp.NE: ComparisonOp.NE,
    ComparisonOp.LT: ComparisonOp.GT,
    ComparisonOp.LE: ComparisonOp.GE,
    ComparisonOp.GT: ComparisonOp.LT,
    ComparisonOp.GE: ComparisonOp.LE,
}


@dataclass(frozen=True)
class Comparison:
    """`column <op> value`, the column always on the left."""

    column: ColumnRef
    op: ComparisonOp
    value: Value
    position: Position = field(default=_NOWHERE, compare=False)

    def __str__(self) -> str:
        return f"{self.column} {self.op.value} {self.value}"


@dataclass(frozen=True)
class IsNull:
    """`column IS NULL`, or with `negated` `column IS NOT NULL`."""

    column: ColumnRef
    negated: bool = False
    position: Position = field(default=_NOWHERE, compare=False)

    def __str__(self) -> str:
        return f"{self.column} IS {'NOT ' if self.negated else ''}NULL"


@dataclass(frozen=True)
class Not:
    operand: Condition
    position: Position = field(default=_NOWHERE, compare=False)

    def __str__(self) -> str:
        return f"NOT {_grouped(self.operand)}"


@dataclass(frozen=True)
class And:
    """Two or more conditions that must all hold; chains are flattened."""

    operands: tuple[Condition, ...]
    position: Position = field(default=_NOWHERE, compare=False)

    def __str__(self) -> str:
        return " AND ".join(_grouped(operand) for operand in self.operands)


@dataclass(frozen=True)
class Or:
    """Two or more conditions of which one must hold; chains are flattened."""

    operands: tuple[Condition, ...]
    position: Position = field(default=_NOWHERE, compare=False)

    def __str__(self) -> str:
        return " OR ".join(_grouped(operand) for operand in self.operands)


Condition = Comparison | IsNull | Not | And | Or


def _grouped(condition: Condition) -> str:
    return f"({condition})" if isinstance(condition, And | Or) else str(condition)


@dataclass(frozen=True)
class SelectAll:
    """`SELECT *` (one reply message per row), or `SELECT * AS name` (all rows in the
    repeated field `name` of one reply)."""

    alias: str | None = None
    position: Position = field(default=_NOWHERE, compare=False)

    def __str__(self) -> str:
        return "*" if self.alias is None else f"* AS {self.alias}"


@dataclass(frozen=True)
class SelectItem:
    """One item of a projection: a column or a request parameter, optionally renamed."""

    expression: ColumnRef | Parameter
    alias: str | None = None
    position: Position = field(default=_NOWHERE, compare=False)

    @property
    def output_name(self) -> str:
        """The reply field the item fills: the alias, else the path's last field."""
        return self.alias if self.alias is not None else self.expression.path[-1]

    def __str__(self) -> str:
        return str(self.expression) + ("" if self.alias is None else f" AS {self.alias}")


@dataclass(frozen=True)
class Projection:
    """`SELECT a, b AS c, :request_id`: the reply message is built from the items."""

    items: tuple[SelectItem, ...]

    def __str__(self) -> str:
        return ", ".join(str(item) for item in self.items)


Selection = SelectAll | Projection


@dataclass(frozen=True)
class TableRef:
    name: str
    position: Position = field(default=_NOWHERE, compare=False)


@dataclass(frozen=True)
class Query:
    """`SELECT … FROM table [WHERE …]`, with the text it was parsed from."""

    selection: Selection
    table: TableRef
    where: Condition | None = None
    text: str = field(default="", compare=False)

    def __str__(self) -> str:
        """The query in canonical form (upper-case keywords, single spaces)."""
        where = "" if self.where is None else f" WHERE {self.where}"
        return f"SELECT {self.selection} FROM {self.table.name}{where}"

    def conditions(self) -> Iterator[Condition]:
        """Every condition node of the WHERE clause, outermost first."""
        if self.where is not None:
            yield from _walk(self.where)

    def filter_columns(self) -> tuple[ColumnRef, ...]:
        """The columns the WHERE clause reads, each path once, in order of appearance."""
        seen: dict[tuple[str, ...], ColumnRef] = {}
        for condition in self.conditions():
            if isinstance(condition, Comparison | IsNull):
                seen.setdefault(condition.column.path, condition.column)
        return tuple(seen.values())

    def parameters(self) -> tuple[Parameter, ...]:
        """Every parameter, in the select list and the WHERE clause, in order of appearance."""
        found: list[Parameter] = []
        if isinstance(self.selection, Projection):
            found.extend(
                item.expression
                for item in self.selection.items
                if isinstance(item.expression, Parameter)
            )
        found.extend(
            condition.value
            for condition in self.conditions()
            if isinstance(condition, Comparison) and isinstance(condition.value, Parameter)
        )
        return tuple(found)


def _walk(condition: Condition) -> Iterator[Condition]:
    yield condition
    if isinstance(condition, Not):
        yield from _walk(condition.operand)
    elif isinstance(condition, And | Or):
        for operand in condition.operands:
            yield from _walk(operand)
