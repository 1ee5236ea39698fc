"""JSON ⇄ protobuf for one route: request from path, query and body; reply to JSON.

The request is assembled as one JSON document (body, then path variables and query
parameters set into it at their field paths) and parsed once with protobuf's
canonical JSON mapping, so every input error is reported the same way. Replies are
rendered the way Akka Serverless's proxy did: lowerCamelCase names, fields with
default values included, no insignificant whitespace; fields in declaration order, as
protobuf's canonical JSON prints them (`json_order.py`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from .json_order import JsonOrder
from .path_template import PercentDecodingError, unquote_strict
from .routes import TEXT_MESSAGE_TYPES, WRAPPER_TYPES, Bindings, Route

JSON_CONTENT_TYPE = "application/json"
_HTTP_BODY = "google.api.HttpBody"
# Both spellings of bool a URL might carry; anything else is a client mistake.
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


class TranscodeError(ValueError):
    """The HTTP request does not describe a valid request message; the client must fix it."""


class ReplyDecodeError(RuntimeError):
    """The reply bytes are not the method's output type: a bug in the user function or in us."""


class Transcoder:
    """Converts requests and replies for one route; built once per route at start."""

    def __init__(self, route: Route) -> None:
        self.route = route
        method = route.method
        self._input_class: type[Message] = GetMessageClass(method.input)
        self._output_class: type[Message] = GetMessageClass(method.output)
        self._pool = method.input.file.pool
        self._whole_body = route.body == "*"
        self._body_field: FieldDescriptor | None = (
            None if route.body in ("", "*") else method.input.fields_by_name[route.body]
        )
        self._path_fields: dict[tuple[str, ...], tuple[FieldDescriptor, ...]] = {
            variable.field_path: _field_chain(method.input, variable.field_path)
            for variable in route.template.variables
        }
        self._response_field: FieldDescriptor | None = (
            method.output.fields_by_name[route.response_body] if route.response_body else None
        )
        self._http_body_reply = method.output.full_name == _HTTP_BODY
        order = JsonOrder(self._pool)
        field = self._response_field
        self._reorder_reply = order.message(method.output) if field is None else order.field(field)
        self._query_fields: dict[str, tuple[FieldDescriptor, ...]] = {}

    def decode_request(self, bindings: Bindings, query: str | None, body: bytes) -> Message:
        """Build the request message; raise TranscodeError saying what is wrong."""
        document = self._body_document(body)
        for field_path, text in bindings:
            chain = self._path_fields[field_path]
            _put(document, chain, _from_text(chain[-1], text, ".".join(field_path)), append=False)
        if query:
            self._apply_query(document, query, bindings)
        message = self._input_class()
        try:
            json_format.ParseDict(document, message, descriptor_pool=self._pool)
        except (json_format.ParseError, ValueError, RecursionError) as e:
            raise TranscodeError(f"invalid {self.route.method.input.full_name}: {e}") from e
        return message

    def encode_reply(self, payload: bytes) -> tuple[bytes, str]:
        """Render the reply bytes as the HTTP body and its content type."""
        try:
            reply = self._output_class.FromString(payload)
        except DecodeError as e:
            raise ReplyDecodeError(
                f"the reply of {self.route.method.path} is not a valid "
                f"{self.route.method.output.full_name}: {e}"
            ) from e
        if self._http_body_reply:
            content_type: str = getattr(reply, "content_type", "") or "application/octet-stream"
            data: bytes = getattr(reply, "data", b"")
            return data, content_type
        rendered: Any
        field = self._response_field
        if field is None:
            rendered = self._to_dict(reply)
        elif field.message_type is not None and not field.is_repeated:
            rendered = self._to_dict(getattr(reply, field.name))
        else:
            rendered = self._to_dict(reply).get(field.json_name)
        rendered = self._reorder_reply(rendered)
        text = json.dumps(rendered, separators=(",", ":"), ensure_ascii=False)
        return text.encode(), JSON_CONTENT_TYPE

    def _to_dict(self, message: Message) -> Any:
        return json_format.MessageToDict(
            message, always_print_fields_with_no_presence=True, descriptor_pool=self._pool
        )

    def _body_document(self, body: bytes) -> dict[str, Any]:
        if not self._whole_body and self._body_field is None:
            return {}
        if not body.strip():
            return {}
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise TranscodeError(f"the request body is not valid JSON: {e}") from e
        if self._body_field is not None:
            return {self._body_field.name: parsed}
        if not isinstance(parsed, dict):
            raise TranscodeError(
                f"the request body must be a JSON object (a {self.route.method.input.full_name}),"
                f" not {type(parsed).__name__}"
            )
        return parsed

    def _apply_query(self, document: dict[str, Any], query: str, bindings: Bindings) -> None:
        bound = {".".join(field_path) for field_path, _ in bindings}
        seen: set[str] = set()
        try:
            unquote_strict(query, "the query")  # parse_qsl keeps a bad escape as text
        except PercentDecodingError as e:
            raise TranscodeError(str(e)) from e
        for key, text in parse_qsl(query, keep_blank_values=True):
            if self._whole_body:
                raise TranscodeError(
                    f"query parameter {key!r} is not allowed: this route takes the whole "
                    "request from the body"
                )
            chain = self._query_chain(key)
            dotted = ".".join(f.name for f in chain)
            if dotted in bound:
                raise TranscodeError(f"query parameter {key!r} sets a field the path already sets")
            if self._body_field is not None and chain[0] is self._body_field:
                raise TranscodeError(
                    f"query parameter {key!r} sets a field this route takes from the body"
                )
            leaf = chain[-1]
            if not leaf.is_repeated and dotted in seen:
                raise TranscodeError(f"query parameter {key!r} is repeated, but its field is not")
            seen.add(dotted)
            _put(document, chain, _from_text(leaf, text, key), append=leaf.is_repeated)

    def _query_chain(self, key: str) -> tuple[FieldDescriptor, ...]:
        chain = self._query_fields.get(key)
        if chain is not None:
            return chain
        current: Descriptor | None = self.route.method.input
        fields: list[FieldDescriptor] = []
        for part in key.split("."):
            found = None
            if current is not None:
                found = current.fields_by_name.get(part) or current.fields_by_camelcase_name.get(
                    part
                )
            if found is None:
                raise TranscodeError(
                    f"query parameter {key!r} does not name a field of "
                    f"{self.route.method.input.full_name}"
                )
            fields.append(found)
            current = found.message_type if not found.is_repeated else None
        leaf = fields[-1]
        if _is_map(leaf) or (
            leaf.message_type is not None
            and leaf.message_type.full_name not in WRAPPER_TYPES
            and leaf.message_type.full_name not in TEXT_MESSAGE_TYPES
        ):
            raise TranscodeError(
                f"query parameter {key!r} names a message or map field; only scalar fields "
                "can be set from the query"
            )
        chain = tuple(fields)
        # Bounded by the message's field paths, since unknown keys raise above.
        self._query_fields[key] = chain
        return chain


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.message_type is not None
        and field.is_repeated
        and field.message_type.GetOptions().map_entry
    )


