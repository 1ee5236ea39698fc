"""Field paths (`address.city`) resolved against protobuf descriptors, and the type a query
sees at the end of one: the validator checks comparisons with it, the evaluator reads rows
with it, and storage will index by it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor


class Kind(enum.Enum):
    NUMBER = "number"
    STRING = "string"
    BOOL = "bool"
    BYTES = "bytes"
    ENUM = "enum"
    TIMESTAMP = "timestamp"
    MESSAGE = "message"

    @property
    def ordered(self) -> bool:
        """Whether <, <=, > and >= apply (otherwise only = and !=)."""
        return self in (Kind.NUMBER, Kind.STRING, Kind.TIMESTAMP)


_NUMBER_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_DOUBLE,
        FieldDescriptor.TYPE_FLOAT,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
    }
)

# The wrapper types hold one scalar; unset, they are NULL.
WRAPPERS = {
    "google.protobuf.DoubleValue": Kind.NUMBER,
    "google.protobuf.FloatValue": Kind.NUMBER,
    "google.protobuf.Int64Value": Kind.NUMBER,
    "google.protobuf.UInt64Value": Kind.NUMBER,
    "google.protobuf.Int32Value": Kind.NUMBER,
    "google.protobuf.UInt32Value": Kind.NUMBER,
    "google.protobuf.BoolValue": Kind.BOOL,
    "google.protobuf.StringValue": Kind.STRING,
    "google.protobuf.BytesValue": Kind.BYTES,
}
TIMESTAMP = "google.protobuf.Timestamp"

_TYPE_NAMES = {
    getattr(FieldDescriptor, name): name.removeprefix("TYPE_").lower()
    for name in dir(FieldDescriptor)
    if name.startswith("TYPE_")
}


@dataclass(frozen=True)
class ValueType:
    """What a path yields: its kind, a readable type name (`int64`, `customer.Status`,
    `google.protobuf.StringValue`), the enum's full name for enums, and whether it can be
    NULL (see docs/views.md, "NULL")."""

    kind: Kind
    name: str
    nullable: bool
    enum_name: str | None = None

    def comparable_with(self, other: ValueType) -> bool:
        if self.kind is not other.kind or self.kind is Kind.MESSAGE:
            return False
        return self.kind is not Kind.ENUM or self.enum_name == other.enum_name


@dataclass(frozen=True)
class ResolvedPath:
    """The fields a path walks through, outermost first, and the type at its end."""

    fields: tuple[FieldDescriptor, ...]
    type: ValueType

    @property
    def last(self) -> FieldDescriptor:
        return self.fields[-1]


class PathError(Exception):
    """A path that does not lead to a usable field; the message says why."""


def message_type(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    assert field.message_type is not None, f"{field.full_name} is not a message field"
    return field.message_type


def enum_type(field: FieldDescriptor) -> EnumDescriptor:
    """The enum type of an enum field."""
    assert field.enum_type is not None, f"{field.full_name} is not an enum field"
    return field.enum_type


def is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def type_name(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return str(message_type(field).full_name)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return str(enum_type(field).full_name)
    return _TYPE_NAMES[field.type]


def resolve(
    message: Descriptor, path: tuple[str, ...], *, repeated_last: bool = False
) -> ResolvedPath:
    """Walk `path` through `message`'s fields. Every field but the last must be a singular
    message; a repeated last field is accepted only with `repeated_last` (projections copy
    lists, filters compare single values)."""
    fields: list[FieldDescriptor] = []
    nullable = False
    current = message
    for depth, name in enumerate(path):
        field = current.fields_by_name.get(name)
        if field is None:
            known = ", ".join(f.name for f in current.fields) or "none"
            raise PathError(f"{current.full_name} has no field '{name}' (its fields: {known})")
        fields.append(field)
        is_last = depth == len(path) - 1
        if is_repeated(field) and not (is_last and repeated_last):
            raise PathError(
                f"'{'.'.join(path[: depth + 1])}' is a repeated field; "
                "a query compares single values"
            )
        if is_last:
            break
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            raise PathError(
                f"'{'.'.join(path[: depth + 1])}' is a {type_name(field)}, "
                f"it has no field '{path[depth + 1]}'"
            )
        nullable = True  # an unset message field makes everything below it NULL
        current = message_type(field)
    return ResolvedPath(tuple(fields), _value_type(fields[-1], nullable))


def _value_type(field: FieldDescriptor, nullable_above: bool) -> ValueType:
    nullable = nullable_above or bool(field.has_presence)
    name = type_name(field)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if name in WRAPPERS:
            return ValueType(WRAPPERS[name], name, nullable=True)
        if name == TIMESTAMP:
            return ValueType(Kind.TIMESTAMP, name, nullable=True)
        return ValueType(Kind.MESSAGE, name, nullable=True)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return ValueType(Kind.ENUM, name, nullable, enum_name=name)
    if field.type in _NUMBER_TYPES:
        return ValueType(Kind.NUMBER, name, nullable)
    if field.type == FieldDescriptor.TYPE_STRING:
        return ValueType(Kind.STRING, name, nullable)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return ValueType(Kind.BOOL, name, nullable)
    return ValueType(Kind.BYTES, name, nullable)


def same_field_type(a: FieldDescriptor, b: FieldDescriptor) -> bool:
    """Whether a value of field `a` can be stored in field `b` as it is."""
    return a.type == b.type and is_repeated(a) == is_repeated(b) and type_name(a) == type_name(b)


def describe_field_type(field: FieldDescriptor) -> str:
    return ("repeated " if is_repeated(field) else "") + type_name(field)
