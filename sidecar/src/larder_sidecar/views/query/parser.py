"""A recursive-descent parser for the view query language (grammar in docs/views.md).

Precedence, loosest first: OR, AND, NOT, then one predicate or a parenthesised condition.
The first problem stops the parse: its message says what was found, where, and what
would have been accepted there.
"""

from __future__ import annotations

from typing import NoReturn

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
    Projection,
    Query,
    SelectAll,
    Selection,
    SelectItem,
    TableRef,
    Value,
)
from larder_sidecar.views.query.errors import QuerySyntaxError
from larder_sidecar.views.query.lexer import Token, TokenKind, tokenize

# Words that cannot name a table, column or alias (there is no quoting at protocol 0.7).
RESERVED = frozenset(
    {"SELECT", "FROM", "WHERE", "AS", "AND", "OR", "NOT", "IS", "NULL", "TRUE", "FALSE"}
)

PROTOCOL = "0.7"

# Clauses and operators of SQL, or of later versions of the protocol, that a user may
# reasonably try. They are only treated as keywords where they would start such a clause
# or operator, so a column may still be called `order` or `limit`.
_UNSUPPORTED_CLAUSES = {
    "ORDER": "ORDER BY",
    "LIMIT": "paging (LIMIT, OFFSET)",
    "OFFSET": "paging (LIMIT, OFFSET)",
    "GROUP": "GROUP BY",
    "HAVING": "HAVING",
    "JOIN": "JOIN",
    "INNER": "JOIN",
    "LEFT": "JOIN",
    "UNION": "UNION",
}
_UNSUPPORTED_OPERATORS = {"LIKE": "LIKE", "IN": "IN", "BETWEEN": "BETWEEN"}

_OPERATORS = {op.value: op for op in ComparisonOp}


def parse_query(text: str) -> Query:
    """Parse a view query (`SELECT * FROM customers WHERE name = :name`) into its AST.

    Raises QuerySyntaxError naming the clause and the 1-based line:column of the problem.
    """
    return _Parser(text).query()


