"""Finished spans as an OTLP `ExportTraceServiceRequest`, written straight in protobuf's
wire format (imported with tracing on).

The OTLP exporter's own encoder builds a protobuf object per span, attribute and value
and then serialises them: some 50-90 µs of the export thread per span on the benchmark
machine, on a thread that holds the interpreter lock against the event loop. Here each
span becomes its bytes directly, with the resource's and the instrumentation scope's
bytes made once. The message is the same one, field for field (a test decodes both
with opentelemetry-proto and compares them): the same grouping by resource and scope,
the same span flags (only the "parent is remote" bits, as OpenTelemetry's encoder sets
them), an attribute of a type OTLP cannot carry left out with a log line.

The field numbers are those of opentelemetry-proto's `trace.proto`, `common.proto` and
`resource.proto`; "tag" below is protobuf's (field number << 3 | wire type).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

log = logging.getLogger("larder_sidecar.tracing")

_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack
_double = struct.Struct("<d").pack
_SMALL = [bytes((n,)) for n in range(0x80)]
_INT64 = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# Span.SpanKind in OTLP counts from 1 (0 is "unspecified"); OpenTelemetry's from 0.
_KINDS = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
# SpanFlags: the context has an "is remote" bit (0x100), and it is set (0x200).
_FLAGS_LOCAL_PARENT = b"\x85\x01" + _fixed32(0x100)  # Span.flags, field 16, fixed32
_FLAGS_REMOTE_PARENT = b"\x85\x01" + _fixed32(0x300)
_LINK_FLAGS_LOCAL = b"\x35" + _fixed32(0x100)  # Link.flags, field 6, fixed32
_LINK_FLAGS_REMOTE = b"\x35" + _fixed32(0x300)


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: a string, bytes or an embedded message."""
    length = len(payload)
    return tag + (_SMALL[length] if length < 0x80 else _varint(length)) + payload


def _value(value: Any) -> bytes:
    """An `AnyValue`'s content. A oneof member is written even when it is zero (it has
    presence), unlike a plain proto3 scalar."""
    if value is None:
        return b""
    if value is True:
        return b"\x10\x01"
    if value is False:
        return b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"the integer {value} does not fit OTLP's int64")
        return b"\x18" + _varint(value & _INT64)  # int64: two's complement in 10 bytes
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join([_field(b"\x0a", _value(v)) for v in value]))
    if isinstance(value, Mapping):
        pairs = [_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()]
        return _field(b"\x32", b"".join(pairs))
    raise TypeError(f"an attribute value of type {type(value).__name__} has no OTLP form")


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _value(value))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
    """Each attribute as a repeated `KeyValue` field `tag`; one OTLP cannot carry is left
    out (as OpenTelemetry's encoder does), the others kept."""
    if not attributes:
        return []
    out = []
    for key, value in attributes.items():
        try:
            out.append(_field(tag, _key_value(key, value)))
        except (TypeError, ValueError) as e:
            log.warning("tracing: attribute %r left out of the export: %s", key, e)
    return out


def _trace_state(items: Iterable[tuple[str, str]]) -> bytes:
    return ",".join([f"{key}={value}" for key, value in items]).encode()


