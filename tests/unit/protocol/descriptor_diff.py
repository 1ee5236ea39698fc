"""Field-by-field differences between two sets of proto file descriptors.

Every difference is one readable line: ``<file> <path>: <what> expected <x>, got <y>``,
where the path names the element (``message Foo.Bar field baz``). Source code
info is ignored; options are compared by their deterministic serialization, so
custom options (extensions) count too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from google.protobuf import descriptor_pb2
from google.protobuf.message import Message

FileDescriptorProto = descriptor_pb2.FileDescriptorProto
DescriptorProto = descriptor_pb2.DescriptorProto
EnumDescriptorProto = descriptor_pb2.EnumDescriptorProto
FieldDescriptorProto = descriptor_pb2.FieldDescriptorProto
ServiceDescriptorProto = descriptor_pb2.ServiceDescriptorProto

_T = TypeVar("_T")


def parse_set(serialized: bytes) -> dict[str, FileDescriptorProto]:
    files = descriptor_pb2.FileDescriptorSet.FromString(serialized)
    return {f.name: f for f in files.file}


def diff_files(expected: FileDescriptorProto, actual: FileDescriptorProto) -> list[str]:
    """Every way ``actual`` differs from ``expected`` (both describe the same file)."""
    out: list[str] = []
    where = expected.name
    _same(out, where, "package", expected.package, actual.package)
    _same(out, where, "syntax", expected.syntax or "proto2", actual.syntax or "proto2")
    _same(out, where, "imports", sorted(expected.dependency), sorted(actual.dependency))
    _same(
        out,
        where,
        "public imports",
        sorted(expected.dependency[i] for i in expected.public_dependency),
        sorted(actual.dependency[i] for i in actual.public_dependency),
    )
    _options(out, where, expected.options, actual.options)
    _each(out, where, "message", expected.message_type, actual.message_type, _message)
    _each(out, where, "enum", expected.enum_type, actual.enum_type, _enum)
    _each(out, where, "service", expected.service, actual.service, _service)
    _each(out, where, "extension", expected.extension, actual.extension, _field)
    return out


def _message(
    out: list[str], where: str, expected: DescriptorProto, actual: DescriptorProto
) -> None:
    _options(out, where, expected.options, actual.options)
    _same(
        out,
        where,
        "oneofs",
        [o.name for o in expected.oneof_decl],
        [o.name for o in actual.oneof_decl],
    )
    _same(
        out,
        where,
        "field order",
        [f.name for f in expected.field],
        [f.name for f in actual.field],
    )
    _each(out, where, "field", expected.field, actual.field, _field)
    _each(out, where, "message", expected.nested_type, actual.nested_type, _message)
    _each(out, where, "enum", expected.enum_type, actual.enum_type, _enum)
    _each(out, where, "extension", expected.extension, actual.extension, _field)
    _same(
        out,
        where,
        "extension ranges",
        [(r.start, r.end) for r in expected.extension_range],
        [(r.start, r.end) for r in actual.extension_range],
    )
    _same(
        out,
        where,
        "reserved ranges",
        [(r.start, r.end) for r in expected.reserved_range],
        [(r.start, r.end) for r in actual.reserved_range],
    )
    _same(out, where, "reserved names", list(expected.reserved_name), list(actual.reserved_name))


def _field(
    out: list[str], where: str, expected: FieldDescriptorProto, actual: FieldDescriptorProto
) -> None:
    _same(out, where, "number", expected.number, actual.number)
    _same(
        out,
        where,
        "type",
        FieldDescriptorProto.Type.Name(expected.type),
        FieldDescriptorProto.Type.Name(actual.type),
    )
    _same(out, where, "type_name", expected.type_name, actual.type_name)
    _same(
        out,
        where,
        "label",
        FieldDescriptorProto.Label.Name(expected.label),
        FieldDescriptorProto.Label.Name(actual.label),
    )
    _same(out, where, "extendee", expected.extendee, actual.extendee)
    _same(out, where, "default_value", expected.default_value, actual.default_value)
    _same(
        out,
        where,
        "oneof_index",
        expected.oneof_index if expected.HasField("oneof_index") else None,
        actual.oneof_index if actual.HasField("oneof_index") else None,
    )
    # The PyPI SDK's embedded descriptors were stripped of json_name by protoc's
    # Python generator; compare it whenever the published side states it.
    if expected.HasField("json_name"):
        _same(out, where, "json_name", expected.json_name, actual.json_name)
    _same(out, where, "proto3_optional", expected.proto3_optional, actual.proto3_optional)
    _options(out, where, expected.options, actual.options)


def _enum(
    out: list[str], where: str, expected: EnumDescriptorProto, actual: EnumDescriptorProto
) -> None:
    _options(out, where, expected.options, actual.options)
    _same(
        out,
        where,
        "values",
        [(v.name, v.number) for v in expected.value],
        [(v.name, v.number) for v in actual.value],
    )
    actual_values = {v.name: v for v in actual.value}
    for value in expected.value:
        other = actual_values.get(value.name)
        if other is not None:
            _options(out, f"{where} value {value.name}", value.options, other.options)


def _service(
    out: list[str], where: str, expected: ServiceDescriptorProto, actual: ServiceDescriptorProto
) -> None:
    _options(out, where, expected.options, actual.options)
    actual_methods = {m.name: m for m in actual.method}
    _same(
        out,
        where,
        "methods",
        [m.name for m in expected.method],
        [m.name for m in actual.method],
    )
    for method in expected.method:
        other = actual_methods.get(method.name)
        if other is None:
            continue
        at = f"{where} rpc {method.name}"
        _same(out, at, "input_type", method.input_type, other.input_type)
        _same(out, at, "output_type", method.output_type, other.output_type)
        _same(out, at, "client_streaming", method.client_streaming, other.client_streaming)
        _same(out, at, "server_streaming", method.server_streaming, other.server_streaming)
        _options(out, at, method.options, other.options)


def _each(
    out: list[str],
    where: str,
    kind: str,
    expected: Iterable[_T],
    actual: Iterable[_T],
    compare: Callable[[list[str], str, _T, _T], None],
) -> None:
    """Pair elements by name; report missing and unexpected ones, compare the rest."""
    expected_by_name = {_name(e): e for e in expected}
    actual_by_name = {_name(a): a for a in actual}
    for name, item in expected_by_name.items():
        at = f"{where} {kind} {name}"
        if name not in actual_by_name:
            out.append(f"{at}: missing")
        else:
            compare(out, at, item, actual_by_name[name])
    out.extend(
        f"{where} {kind} {name}: not in the published descriptor"
        for name in sorted(actual_by_name.keys() - expected_by_name.keys())
    )


def _name(element: object) -> str:
    name = getattr(element, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"descriptor element without a name: {element!r}")
    return name


def _options(out: list[str], where: str, expected: Message, actual: Message) -> None:
    expected_bytes = expected.SerializeToString(deterministic=True)
    actual_bytes = actual.SerializeToString(deterministic=True)
    if expected_bytes == actual_bytes:
        return
    shown_expected, shown_actual = _show(expected), _show(actual)
    if shown_expected == shown_actual:
        # Same text, different bytes: options unknown to this pool (custom
        # extensions) differ; only the raw bytes tell them apart.
        shown_expected, shown_actual = expected_bytes.hex(), actual_bytes.hex()
    out.append(f"{where}: options expected {shown_expected}, got {shown_actual}")


def _show(options: Message) -> str:
    return "{" + str(options).strip().replace("\n", "; ") + "}"


def _same(out: list[str], where: str, what: str, expected: object, actual: object) -> None:
    if expected != actual:
        out.append(f"{where}: {what} expected {expected!r}, got {actual!r}")


def files_in_scope(files: Sequence[str], prefixes: Sequence[str]) -> list[str]:
    return sorted(name for name in files if name.startswith(tuple(prefixes)))