class _Parser:
    def __init__(self, text: str):
        self._text = text
        self._tokens = tokenize(text)
        self._index = 0
        self._clause = "SELECT"

    # -- token handling ---------------------------------------------------------------

    @property
    def _token(self) -> Token:
        token = self._tokens[self._index]
        if token.kind is TokenKind.ERROR:
            self._fail(token, str(token.value))
        return token

    def _peek(self, ahead: int = 1) -> Token:
        return self._tokens[min(self._index + ahead, len(self._tokens) - 1)]

    def _advance(self) -> Token:
        token = self._token
        if token.kind is not TokenKind.END:
            self._index += 1
        return token

    def _at_keyword(self, *words: str) -> bool:
        return self._token.upper in words

    def _keyword(self, word: str) -> Token:
        if not self._at_keyword(word):
            self._unexpected(word)
        return self._advance()

    def _fail(self, token: Token, reason: str) -> NoReturn:
        width = max(len(token.text), 1)
        message = f"unexpected {token.describe()} at {token.position}: {reason}"
        raise QuerySyntaxError(
            message, text=self._text, position=token.position, clause=self._clause, width=width
        )

    def _unexpected(self, expected: str) -> NoReturn:
        token = self._token
        if token.upper in _UNSUPPORTED_CLAUSES and token.kind is TokenKind.WORD:
            self._unsupported(token, _UNSUPPORTED_CLAUSES[token.upper])
        self._fail(token, f"expected {expected}")

    def _unsupported(self, token: Token, feature: str) -> NoReturn:
        self._fail(
            token,
            f"{feature} is not part of the view query language at protocol {PROTOCOL} "
            "(docs/views.md lists what is)",
        )

    # -- clauses ----------------------------------------------------------------------

    def query(self) -> Query:
        self._keyword("SELECT")
        selection = self._selection()
        if not self._at_keyword("FROM") and isinstance(selection, SelectAll):
            if self._token.kind is TokenKind.COMMA and selection.alias is not None:
                self._fail(self._token, "expected FROM ('* AS name' stands alone)")
            if self._token.kind is TokenKind.COMMA:
                self._fail(self._token, "expected FROM ('*' stands alone)")
        self._keyword("FROM")
        self._clause = "FROM"
        table_token = self._token
        table = TableRef(self._identifier("a table name"), table_token.position)
        where: Condition | None = None
        if self._at_keyword("WHERE"):
            self._clause = "WHERE"
            self._advance()
            where = self._or()
            if self._token.kind is not TokenKind.END:
                self._unexpected("AND, OR or the end of the query")
        elif self._token.kind is not TokenKind.END:
            self._unexpected("WHERE or the end of the query")
        return Query(selection, table, where, self._text)

    def _selection(self) -> Selection:
        token = self._token
        if token.kind is TokenKind.STAR:
            self._advance()
            alias = self._alias()
            return SelectAll(alias, token.position)
        items = [self._select_item()]
        while self._token.kind is TokenKind.COMMA:
            self._advance()
            items.append(self._select_item())
        return Projection(tuple(items))

    def _select_item(self) -> SelectItem:
        token = self._token
        expression: ColumnRef | Parameter
        if token.kind is TokenKind.PARAM:
            self._advance()
            expression = Parameter(tuple(str(token.value).split(".")), token.position)
        elif token.kind is TokenKind.WORD and token.upper not in RESERVED:
            expression = self._column()
            if self._token.kind is TokenKind.LPAREN:
                self._fail(
                    token, f"functions (like has_more()) are not supported at protocol {PROTOCOL}"
                )
        elif token.kind is TokenKind.STAR:
            self._fail(token, "expected a column or a parameter ('*' stands alone)")
        else:
            self._unexpected("'*', a column or a parameter")
        return SelectItem(expression, self._alias(), token.position)

    def _alias(self) -> str | None:
        if not self._at_keyword("AS"):
            return None
        self._advance()
        return self._identifier("a name after AS")

    def _identifier(self, what: str) -> str:
        token = self._token
        if token.kind is not TokenKind.WORD or token.upper in RESERVED:
            self._unexpected(what)
        self._advance()
        return token.text

    def _column(self) -> ColumnRef:
        first = self._token
        path = [self._identifier("a column")]
        while self._token.kind is TokenKind.DOT:
            self._advance()
            path.append(self._identifier("a field name after '.'"))
        return ColumnRef(tuple(path), first.position)

    # -- conditions -------------------------------------------------------------------

    def _or(self) -> Condition:
        start = self._token.position
        operands = [self._and()]
        while self._at_keyword("OR"):
            self._advance()
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else Or(_flat(operands, Or), start)

    def _and(self) -> Condition:
        start = self._token.position
        operands = [self._not()]
        while self._at_keyword("AND"):
            self._advance()
            operands.append(self._not())
        return operands[0] if len(operands) == 1 else And(_flat(operands, And), start)

    def _not(self) -> Condition:
        token = self._token
        if token.upper == "NOT":
            self._advance()
            return Not(self._not(), token.position)
        return self._primary()

    def _primary(self) -> Condition:
        token = self._token
        if token.kind is TokenKind.LPAREN:
            self._advance()
            inner = self._or()
            if self._token.kind is not TokenKind.RPAREN:
                self._unexpected("AND, OR or ')'")
            self._advance()
            return inner
        return self._predicate()

    def _predicate(self) -> Condition:
        left_token = self._token
        left = self._operand()
        token = self._token
        if token.upper == "IS":
            self._advance()
            negated = self._at_keyword("NOT")
            if negated:
                self._advance()
            self._keyword("NULL")
            if not isinstance(left, ColumnRef):
                self._fail(left_token, "IS NULL and IS NOT NULL test a column")
            return IsNull(left, negated, left_token.position)
        if token.kind is TokenKind.OP:
            if token.text == "<>":
                self._fail(token, "write '!=' for 'not equal'")
            self._advance()
            right_token = self._token
            right = self._operand()
            return self._comparison(left, left_token, _OPERATORS[token.text], right, right_token)
        word = token.upper
        if word == "NOT" and self._peek().upper in _UNSUPPORTED_OPERATORS:
            self._unsupported(token, "NOT " + _UNSUPPORTED_OPERATORS[self._peek().upper])
        if word in _UNSUPPORTED_OPERATORS and token.kind is TokenKind.WORD:
            self._unsupported(token, _UNSUPPORTED_OPERATORS[word])
        self._unexpected("a comparison (=, !=, <, <=, >, >=) or IS [NOT] NULL")

    def _comparison(
        self,
        left: ColumnRef | Value,
        left_token: Token,
        op: ComparisonOp,
        right: ColumnRef | Value,
        right_token: Token,
    ) -> Comparison:
        if isinstance(left, ColumnRef) and not isinstance(right, ColumnRef):
            return Comparison(left, op, right, left_token.position)
        if isinstance(right, ColumnRef) and not isinstance(left, ColumnRef):
            return Comparison(right, op.mirrored, left, left_token.position)
        if isinstance(left, ColumnRef):
            self._fail(
                right_token,
                "a column is compared with a parameter or a literal, not with another column",
            )
        self._fail(left_token, "a comparison needs a column on one side")

    def _operand(self) -> ColumnRef | Value:
        token = self._token
        kind = token.kind
        if kind is TokenKind.PARAM:
            self._advance()
            return Parameter(tuple(str(token.value).split(".")), token.position)
        if kind in (TokenKind.STRING, TokenKind.INTEGER, TokenKind.FLOAT):
            self._advance()
            return Literal(token.value, token.position)
        if kind is TokenKind.MINUS:
            number = self._peek()
            if number.kind in (TokenKind.INTEGER, TokenKind.FLOAT):
                self._advance()
                self._advance()
                assert isinstance(number.value, int | float)
                return Literal(-number.value, token.position)
            self._advance()
            self._unexpected("a number after '-'")
        if token.upper in ("TRUE", "FALSE"):
            self._advance()
            return Literal(token.upper == "TRUE", token.position)
        if token.upper == "NULL":
            self._fail(token, "a comparison with NULL is never true; write IS NULL or IS NOT NULL")
        if kind is TokenKind.WORD and token.upper not in RESERVED:
            column = self._column()
            if self._token.kind is TokenKind.LPAREN:
                self._fail(token, f"functions are not supported at protocol {PROTOCOL}")
            return column
        self._unexpected("a column, a parameter or a literal")


def _flat(operands: list[Condition], kind: type[And] | type[Or]) -> tuple[Condition, ...]:
    """`a AND (b AND c)` is one AND of three; parentheses only matter between kinds."""
    flat: list[Condition] = []
    for operand in operands:
        if isinstance(operand, kind):
            flat.extend(operand.operands)
        else:
            flat.append(operand)
    return tuple(flat)


__all__ = ["PROTOCOL", "RESERVED", "parse_query"]