def _field_chain(message: Descriptor, field_path: Sequence[str]) -> tuple[FieldDescriptor, ...]:
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for name in field_path:
        assert current is not None, "routes are validated before transcoders are built"
        found = current.fields_by_name[name]
        chain.append(found)
        current = found.message_type
    return tuple(chain)


def _from_text(field: FieldDescriptor, text: str, where: str) -> Any:
    """A path or query string as the JSON value json_format expects for `field`."""
    if field.message_type is not None:
        if field.message_type.full_name in WRAPPER_TYPES:
            return _from_text(field.message_type.fields_by_name["value"], text, where)
        return text
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise TranscodeError(f"{where!r} must be true or false, not {text!r}")
    # json_format converts strings for every other scalar type (numbers, enums, base64 bytes).
    return text


def _put(
    document: dict[str, Any], chain: Sequence[FieldDescriptor], value: Any, *, append: bool
) -> None:
    """Set `value` at the field path `chain` in a JSON document, whichever spelling it uses."""
    current = document
    for field in chain[:-1]:
        key = _key_in(current, field)
        child = current.get(key)
        if child is None:
            child = current[key] = {}
        elif not isinstance(child, dict):
            raise TranscodeError(f"field {field.name!r} in the request must be a JSON object")
        current = child
    leaf = chain[-1]
    if append:
        key = _key_in(current, leaf)
        existing = current.setdefault(key, [])
        if not isinstance(existing, list):
            raise TranscodeError(f"field {leaf.name!r} in the request must be a JSON array")
        existing.append(value)
        return
    # A path variable wins over the same field in the body, whichever name the body used.
    current.pop(leaf.json_name, None)
    current[leaf.name] = value


def _key_in(document: dict[str, Any], field: FieldDescriptor) -> str:
    if field.name not in document and field.json_name in document:
        return field.json_name
    return field.name
