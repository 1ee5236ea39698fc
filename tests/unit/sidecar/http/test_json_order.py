"""JSON replies in declaration order: nested messages, maps of messages, lists, `Any`."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, json_format
from google.protobuf.message_factory import GetMessageClass
from larder_sidecar.http.json_order import JsonOrder

F = descriptor_pb2.FieldDescriptorProto


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(any_pb2.DESCRIPTOR.serialized_pb))
    file = descriptor_pb2.FileDescriptorProto(
        name="order.proto", package="t", syntax="proto3", dependency=["google/protobuf/any.proto"]
    )
    # Declared out of number order: canonical JSON follows the declaration.
    inner = file.message_type.add(name="Inner")
    inner.field.add(name="y", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    inner.field.add(name="x", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    outer = file.message_type.add(name="Outer")
    entry = outer.nested_type.add(name="ByNameEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(
        name="value", number=2, type=F.TYPE_MESSAGE, type_name=".t.Inner", label=F.LABEL_OPTIONAL
    )
    outer.field.add(name="z", number=5, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    outer.field.add(
        name="inner", number=1, type=F.TYPE_MESSAGE, type_name=".t.Inner", label=F.LABEL_OPTIONAL
    )
    outer.field.add(
        name="list", number=2, type=F.TYPE_MESSAGE, type_name=".t.Inner", label=F.LABEL_REPEATED
    )
    outer.field.add(
        name="by_name", number=3, json_name="byName", type=F.TYPE_MESSAGE,
        type_name=".t.Outer.ByNameEntry", label=F.LABEL_REPEATED,
    )
    outer.field.add(
        name="any", number=4, type=F.TYPE_MESSAGE, type_name=".google.protobuf.Any",
        label=F.LABEL_OPTIONAL,
    )
    pool.Add(file)
    return pool


def _render(pool: descriptor_pool.DescriptorPool, document: dict[str, Any]) -> str:
    descriptor = pool.FindMessageTypeByName("t.Outer")
    message = GetMessageClass(descriptor)()
    json_format.ParseDict(document, message, descriptor_pool=pool)
    rendered = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, descriptor_pool=pool
    )
    return json.dumps(JsonOrder(pool).message(descriptor)(rendered), separators=(",", ":"))


def test_every_depth_follows_the_declaration() -> None:
    pool = _pool()
    document = {
        "inner": {"x": "1"},
        "list": [{"x": "2"}],
        "byName": {"k": {"x": "3"}},
        "any": {"@type": "type.googleapis.com/t.Inner", "x": "4"},
    }
    assert _render(pool, document) == (
        '{"z":"","inner":{"y":"","x":"1"},"list":[{"y":"","x":"2"}],'
        '"byName":{"k":{"y":"","x":"3"}},"any":{"@type":"type.googleapis.com/t.Inner",'
        '"y":"","x":"4"}}'
    )


def test_an_unset_reply_is_in_order_too() -> None:
    assert _render(_pool(), {}) == '{"z":"","list":[],"byName":{}}'
