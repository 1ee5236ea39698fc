"""The values storage keeps for a row's filter columns, read from the row at write time,
and the same conversion for request parameters at query time, so that a stored column and
a parameter compare in the store exactly as the query language's evaluator compares them.

| Query type | Stored as |
|---|---|
| numbers and their wrappers | the number (an integer beyond int64 as a float) |
| string, `StringValue` | the text (compared by code point: UTF-8 byte order) |
| bool, `BoolValue` | 0 or 1 |
| bytes, `BytesValue` | the bytes |
| enum | its number |
| `Timestamp` | text `SSSSSSSSSSSSNNNNNNNNN`: seconds since 0001-01-01 (12 digits), nanos (9) |
| any other message | 1 when set (only `IS [NOT] NULL` reads it) |

NULL (see docs/views.md) is stored as NULL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from .query.columns import TIMESTAMP, WRAPPERS, message_type, resolve

StoredValue = int | float | str | bytes | None
Extractor = Callable[[Message], StoredValue]

_INT64_MAX = 2**63 - 1


def _number(value: Any) -> StoredValue:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value > _INT64_MAX:
        return float(value)  # uint64 beyond SQLite's INTEGER: ordered, not exact
    if isinstance(value, str | bytes | int | float):
        return value
    raise TypeError(f"unexpected column value {value!r}")


_SECONDS_BEFORE_EPOCH = 62_135_596_800
"""Seconds from 0001-01-01T00:00:00Z, the earliest valid Timestamp, to the epoch."""


def _timestamp(ts: Any) -> str:
    # Fixed-width digits sort as text exactly as (seconds, nanos) sort as numbers, over the
    # whole valid range (years 1 to 9999); nanoseconds since the epoch would overflow
    # SQLite's 64-bit integers after the year 2262.
    return f"{int(ts.seconds) + _SECONDS_BEFORE_EPOCH:012d}{int(ts.nanos):09d}"


def _converter(field: FieldDescriptor) -> Callable[[Any], StoredValue]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        name = message_type(field).full_name
        if name in WRAPPERS:
            return lambda wrapper: _number(wrapper.value)
        if name == TIMESTAMP:
            return _timestamp
        return lambda _message: 1
    return _number


def extractor(message_type_: Descriptor, path: Sequence[str]) -> Extractor:
    """Reads the stored value at `path` of a `message_type_` message; None for NULL."""
    fields = resolve(message_type_, tuple(path)).fields
    *outer, last = fields
    names = [f.name for f in outer]
    present = bool(last.has_presence)
    convert = _converter(last)

    def get(message: Message) -> StoredValue:
        for name in names:
            if not message.HasField(name):
                return None
            message = getattr(message, name)
        if present and not message.HasField(last.name):
            return None
        return convert(getattr(message, last.name))

    return get
