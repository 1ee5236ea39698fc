"""Decoding records into commands by their CloudEvents headers; reply headers."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2, wrappers_pb2
from larder_sidecar.eventing.cloudevents import MalformedRecord, decode, reply_headers
from larder_sidecar.model import UserFunctionModel

ADD = "evunit.Add"


def ce(type_name: str = ADD, content_type: str | None = "application/protobuf",
       prefix: str = "ce-") -> list[tuple[str, bytes]]:
    headers = [(f"{prefix}specversion", b"1.0"), (f"{prefix}type", type_name.encode())]
    if content_type is not None:
        headers.append((f"{prefix}datacontenttype", content_type.encode()))
    return headers


def test_protobuf_payload_with_entity_key_and_metadata(model: UserFunctionModel) -> None:
    method = model.methods["/evunit.Cart/AddItem"]
    payload = method.input_class(id="c1", amount=3).SerializeToString()
    command = decode(method, payload, [*ce(), ("X-Trace", b"t1"), ("raw", b"\xff")])
    assert command.entity_id == "c1"
    assert command.payload == payload
    assert ("ce-type", ADD) in command.metadata
    assert ("x-trace", "t1") in command.metadata
    assert all(k != "raw" for k, _ in command.metadata)  # not UTF-8: no string form


@pytest.mark.parametrize("headers", [ce(prefix="ce_"), ce(content_type=None), []])
def test_binding_prefix_and_defaults(model: UserFunctionModel, headers: list[tuple[str, bytes]]
                                     ) -> None:
    method = model.methods["/evunit.Cart/AddItem"]
    payload = method.input_class(id="c2", amount=1).SerializeToString()
    assert decode(method, payload, headers).entity_id == "c2"


def test_json_and_content_type_header(model: UserFunctionModel) -> None:
    method = model.methods["/evunit.Cart/AddItem"]
    command = decode(method, b'{"id": "j", "amount": "4"}',
                     [("content-type", b"application/json; charset=utf-8")])
    assert command.entity_id == "j"
    assert method.input_class.FromString(command.payload).amount == 4  # type: ignore[attr-defined]


def test_text_plain_feeds_a_string_value(model: UserFunctionModel) -> None:
    method = model.methods["/evunit.Echo/Say"]
    command = decode(method, "héllo".encode(), ce("text", "text/plain"))
    assert wrappers_pb2.StringValue.FromString(command.payload).value == "héllo"
    assert command.entity_id is None


def test_any_input_takes_whatever_ce_type_names(model: UserFunctionModel) -> None:
    method = model.methods["/evunit.Echo/Anything"]
    command = decode(method, b"\x08\x01", ce("some.Thing"))
    wrapped = any_pb2.Any.FromString(command.payload)
    assert (wrapped.type_url, wrapped.value) == ("type.googleapis.com/some.Thing", b"\x08\x01")


@pytest.mark.parametrize(
    ("method", "value", "headers", "message"),
    [
        ("/evunit.Cart/AddItem", b"\xff\xff", ce(), "the payload is not a valid evunit.Add"),
        ("/evunit.Cart/AddItem", b"", ce("evunit.Other"),
         "ce-type 'evunit.Other' is not the method's input type evunit.Add"),
        ("/evunit.Cart/AddItem", b"", ce(), "empty entity key field 'id'"),
        ("/evunit.Cart/AddItem", b"{", ce(content_type="application/json"),
         "the JSON payload is not a valid evunit.Add"),
        ("/evunit.Cart/AddItem", b"x", ce(content_type="text/plain"),
         "a text/plain payload can only feed a method taking google.protobuf.StringValue"),
        ("/evunit.Cart/AddItem", b"x", ce(content_type="application/avro"),
         "content type 'application/avro' is not supported"),
        ("/evunit.Cart/AddItem", b"", [("ce-specversion", b"0.3")],
         "ce-specversion '0.3' is not supported"),
        ("/evunit.Echo/Say", b"\xff", ce(content_type="text/plain"), "not UTF-8"),
        ("/evunit.Echo/Anything", b"", [], "ce-type must name the payload's message type"),
    ],
)
def test_malformed_records_say_why(model: UserFunctionModel, method: str, value: bytes,
                                   headers: list[tuple[str, bytes]], message: str) -> None:
    with pytest.raises(MalformedRecord) as caught:
        decode(model.methods[method], value, headers)
    assert message in str(caught.value)


def test_reply_headers(model: UserFunctionModel) -> None:
    headers = dict(reply_headers(model.methods["/evunit.Cart/AddItem"], "id-1", "c1"))
    assert headers.pop("ce-time").endswith(b"Z")
    assert headers == {
        "ce-specversion": b"1.0", "ce-id": b"id-1", "ce-source": b"/evunit.Cart/AddItem",
        "ce-type": b"evunit.Total", "ce-datacontenttype": b"application/protobuf",
        "ce-subject": b"c1",
    }
    action = dict(reply_headers(model.methods["/evunit.Echo/Say"], "id-2", None))
    assert "ce-subject" not in action