def encode_span(span: ReadableSpan) -> bytes:
    """One `Span` message's content."""
    context = span.context
    parts = [
        b"\x0a\x10",  # trace_id, 16 bytes
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",  # span_id, 8 bytes
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        state = _trace_state(context.trace_state.items())
        if state:
            parts.append(_field(b"\x1a", state))
    parent = span.parent
    if parent is not None:
        parts.append(b"\x22\x08")  # parent_span_id, 8 bytes
        parts.append(parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_field(b"\x2a", span.name.encode()))
    parts.append(_KINDS[span.kind])
    if span.start_time:
        parts.append(b"\x39" + _fixed64(span.start_time))
    if span.end_time:
        parts.append(b"\x41" + _fixed64(span.end_time))
    parts.extend(_attributes(b"\x4a", span.attributes))
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        event_parts = [b"\x09" + _fixed64(event.timestamp)] if event.timestamp else []
        if event.name:
            event_parts.append(_field(b"\x12", event.name.encode()))
        event_parts.extend(_attributes(b"\x1a", event.attributes))
        if event.dropped_attributes:
            event_parts.append(b"\x20" + _varint(event.dropped_attributes))
        parts.append(_field(b"\x5a", b"".join(event_parts)))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        link_context = link.context
        link_parts = [
            b"\x0a\x10",
            link_context.trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            link_context.span_id.to_bytes(8, "big"),
            *_attributes(b"\x22", link.attributes),
        ]
        if link.dropped_attributes:
            link_parts.append(b"\x28" + _varint(link.dropped_attributes))
        link_parts.append(_LINK_FLAGS_REMOTE if link_context.is_remote else _LINK_FLAGS_LOCAL)
        parts.append(_field(b"\x6a", b"".join(link_parts)))
    if span.dropped_links:
        parts.append(b"\x70" + _varint(span.dropped_links))
    # The status is always there, if only empty (OpenTelemetry's encoder sets it so).
    status = span.status
    status_parts = b""
    if status.description:
        status_parts = _field(b"\x12", status.description.encode())
    if status.status_code.value:
        status_parts += b"\x18" + _varint(status.status_code.value)
    parts.append(_field(b"\x7a", status_parts))
    parts.append(
        _FLAGS_REMOTE_PARENT if parent is not None and parent.is_remote else _FLAGS_LOCAL_PARENT
    )
    return b"".join(parts)


def _resource(resource: Resource) -> bytes:
    return b"".join(_attributes(b"\x0a", resource.attributes))


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    parts = []
    if scope.name:
        parts.append(_field(b"\x0a", scope.name.encode()))
    if scope.version:
        parts.append(_field(b"\x12", scope.version.encode()))
    parts.extend(_attributes(b"\x1a", scope.attributes))
    return b"".join(parts)


class EncodedSpan:
    """A finished span already in its wire form, with what groups it in a request.

    `BoundedExport` queues these instead of the SDK's `ReadableSpan`s when the exporter
    is ours: a span's bytes (a few hundred) instead of the dozens of objects a
    `ReadableSpan` holds, which, kept alive until the next export, cost the event loop
    more in memory traffic than encoding the span there and then (8-14 µs per span,
    `bench/tracing_span_cost.py`)."""

    __slots__ = ("body", "resource", "scope")

    def __init__(self, span: ReadableSpan) -> None:
        self.resource = span.resource
        self.scope = span.instrumentation_scope or None
        self.body = _field(b"\x12", encode_span(span))  # as ScopeSpans.spans


class Encoder:
    """`encode(spans)`: the request's bytes. Keeps each resource's and scope's bytes (a
    sidecar has one of each), so a batch costs its spans and little more. A span can
    come as an `EncodedSpan`, encoded when it ended."""

    def __init__(self) -> None:
        # By identity: a `Resource` hashes by dumping its attributes as JSON, which
        # OpenTelemetry's encoder does for every span. The resource is kept in the value,
        # so its id is not reused while it is here.
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[InstrumentationScope | None, bytes] = {}

    def encode(self, spans: Sequence[ReadableSpan | EncodedSpan]) -> bytes:
        # Grouped as OTLP wants them, resource then scope, in the order first seen. (A
        # provider gives all its spans one resource object; equal resources in distinct
        # objects would come as two `ResourceSpans`, which a collector reads alike.)
        groups: dict[int, tuple[Resource, dict[InstrumentationScope | None, list[bytes]]]] = {}
        for span in spans:
            done = span if isinstance(span, EncodedSpan) else EncodedSpan(span)
            resource = done.resource
            group = groups.get(id(resource))
            if group is None:
                group = groups[id(resource)] = (resource, {})
            encoded = group[1].get(done.scope)
            if encoded is None:
                encoded = group[1][done.scope] = []
            encoded.append(done.body)
        out = []
        for resource, scopes in groups.values():
            parts = [_field(b"\x0a", self._resource(resource))]  # ResourceSpans.resource
            for scope, encoded in scopes.items():
                scope_spans = [_field(b"\x0a", self._scope(scope)), *encoded]
                if scope is not None and scope.schema_url:
                    scope_spans.append(_field(b"\x1a", scope.schema_url.encode()))
                parts.append(_field(b"\x12", b"".join(scope_spans)))  # .scope_spans
            if resource.schema_url:
                parts.append(_field(b"\x1a", resource.schema_url.encode()))
            out.append(_field(b"\x0a", b"".join(parts)))  # the request's resource_spans
        return b"".join(out)

    def _resource(self, resource: Resource) -> bytes:
        known = self._resources.get(id(resource))
        if known is not None and known[0] is resource:
            return known[1]
        if len(self._resources) > 16:  # never, in a sidecar: one resource
            self._resources.clear()
        encoded = _resource(resource)
        self._resources[id(resource)] = (resource, encoded)
        return encoded

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        encoded = self._scopes.get(scope)
        if encoded is None:
            if len(self._scopes) > 16:
                self._scopes.clear()
            encoded = self._scopes[scope] = _scope(scope)
        return encoded
