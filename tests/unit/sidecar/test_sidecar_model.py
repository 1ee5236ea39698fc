"""The model built from a discovery spec: entity keys, validation, settings."""

from __future__ import annotations

from typing import Any

import pytest
from akkaserverless import annotations_pb2
from akkaserverless.protocol import discovery_pb2
from google.protobuf import descriptor_pb2
from larder_protocol import ACTION, EVENT_SOURCED_ENTITY, VIEW
from larder_sidecar.model import EntityIdTooLong, KeyError_, Kind, SpecError, build_model

F = descriptor_pb2.FieldDescriptorProto


def _file(key_fields: dict[str, tuple[int, int]], *, streamed: bool = False) -> bytes:
    """A descriptor set with `test.Svc` (methods Do, Other) over `test.Req`."""
    fd = descriptor_pb2.FileDescriptorProto(name="test.proto", package="test", syntax="proto3")
    req = fd.message_type.add(name="Req")
    for name, (number, ftype) in key_fields.items():
        f = req.field.add(name=name, number=number, type=ftype, label=F.LABEL_OPTIONAL)
        extensions: Any = f.options.Extensions  # the generated extension is untyped
        extensions[annotations_pb2.field].entity_key = True
    req.field.add(name="payload", number=9, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    fd.message_type.add(name="Res")
    svc = fd.service.add(name="Svc")
    svc.method.add(name="Do", input_type=".test.Req", output_type=".test.Res")
    svc.method.add(
        name="Other", input_type=".test.Req", output_type=".test.Res", server_streaming=streamed
    )
    return descriptor_pb2.FileDescriptorSet(file=[fd]).SerializeToString()


def _spec(
    proto: bytes,
    ctype: str = EVENT_SOURCED_ENTITY,
    version: tuple[int, int] = (0, 7),
    timeout_ms: int = 0,
) -> Any:
    c = discovery_pb2.Component(component_type=ctype, service_name="test.Svc")
    if ctype == ACTION:
        c.component.SetInParent()
    else:
        c.entity.entity_type = "svc"
        if timeout_ms:
            c.entity.passivation_strategy.timeout.timeout = timeout_ms
    return discovery_pb2.Spec(
        proto=proto,
        components=[c],
        service_info=discovery_pb2.ServiceInfo(
            protocol_major_version=version[0], protocol_minor_version=version[1]
        ),
    )


def test_single_string_key() -> None:
    model = build_model(_spec(_file({"id": (1, F.TYPE_STRING)}), timeout_ms=1500), {(0, 7)})
    method = model.method("test.Svc", "Do")
    assert method is not None and method.key is not None
    assert method.component.kind is Kind.EVENT_SOURCED
    assert method.component.entity_type == "svc"
    assert method.component.passivation_timeout == 1.5
    assert method.input_type_url == "type.googleapis.com/test.Req"
    req = method.input_class(id="cart-1", payload="x")
    assert method.key.extract(req) == "cart-1"


def test_several_keys_in_field_number_order_escaped() -> None:
    model = build_model(
        _spec(_file({"b": (2, F.TYPE_INT64), "a": (1, F.TYPE_STRING), "c": (3, F.TYPE_BOOL)})),
        {(0, 7)},
    )
    method = model.method("test.Svc", "Do")
    assert method is not None and method.key is not None
    assert method.key.extract(method.input_class(a="x,y\\z", b=-4, c=True)) == "x\\,y\\\\z,-4,true"
    # Different field values never produce the same id.
    one = method.key.extract(method.input_class(a="p,", b=1))
    two = method.key.extract(method.input_class(a="p", b=1))
    assert one != two


def test_empty_string_key_is_refused() -> None:
    model = build_model(_spec(_file({"id": (1, F.TYPE_STRING)})), {(0, 7)})
    method = model.method("test.Svc", "Do")
    assert method is not None and method.key is not None
    with pytest.raises(KeyError_, match="empty entity key field 'id'"):
        method.key.extract(method.input_class())


def test_an_entity_id_over_the_limit_is_refused_in_utf8_bytes() -> None:
    model = build_model(
        _spec(_file({"a": (1, F.TYPE_STRING), "b": (2, F.TYPE_STRING)})),
        {(0, 7)},
        max_entity_id_bytes=16,
    )
    method = model.method("test.Svc", "Do")
    assert method is not None and method.key is not None
    assert method.key.extract(method.input_class(a="é" * 4, b="x" * 7)) == "éééé,xxxxxxx"
    # 8 characters but 16 + 1 + 1 bytes once joined.
    with pytest.raises(EntityIdTooLong, match="longer than 16 bytes \\(18\\)"):
        method.key.extract(method.input_class(a="é" * 8, b="x"))
    with pytest.raises(KeyError_):  # what the dispatcher maps to INVALID_ARGUMENT
        method.key.extract(method.input_class(a="x" * 100_000, b="x"))


def test_every_problem_reported_at_once() -> None:
    spec = _spec(_file({}, streamed=True), version=(0, 5))
    with pytest.raises(SpecError) as info:
        build_model(spec, {(0, 7)})
    problems = info.value.problems
    assert any("protocol version 0.5" in p for p in problems)
    assert sum("has no field marked" in p for p in problems) == 2


def test_actions_need_no_key_and_view_methods_need_view_options() -> None:
    model = build_model(_spec(_file({}), ctype=ACTION), {(0, 7)})
    method = model.method("test.Svc", "Do")
    assert method is not None and method.key is None and method.component.kind is Kind.ACTION
    # Views are discovered (tests/unit/sidecar/views/test_view_spec.py); methods without
    # view options are refused.
    refused = r"every method of a view is a view\.update or a view\.query"
    with pytest.raises(SpecError, match=refused):
        build_model(_spec(_file({}), ctype=VIEW), {(0, 7)})


def test_undecodable_descriptor_set() -> None:
    with pytest.raises(SpecError, match="cannot be decoded"):
        build_model(_spec(b"\xff\xff"), {(0, 7)})


@pytest.mark.parametrize("ctype", [EVENT_SOURCED_ENTITY, ACTION])
def test_forward_headers_pick_request_headers_case_insensitively(ctype: str) -> None:
    spec = _spec(_file({"id": (1, F.TYPE_STRING)}), ctype)
    settings = spec.components[0].component if ctype == ACTION else spec.components[0].entity
    settings.forward_headers.extend(["X-Tenant", "authorization"])
    method = build_model(spec, {(0, 7)}).method("test.Svc", "Do")
    assert method is not None
    headers = [("x-tenant", "acme"), ("x-other", "no"), ("authorization", "Bearer t")]
    assert method.component.forwarded(headers) == [
        ("x-tenant", "acme"),
        ("authorization", "Bearer t"),
    ]


def test_no_forward_headers_forward_nothing() -> None:
    method = build_model(_spec(_file({"id": (1, F.TYPE_STRING)})), {(0, 7)}).method(
        "test.Svc", "Do"
    )
    assert method is not None
    assert method.component.forwarded([("x-tenant", "acme")]) == ()


def test_an_entity_type_with_the_journal_separator_is_refused() -> None:
    spec = _spec(_file({"id": (1, F.TYPE_STRING)}))
    spec.components[0].entity.entity_type = "carts|v2"
    with pytest.raises(SpecError, match=r"entity type 'carts\|v2' contains '\|'"):
        build_model(spec, {(0, 7)})
