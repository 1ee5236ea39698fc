"""Protocol messages compared as protobuf, not as bytes.

Two encodings of one message are the same message: a frontend may write an
empty string field explicitly (`0a00`) or leave it out, order map entries as it
likes, and so on. What the protocol can observe is the decoded message, so that
is what the TCK compares:

- Message-typed fields keep their *presence*: `Reply.payload` set (even to an
  empty `Any`) differs from absent, a `reply` in a oneof differs from none, a
  `snapshot` or `state_action` present differs from absent. Protobuf message
  equality already treats these so; in the protocol each of them means
  something (a reply with a payload vs no reply, a snapshot to store, a state
  change).
- A `google.protobuf.Any` is opaque bytes to protobuf equality, so before
  comparing, every `Any` whose type the TCK knows (the model's and the
  protocol's types, in the default pool) is decoded and re-encoded canonically,
  recursively. The type URL stays significant: the sidecar resolves payloads by
  it. An `Any` of an unknown type, or whose bytes do not decode as its type,
  keeps its bytes: there is nothing better to compare.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

ANY = "google.protobuf.Any"


def canonical(message: Message) -> Message:
    """A copy of `message` whose `Any` payloads are re-encoded canonically."""
    copy = type(message)()
    copy.CopyFrom(message)
    _canonicalize(copy)
    return copy


def equivalent(expected: Message, actual: Message) -> bool:
    """Whether the two messages are the same protocol message (see the module docstring)."""
    if expected.DESCRIPTOR.full_name != actual.DESCRIPTOR.full_name:
        return False
    return canonical(expected) == canonical(actual)


def _canonicalize(message: Message) -> None:
    if message.DESCRIPTOR.full_name == ANY:
        _canonicalize_any(message)
        return
    for field, value in message.ListFields():
        entry: Descriptor | None = field.message_type
        if entry is None:
            continue
        if entry.GetOptions().map_entry:
            if entry.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                for item in value.values():
                    _canonicalize(item)
        elif field.is_repeated:
            for item in value:
                _canonicalize(item)
        else:
            _canonicalize(value)


def _canonicalize_any(any_message: Message) -> None:
    type_url: str = any_message.type_url  # type: ignore[attr-defined]
    name = type_url.rpartition("/")[2]
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return
    inner = message_factory.GetMessageClass(descriptor)()
    try:
        inner.ParseFromString(any_message.value)  # type: ignore[attr-defined]
    except DecodeError:
        return
    _canonicalize(inner)
    any_message.value = inner.SerializeToString(deterministic=True)  # type: ignore[attr-defined]
