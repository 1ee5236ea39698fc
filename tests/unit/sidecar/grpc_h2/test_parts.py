"""The gRPC front's parts on their own: HPACK memo, messages, deadlines, metadata."""

from __future__ import annotations

import grpc
import hpack
import pytest
from larder_sidecar.http.grpc_h2.headers import (
    HeaderDecoder,
    MalformedRequest,
    literal,
    request_head,
)
from larder_sidecar.http.grpc_h2.messages import (
    CallError,
    MessageReader,
    metadata_block,
    parse_timeout,
    percent_encoded,
    status_trailers,
)
from larder_sidecar.outcome import metadata_pairs, protocol_metadata

from .client import message


def _decoded(block: bytes) -> list[tuple[str, str]]:
    # hpack hands over str pairs unless raw=True; its hints say bytes.
    return [(str(name), str(value)) for name, value in hpack.Decoder().decode(block)]


def test_a_repeated_block_is_decoded_once_while_the_table_is_unchanged() -> None:
    encoder, decoder = hpack.Encoder(), HeaderDecoder(1 << 16)
    fields = [(":method", "POST"), (":path", "/a.B/C"), ("x-id", "1")]
    first = encoder.encode(fields)  # inserts into the table
    assert decoder.decode(first) == [(b":method", b"POST"), (b":path", b"/a.B/C"),
                                     (b"x-id", b"1")]
    again = encoder.encode(fields)  # indexed references only
    assert again != first
    assert decoder.decode(again) is decoder.decode(again)
    # A block that changes the table clears the memo: `again`'s references now name the
    # newer entries (the memo would still say x-id 1).
    changed = encoder.encode([(":method", "POST"), (":path", "/a.B/D"), ("x-id", "2")])
    assert decoder.decode(changed)[1] == (b":path", b"/a.B/D")
    assert decoder.decode(again)[2] == (b"x-id", b"2")


def test_our_literals_decode_with_any_decoder() -> None:
    block = literal("grpc-status", "0") + literal("x-long", "v" * 300)
    assert _decoded(block) == [("grpc-status", "0"), ("x-long", "v" * 300)]


@pytest.mark.parametrize(
    "headers",
    [
        [(b":path", b"/a"), (b":scheme", b"http")],
        [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a"), (b":status", b"200")],
        [(b"x", b"1"), (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a")],
        [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a"), (b"X-Up", b"1")],
        [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a"), (b"te", b"gzip")],
        [(b":method", b"POST"), (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a")],
    ],
    ids=["no-method", "response-pseudo", "pseudo-after-field", "upper-case", "te", "twice"],
)
def test_malformed_request_heads(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(MalformedRequest):
        request_head(headers)


def test_messages_arrive_in_any_pieces() -> None:
    reader = MessageReader(100, None)
    data = message(b"one") + message(b"") + message(b"three")
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
    assert reader.messages == [b"one", b"", b"three"]
    assert not reader.partial


def test_a_message_over_the_limit_is_refused_by_its_prefix() -> None:
    reader = MessageReader(10, None)
    with pytest.raises(CallError) as raised:
        reader.feed(b"\x00\x00\x00\x00\x0b")
    assert raised.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(("raw", "seconds"), [(b"1S", 1.0), (b"250m", 0.25), (b"2M", 120.0),
                                              (b"99999999n", 0.099999999), (b"1H", 3600.0)])
def test_timeouts(raw: bytes, seconds: float) -> None:
    assert parse_timeout(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", [b"", b"S", b"1", b"123456789S", b"1s", b"-1S", b"1.5S"])
def test_bad_timeouts(raw: bytes) -> None:
    with pytest.raises(CallError):
        parse_timeout(raw)


def test_percent_encoding() -> None:
    assert percent_encoded("plain text") == b"plain text"
    assert percent_encoded("100% ünïcode\r\n") == b"100%25 %C3%BCn%C3%AFcode%0D%0A"


def test_status_trailers_carry_details_and_leave_out_reserved_names() -> None:
    block = status_trailers(grpc.StatusCode.NOT_FOUND, "gone", [
        ("grpc-status-details-bin", b"\x08\x05"), ("x-ok", "1"), ("content-type", "x"),
        ("Bad Name", "1"), ("x-crlf", "a\r\nb"),
    ])
    assert _decoded(block) == [
        ("grpc-status", "5"), ("grpc-message", "gone"), ("grpc-status-details-bin", "CAU"),
        ("x-ok", "1"),
    ]


def test_reply_metadata_under_a_bin_key_is_always_base64() -> None:
    block = metadata_block([("x-a-bin", "AP8="), ("x-b-bin", b"\x00\xff"), ("x-c-bin", "?!")])
    assert _decoded(block) == [("x-a-bin", "AP8="), ("x-b-bin", "AP8"), ("x-c-bin", "PyE")]


def test_binary_metadata_travels_as_bytes_in_the_protocol() -> None:
    metadata = protocol_metadata([("x-trace-bin", "AP8"), ("x-tenant", "acme"),
                                  ("x-junk-bin", "not base64!")])
    kinds = [(e.key, e.WhichOneof("value")) for e in metadata.entries]
    assert kinds == [("x-trace-bin", "bytes_value"), ("x-tenant", "string_value"),
                     ("x-junk-bin", "string_value")]
    assert metadata.entries[0].bytes_value == b"\x00\xff"
    assert metadata_pairs(metadata) == [("x-trace-bin", "AP8="), ("x-tenant", "acme"),
                                        ("x-junk-bin", "not base64!")]
