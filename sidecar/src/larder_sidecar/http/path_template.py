"""`google.api.http` path templates: parsed once, matched against request paths.

The grammar (from google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

A template is flattened into a tuple of segments (a literal string, or `*` / `**`
wildcards) plus the variables' spans over them, so matching is a single pass over
the request's segments with no regular expressions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from larder_sidecar.logs import clip

SINGLE = "*"
MULTI = "**"

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SLASH_ESCAPE = re.compile("%2F", re.IGNORECASE)


_BAD_ESCAPE = re.compile("%(?![0-9A-Fa-f]{2})")


class PercentDecodingError(ValueError):
    """A request path's %-encoding does not decode: the client must fix the URL."""


def unquote_strict(raw: str, what: str) -> str:
    """%-decode `raw` as UTF-8; raise PercentDecodingError (naming `what`) when a `%` is not
    followed by two hex digits or the bytes are not UTF-8, instead of keeping the text as
    it came (which would make `%zz` part of an id)."""
    if "%" not in raw:
        return raw
    bad = _BAD_ESCAPE.search(raw)
    if bad is not None:
        raise PercentDecodingError(
            f"{what} {clip(raw, 100)!r} has a '%' not followed by two hex digits "
            f"(at {bad.start()}); write a literal '%' as %25"
        )
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError as e:
        raise PercentDecodingError(
            f"{what} {clip(raw, 100)!r} does not %-decode to UTF-8: {e.reason}"
        ) from e


class TemplateError(ValueError):
    """A path template does not follow the `google.api.http` grammar; fix the proto."""


@dataclass(frozen=True, slots=True)
class Variable:
    field_path: tuple[str, ...]
    """Proto field names from the request message down to the bound field."""
    start: int
    end: int | None
    """Exclusive end segment index; None when the variable ends with `**` (to the path's end)."""


