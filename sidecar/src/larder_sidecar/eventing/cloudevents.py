"""CloudEvents on Kafka records (binary content mode): decoding commands, encoding replies.

Incoming headers are accepted with the `ce-` prefix (what Akka Serverless writes) and
the `ce_` prefix of the CloudEvents Kafka binding; the content type comes from
`ce-datacontenttype`, else `content-type`, else it is `application/protobuf`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from .. import tracing
from ..invoke import MetadataPairs
from ..model import KeyError_, Method

SPEC_VERSION = "1.0"
PROTOBUF = "application/protobuf"
JSON = "application/json"
TEXT = "text/plain"
_PROTOBUF_ALIASES = (PROTOBUF, "application/x-protobuf", "application/octet-stream")
_ANY = "google.protobuf.Any"
_STRING_VALUE = "google.protobuf.StringValue"
_TYPE_URL_PREFIX = "type.googleapis.com/"

RecordHeaders = Sequence[tuple[str, bytes | None]]


class MalformedRecord(ValueError):
    """A record cannot become a command for its method; retrying will not help."""


@dataclass(frozen=True, slots=True)
class Command:
    """A record decoded into a call of its method."""

    payload: bytes
    """The method's input, serialized."""
    parsed: Message
    entity_id: str | None
    """None for actions."""
    metadata: MetadataPairs
    dedup_key: str | None = None
    """The idempotency key derived from the record (`dedup.py`), None without one."""


def ce_attributes(headers: RecordHeaders) -> dict[str, str]:
    """CloudEvents attributes (without prefix) from `ce-`/`ce_` headers; undecodable
    values are left out."""
    out: dict[str, str] = {}
    for key, value in headers:
        lowered = key.lower()
        if value is None or not lowered.startswith(("ce-", "ce_")):
            continue
        try:
            out[lowered[3:]] = value.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return out


def _metadata(headers: RecordHeaders) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, value in headers:
        if value is None:
            continue
        try:
            pairs.append((key.lower(), value.decode("utf-8")))
        except UnicodeDecodeError:
            continue  # binary headers have no string form in the protocol's metadata
    return pairs


