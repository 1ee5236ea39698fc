"""Splits a view query into tokens. A character that cannot start a token becomes an
ERROR token rather than an exception, so the parser reports it with the clause it was in."""

from __future__ import annotations

import bisect
import enum
import re
from dataclasses import dataclass

from larder_sidecar.views.query.ast import Position


class TokenKind(enum.Enum):
    WORD = "word"  # identifier or keyword; keywords are told apart by the parser
    PARAM = "parameter"  # `:name` or `:a.b`, text without the colon
    STRING = "string"
    INTEGER = "integer"
    FLOAT = "number"
    OP = "operator"
    STAR = "'*'"
    COMMA = "','"
    DOT = "'.'"
    LPAREN = "'('"
    RPAREN = "')'"
    MINUS = "'-'"
    ERROR = "error"
    END = "end of query"


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str  # the source text of the token
    value: str | int | float  # the decoded value: string contents, number, word, error message
    position: Position

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind is TokenKind.WORD else ""

    def describe(self) -> str:
        """How an error message names the token."""
        if self.kind is TokenKind.END:
            return "end of query"
        return repr(self.text)


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_PARAM = re.compile(r":([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
# Longest first, so `<=` is not read as `<` then `=`. `<>` is read so that the parser can
# say that `!=` is the spelling the language uses.
_OPERATORS = ("!=", "<>", "<=", ">=", "=", "<", ">")
_PUNCTUATION = {
    "*": TokenKind.STAR,
    ",": TokenKind.COMMA,
    ".": TokenKind.DOT,
    "(": TokenKind.LPAREN,
    ")": TokenKind.RPAREN,
    "-": TokenKind.MINUS,
}


class _Positions:
    def __init__(self, text: str):
        self._line_starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]

    def at(self, offset: int) -> Position:
        line = bisect.bisect_right(self._line_starts, offset)
        return Position(line, offset - self._line_starts[line - 1] + 1, offset)


def tokenize(text: str) -> list[Token]:
    """All tokens of `text`, ending with END, or with the first ERROR."""
    positions = _Positions(text)
    tokens: list[Token] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            tokens.append(Token(TokenKind.END, "", "", positions.at(i)))
            return tokens
        token = _next_token(text, i, positions)
        tokens.append(token)
        if token.kind is TokenKind.ERROR:
            return tokens
        i += len(token.text)


def _next_token(text: str, i: int, positions: _Positions) -> Token:
    at = positions.at(i)
    char = text[i]
    if match := _WORD.match(text, i):
        return Token(TokenKind.WORD, match.group(), match.group(), at)
    if match := _NUMBER.match(text, i):
        literal = match.group()
        if match.group(1) or match.group(2):
            return Token(TokenKind.FLOAT, literal, float(literal), at)
        return Token(TokenKind.INTEGER, literal, int(literal), at)
    if char == ":":
        if match := _PARAM.match(text, i):
            return Token(TokenKind.PARAM, match.group(), match.group(1), at)
        return Token(
            TokenKind.ERROR, ":", "a parameter needs a name right after ':' (like :name)", at
        )
    if char == "'":
        return _string(text, i, at)
    for operator in _OPERATORS:
        if text.startswith(operator, i):
            return Token(TokenKind.OP, operator, operator, at)
    if char in _PUNCTUATION:
        return Token(_PUNCTUATION[char], char, char, at)
    if char == '"':
        hint = "string literals are quoted with single quotes ('New York')"
        return Token(TokenKind.ERROR, char, hint, at)
    return Token(TokenKind.ERROR, char, "this character has no meaning in a view query", at)


def _string(text: str, start: int, at: Position) -> Token:
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        if text[i] == "'":
            if text.startswith("''", i):  # a doubled quote is one quote, as in SQL
                chars.append("'")
                i += 2
                continue
            return Token(TokenKind.STRING, text[start : i + 1], "".join(chars), at)
        chars.append(text[i])
        i += 1
    return Token(TokenKind.ERROR, text[start:], "the string literal is never closed", at)