@dataclass(frozen=True, slots=True)
class PathTemplate:
    source: str
    segments: tuple[str, ...]
    """Each is a literal, `*` (exactly one segment) or `**` (the rest, zero or more)."""
    literal_segments: tuple[bool, ...]
    """Per segment: true when it is a literal (wildcards are spelled `*`/`**` in `segments`)."""
    verb: str | None
    variables: tuple[Variable, ...]
    has_tail: bool
    """True when the template ends with `**` and so matches any number of trailing segments."""
    fixed_length: int
    """Segments a matching path has at least (all of them, unless the template ends with `**`)."""

    @property
    def is_literal(self) -> bool:
        return all(self.literal_segments)

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sort key: at the first differing segment, literals beat `*`, which beats `**`;
        with equal segments, a template with a custom verb beats one without, since
        `/turkeys/{id}` would otherwise swallow `/turkeys/t1:watch`."""
        key = [
            0 if literal else (1 if text == SINGLE else 2)
            for text, literal in zip(self.segments, self.literal_segments, strict=True)
        ]
        key.append(0 if self.verb is not None else 1)
        return tuple(key)

    def match(self, segments: list[str]) -> list[tuple[tuple[str, ...], str]] | None:
        """Bind this template's variables from a request path's raw (still %-encoded) segments.

        `segments` is the path split on `/` after the leading slash. Returns None when the
        path does not match, else (field path, decoded value) pairs.
        """
        count = len(segments)
        if self.verb is not None:
            if not count:
                return None
            last = segments[-1]
            suffix = ":" + self.verb
            if not last.endswith(suffix):
                return None
            segments = [*segments[:-1], last[: -len(suffix)]]
        fixed = self.fixed_length
        if count < fixed or (count > fixed and not self.has_tail):
            return None
        for index in range(fixed):
            if self.literal_segments[index]:
                if segments[index] != self.segments[index]:
                    return None
            elif not segments[index]:
                # `*` matches one non-empty segment, so `/a//b` is not `/a/*/b`.
                return None
        bindings: list[tuple[tuple[str, ...], str]] = []
        for variable in self.variables:
            end = count if variable.end is None else variable.end
            if end - variable.start == 1 and variable.end is not None:
                bindings.append((variable.field_path, _decode_segment(segments[variable.start])))
            else:
                parts = segments[variable.start : end]
                bindings.append((variable.field_path, "/".join(map(_decode_keep_slash, parts))))
        return bindings


def _decode_segment(raw: str) -> str:
    return unquote_strict(raw, "the path segment")


def _decode_keep_slash(raw: str) -> str:
    # A multi-segment variable keeps `%2F` encoded so its value's own slashes stay
    # distinguishable from the segment separators (http.proto's "reserved expansion").
    if "%" not in raw:
        return raw
    return "%2F".join(unquote_strict(part, "the path") for part in _SLASH_ESCAPE.split(raw))


def parse_template(source: str) -> PathTemplate:
    """Parse a path template; raise TemplateError naming the problem."""
    if not source.startswith("/"):
        raise TemplateError(f"path template {source!r} does not start with '/'")
    body, verb = _split_verb(source)
    segments: list[str] = []
    literal: list[bool] = []
    variables: list[Variable] = []
    for piece in _split_top_level(body[1:], source):
        if piece.startswith("{"):
            if not piece.endswith("}"):
                raise TemplateError(f"path template {source!r}: unterminated variable {piece!r}")
            variables.append(_parse_variable(piece[1:-1], len(segments), segments, literal, source))
        else:
            _add_segment(piece, segments, literal, source)
    for index, text in enumerate(segments):
        if text == MULTI and not literal[index] and index != len(segments) - 1:
            raise TemplateError(f"path template {source!r}: '**' must be the last segment")
    seen: set[tuple[str, ...]] = set()
    for variable in variables:
        if variable.field_path in seen:
            raise TemplateError(
                f"path template {source!r} binds field {'.'.join(variable.field_path)!r} twice"
            )
        seen.add(variable.field_path)
    has_tail = bool(segments) and segments[-1] == MULTI and not literal[-1]
    return PathTemplate(
        source=source,
        segments=tuple(segments),
        literal_segments=tuple(literal),
        verb=verb,
        variables=tuple(variables),
        has_tail=has_tail,
        fixed_length=len(segments) - 1 if has_tail else len(segments),
    )


def _split_verb(source: str) -> tuple[str, str | None]:
    depth = 0
    last_slash = -1
    colon = -1
    for index, char in enumerate(source):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError(f"path template {source!r}: unbalanced '}}'")
        elif depth == 0 and char == "/":
            last_slash = index
        elif depth == 0 and char == ":":
            colon = index
    if depth != 0:
        raise TemplateError(f"path template {source!r}: unbalanced '{{'")
    if colon > last_slash:
        verb = source[colon + 1 :]
        if not verb or "/" in verb:
            raise TemplateError(f"path template {source!r}: empty custom verb after ':'")
        return source[:colon], verb
    return source, None


def _split_top_level(text: str, source: str) -> list[str]:
    pieces: list[str] = []
    depth = 0
    start = 0
    for index, char in enumerate(text):
        if char == "{":
            if depth:
                raise TemplateError(f"path template {source!r}: variables cannot nest")
            depth = 1
        elif char == "}":
            depth = 0
        elif char == "/" and not depth:
            pieces.append(text[start:index])
            start = index + 1
    pieces.append(text[start:])
    return pieces


def _add_segment(text: str, segments: list[str], literal: list[bool], source: str) -> None:
    if text in (SINGLE, MULTI):
        segments.append(text)
        literal.append(False)
        return
    if not text:
        raise TemplateError(f"path template {source!r} has an empty segment")
    if any(char in text for char in "{}*"):
        raise TemplateError(f"path template {source!r}: bad literal segment {text!r}")
    segments.append(text)
    literal.append(True)


def _parse_variable(
    inner: str, start: int, segments: list[str], literal: list[bool], source: str
) -> Variable:
    name, has_pattern, pattern = inner.partition("=")
    field_path = tuple(name.split("."))
    if not all(_IDENT.match(part) for part in field_path):
        raise TemplateError(f"path template {source!r}: {name!r} is not a field path")
    if not has_pattern:
        pattern = SINGLE
    for text in pattern.split("/"):
        _add_segment(text, segments, literal, source)
    ends_with_tail = segments[-1] == MULTI and not literal[-1]
    end = None if ends_with_tail else len(segments)
    return Variable(field_path=field_path, start=start, end=end)
