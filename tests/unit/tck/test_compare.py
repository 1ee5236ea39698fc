"""Protocol messages are compared as protobuf: Any payloads decoded, sub-message presence kept."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import any_pb2
from larder_tck import model
from larder_tck import protocol as p
from larder_tck.compare import canonical, equivalent
from larder_tck.expect import CaseFailed, expect_equal

RESPONSE = "larder.tck.model.valueentity.Response"
PERSISTED = "larder.tck.model.Persisted"


@pytest.fixture(scope="module")
def tck_model() -> model.Model:
    return model.load()


def _any(type_name: str, value: bytes) -> Any:
    return any_pb2.Any(type_url=model.TYPE_URL_PREFIX + type_name, value=value)


def _reply(payload: Any | None) -> Any:
    out = p.action.ActionResponse()
    out.reply.SetInParent()
    if payload is not None:
        out.reply.payload.CopyFrom(payload)
    return out


def test_empty_string_written_explicitly_is_the_same_payload(tck_model: model.Model) -> None:
    # protobufjs writes Response{message: ""} as 0a00; the canonical encoding is empty.
    canonical_form = model.pack(tck_model.new(RESPONSE, message=""))
    assert canonical_form.value == b""
    explicit = _any(RESPONSE, bytes.fromhex("0a00"))
    assert equivalent(_reply(canonical_form), _reply(explicit))
    expect_equal("reply", _reply(canonical_form), _reply(explicit))


def test_payloads_nested_in_repeated_and_deep_fields_are_decoded(tck_model: model.Model) -> None:
    def es_reply(encoded: bytes) -> Any:
        reply = p.es.EventSourcedReply(command_id=1, events=[_any(PERSISTED, encoded)] * 2)
        reply.snapshot.CopyFrom(_any(PERSISTED, encoded))
        reply.client_action.reply.payload.CopyFrom(_any(PERSISTED, encoded))
        return p.es.EventSourcedStreamOut(reply=reply)

    assert equivalent(es_reply(b""), es_reply(bytes.fromhex("0a00")))
    assert not equivalent(es_reply(b""), es_reply(bytes.fromhex("0a0141")))


def test_different_payload_values_differ(tck_model: model.Model) -> None:
    a = _reply(model.pack(tck_model.new(RESPONSE, message="a")))
    b = _reply(model.pack(tck_model.new(RESPONSE, message="b")))
    assert not equivalent(a, b)
    with pytest.raises(CaseFailed) as caught:
        expect_equal("reply", a, b)
    assert '-        message: "a"' in str(caught.value)
    assert '+        message: "b"' in str(caught.value)


def test_presence_of_sub_messages_is_significant(tck_model: model.Model) -> None:
    empty_payload = model.pack(tck_model.new(RESPONSE))
    # No response at all, a Reply without payload, a Reply with an empty payload: all distinct.
    no_reply = p.action.ActionResponse()
    bare_reply, empty_reply = _reply(None), _reply(empty_payload)
    assert not equivalent(no_reply, bare_reply)
    assert not equivalent(bare_reply, empty_reply)
    assert not equivalent(no_reply, empty_reply)
    # A snapshot of the empty state is a snapshot; no snapshot is none.
    with_snapshot = p.es.EventSourcedReply(command_id=1)
    with_snapshot.snapshot.CopyFrom(model.pack(tck_model.new(PERSISTED)))
    assert not equivalent(p.es.EventSourcedReply(command_id=1), with_snapshot)


def test_type_url_stays_significant(tck_model: model.Model) -> None:
    packed = model.pack(tck_model.new(RESPONSE, message="x"))
    other = any_pb2.Any(type_url="json.akkaserverless.com/" + RESPONSE, value=packed.value)
    assert not equivalent(_reply(packed), _reply(other))


def test_unknown_or_malformed_payloads_compare_as_bytes(tck_model: model.Model) -> None:
    unknown_a = _any("no.such.Type", bytes.fromhex("0a00"))
    unknown_b = _any("no.such.Type", b"")
    assert not equivalent(_reply(unknown_a), _reply(unknown_b))
    assert equivalent(_reply(unknown_a), _reply(unknown_a))
    malformed = _any(RESPONSE, b"\xff\xff")
    assert canonical(_reply(malformed)) == _reply(malformed)
    assert not equivalent(_reply(malformed), _reply(_any(RESPONSE, b"")))


def test_different_message_types_are_never_equivalent() -> None:
    assert not equivalent(p.action.ActionResponse(), p.es.EventSourcedReply())


def test_canonical_leaves_the_original_untouched(tck_model: model.Model) -> None:
    original = _reply(_any(RESPONSE, bytes.fromhex("0a00")))
    canonical(original)
    assert original.reply.payload.value == bytes.fromhex("0a00")
