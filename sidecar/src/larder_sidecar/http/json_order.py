"""Replies' JSON fields in declaration order, as protobuf's canonical JSON prints them.

`json_format.MessageToDict` with defaults included puts the fields that are set
first and the ones printed for their default value after them, so a reply's field
order changes with its content. This puts them back in declaration order (extension
keys after them, `@type` first in an `Any`), with a plan made once per message type:
applying it is one pass over the keys, small next to `MessageToDict` itself
(`bench/json_reply.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.descriptor_pool import DescriptorPool

Reorder = Callable[[Any], Any]

_ANY = "google.protobuf.Any"
# Rendered as a string, a number, or user data (Struct's keys): nothing to reorder.
_OPAQUE = frozenset(
    f"google.protobuf.{name}"
    for name in (
        "Timestamp",
        "Duration",
        "FieldMask",
        "Struct",
        "Value",
        "ListValue",
        "Empty",
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
)


def _unchanged(value: Any) -> Any:
    return value


class _Plan:
    """The JSON names of one message type in declaration order, and how to reorder the
    values of its message-typed fields."""

    __slots__ = ("children", "names")

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.children: dict[str, Reorder] = {}

    def apply(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        ordered = {name: value[name] for name in self.names if name in value}
        for name, child in self.children.items():
            if name in ordered:
                ordered[name] = child(ordered[name])
        if len(ordered) != len(value):  # extensions ("[pkg.ext]") keep their place after
            for key, item in value.items():
                ordered.setdefault(key, item)
        return ordered


class JsonOrder:
    """Reorders `MessageToDict` output; plans are cached per message type."""

    def __init__(self, pool: DescriptorPool) -> None:
        """`pool` resolves the types packed in `Any` fields (the route's pool)."""
        self._pool = pool
        self._plans: dict[Descriptor, _Plan] = {}

    def message(self, descriptor: Descriptor) -> Reorder:
        """The reorder for a dict rendered from a `descriptor` message."""
        if descriptor.full_name in _OPAQUE:
            return _unchanged
        if descriptor.full_name == _ANY:
            return self._any
        return self._plan(descriptor).apply

    def field(self, field: FieldDescriptor) -> Reorder:
        """The reorder for the value of `field` (a message, list or map of them)."""
        message = field.message_type
        if message is None:
            return _unchanged
        if message.GetOptions().map_entry:
            value = self.field(message.fields_by_name["value"])
            if value is _unchanged:
                return _unchanged
            return lambda entries: {key: value(item) for key, item in entries.items()}
        one = self.message(message)
        if one is _unchanged or not field.is_repeated:
            return one
        return lambda items: [one(item) for item in items]

    def _plan(self, descriptor: Descriptor) -> _Plan:
        plan = self._plans.get(descriptor)
        if plan is None:
            # Stored before its children are planned: a type may contain itself.
            plan = self._plans[descriptor] = _Plan()
            plan.names = tuple(f.json_name for f in descriptor.fields)
            for f in descriptor.fields:
                child = self.field(f)
                if child is not _unchanged:
                    plan.children[f.json_name] = child
        return plan

    def _any(self, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        type_url = value.get("@type")
        if not isinstance(type_url, str):
            return value
        rest = {k: v for k, v in value.items() if k != "@type"}
        try:
            # MessageToDict found the packed type in this pool, or it would have failed.
            packed = self._pool.FindMessageTypeByName(type_url.rpartition("/")[2])
        except KeyError:
            return {"@type": type_url, **rest}
        if packed.full_name in _OPAQUE or packed.full_name == _ANY:
            return {"@type": type_url, **rest}  # {"@type", "value"}
        return {"@type": type_url, **self._plan(packed).apply(rest)}
