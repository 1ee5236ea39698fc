"""What can be wrong with a view query. Both are mistakes in the user's .proto: fix the
query (or the messages it names) and deploy again.

    QueryError
    ├── QuerySyntaxError      the text is not a query we support; one position
    └── QueryValidationError  the query does not fit the row, request or reply
                              types; every problem at once, each with its position
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from larder_sidecar.views.query.ast import Position


class QueryError(ValueError):
    """A view query that cannot be served."""


def excerpt(text: str, position: Position, width: int = 1) -> str:
    """The query line holding `position`, and a caret line under `width` characters."""
    # Split on "\n" alone, as the lexer counts lines (a trailing newline starts a last line).
    lines = text.split("\n")
    line = lines[min(position.line, len(lines)) - 1].rstrip("\r")
    return f"    {line}\n    {' ' * (position.column - 1)}{'^' * max(width, 1)}"


class QuerySyntaxError(QueryError):
    """The text does not parse: `message` says what was found, where, and what was expected
    (`unexpected 'FORM' at 1:10: expected FROM`); `clause` is the clause being read
    (`SELECT`, `FROM` or `WHERE`)."""

    def __init__(self, message: str, *, text: str, position: Position, clause: str, width: int):
        self.message = message
        self.text = text
        self.position = position
        self.clause = clause
        self.width = width
        super().__init__(message)

    def __str__(self) -> str:
        return (
            f"{self.message}\n  in the {self.clause} clause of the view query:\n"
            f"{excerpt(self.text, self.position, self.width)}"
        )


@dataclass(frozen=True)
class Problem:
    """One way a query does not fit its types; `subject` names the column, parameter,
    table or reply field concerned (`address.city`, `:customer_name`)."""

    subject: str
    message: str
    position: Position

    def __str__(self) -> str:
        return f"{self.message} (at {self.position})"


class QueryValidationError(QueryError):
    """The query parses but does not fit the view's messages; `problems` lists them all."""

    def __init__(self, text: str, problems: Sequence[Problem]):
        self.text = text
        self.problems = tuple(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        count = len(self.problems)
        head = f"the view query has {count} problem{'s' if count != 1 else ''}: {self.text!r}"
        body = "\n".join(
            f"  - {problem}\n{excerpt(self.text, problem.position, len(problem.subject))}"
            for problem in self.problems
        )
        return f"{head}\n{body}"