def _content_type(attributes: dict[str, str], headers: RecordHeaders) -> str:
    raw = attributes.get("datacontenttype")
    if raw is None:
        for key, value in headers:
            if key.lower() == "content-type" and value is not None:
                raw = value.decode("utf-8", "replace")
                break
    # Parameters (`; charset=utf-8`) do not change how the payload is read.
    return (raw or PROTOBUF).split(";")[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Decoded:
    """A record's payload read as a message type."""

    payload: bytes
    """The message, serialized."""
    parsed: Message
    attributes: dict[str, str]
    """Its CloudEvents attributes, without prefix (`subject`, `type`, ...)."""
    metadata: MetadataPairs


def decode_message(
    message: Message, value: bytes | None, headers: RecordHeaders
) -> Decoded:
    """Read a record into `message` (an empty instance of the type it must be); raise
    MalformedRecord saying why it cannot be."""
    attributes = ce_attributes(headers)
    spec = attributes.get("specversion")
    if spec is not None and spec != SPEC_VERSION:
        raise MalformedRecord(f"ce-specversion {spec!r} is not supported (only {SPEC_VERSION})")
    data = value or b""
    content_type = _content_type(attributes, headers)
    input_type = message.DESCRIPTOR.full_name
    ce_type = attributes.get("type", "").removeprefix(_TYPE_URL_PREFIX)
    if content_type in _PROTOBUF_ALIASES:
        if input_type == _ANY:
            if not ce_type:
                raise MalformedRecord(
                    "the method takes google.protobuf.Any, so ce-type must name the "
                    "payload's message type"
                )
            message.type_url = _TYPE_URL_PREFIX + ce_type  # type: ignore[attr-defined]
            message.value = data  # type: ignore[attr-defined]
        else:
            if ce_type and ce_type != input_type:
                raise MalformedRecord(
                    f"ce-type {ce_type!r} is not the method's input type {input_type}; "
                    "the producer wrote to the wrong topic or set the wrong ce-type"
                )
            try:
                message.ParseFromString(data)
            except DecodeError as e:
                raise MalformedRecord(f"the payload is not a valid {input_type}: {e}") from e
    elif content_type == JSON:
        try:
            json_format.Parse(
                data.decode("utf-8"), message, descriptor_pool=message.DESCRIPTOR.file.pool,  # type: ignore[arg-type]
            )
        except (UnicodeDecodeError, json_format.ParseError, json.JSONDecodeError) as e:
            raise MalformedRecord(f"the JSON payload is not a valid {input_type}: {e}") from e
    elif content_type == TEXT:
        if input_type != _STRING_VALUE:
            raise MalformedRecord(
                f"a text/plain payload can only feed a method taking {_STRING_VALUE}, "
                f"not {input_type}"
            )
        try:
            message.value = data.decode("utf-8")  # type: ignore[attr-defined]
        except UnicodeDecodeError as e:
            raise MalformedRecord(f"the text/plain payload is not UTF-8: {e}") from e
    else:
        raise MalformedRecord(
            f"content type {content_type!r} is not supported ({PROTOBUF}, {JSON}, {TEXT})"
        )
    # A protobuf payload of the input type travels as it came (as gRPC requests do).
    payload = data if content_type in _PROTOBUF_ALIASES and input_type != _ANY else (
        message.SerializeToString()
    )
    return Decoded(payload, message, attributes, _metadata(headers))


def decode(method: Method, value: bytes | None, headers: RecordHeaders) -> Command:
    """Turn a record into its method's input; raise MalformedRecord saying why not."""
    decoded = decode_message(method.input_class(), value, headers)
    entity_id: str | None = None
    if method.key is not None:
        try:
            entity_id = method.key.extract(decoded.parsed)
        except KeyError_ as e:
            raise MalformedRecord(str(e)) from e
    return Command(decoded.payload, decoded.parsed, entity_id, decoded.metadata)


def reply_headers(
    method: Method, event_id: str, entity_id: str | None
) -> list[tuple[str, bytes]]:
    """CloudEvents headers for a reply of `method` published to its topic."""
    headers = [
        ("ce-specversion", SPEC_VERSION),
        ("ce-id", event_id),
        ("ce-source", method.model.path),
        ("ce-type", method.model.output.full_name),
        ("ce-datacontenttype", PROTOBUF),
        ("ce-time", datetime.now(UTC).isoformat().replace("+00:00", "Z")),
    ]
    if entity_id is not None:
        headers.append(("ce-subject", entity_id))
    return [(k, v.encode("utf-8")) for k, v in headers]


def new_event_id() -> str:
    return str(uuid.uuid4())


# Trace context in Kafka headers: W3C's names, as OpenTelemetry's Kafka instrumentation
# writes them, and the CloudEvents distributed-tracing extension's (`ce-traceparent` in
# the binary mode these headers use; `ce_traceparent` in the Kafka binding's spelling).
_TRACE_ALIASES = {
    f"{prefix}{name}": name
    for name in ("traceparent", "tracestate")
    for prefix in ("", "ce-", "ce_")
}


def trace_context(metadata: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The record's trace context as W3C `traceparent`/`tracestate` pairs."""
    return [(_TRACE_ALIASES[k], v) for k, v in metadata if k in _TRACE_ALIASES]


def traced(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """`headers` plus the current span's trace context (both spellings), while tracing
    is on; a record's consumers continue the trace from it."""
    if not tracing.enabled():
        return list(headers)
    added = tracing.inject([])
    kept = [(k, v) for k, v in headers if k.lower() not in _TRACE_ALIASES]
    return [
        *kept,
        *((k, v.encode()) for k, v in added),
        *((f"ce-{k}", v.encode()) for k, v in added),
    ]


def publishing(topic: str) -> AbstractContextManager[tracing.Span | None]:
    """The PRODUCER span around queueing a record for `topic`."""
    return tracing.span(
        f"publish {topic}",
        tracing.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        },
    )
