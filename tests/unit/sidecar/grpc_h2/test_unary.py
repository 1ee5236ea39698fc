"""Unary calls of the user's services, served by the public port itself."""

from __future__ import annotations

import asyncio
import gzip
import struct

import pytest
from larder_sidecar.http import PublicServer

from .client import Client, message, request_headers
from .conftest import MAX_MESSAGE, UNARY, FakeDispatcher, value


@pytest.fixture
async def client(public: PublicServer) -> Client:
    return await Client.connect(public.port)


async def test_a_call_reaches_the_dispatcher_and_its_reply_comes_back(
    client: Client, dispatcher: FakeDispatcher
) -> None:
    headers = request_headers(UNARY, x_tenant="acme", x_other="dropped",
                              x_trace_bin="AAEC", grpc_accept_encoding="gzip")
    response = await client.call(headers, message(value(b"hello")))
    assert response.headers[":status"] == "200"
    assert response.headers["content-type"] == "application/grpc"
    assert response.headers["x-served-by"] == "fake"
    assert response.headers["x-reply-bin"] == "AP8="
    assert response.messages() == [value(b"hello")]
    assert response.trailers == {"grpc-status": "0"}
    # Only the headers the component asked for; -bin values as their base64 text.
    assert dispatcher.calls == [(value(b"hello"), [("x-tenant", "acme"), ("x-trace-bin", "AAEC")])]


async def test_an_error_is_a_trailers_only_response_with_a_percent_encoded_message(
    client: Client,
) -> None:
    response = await client.call(request_headers(UNARY), message(value(b"fail")))
    assert response.data == b""
    assert response.headers["grpc-status"] == "5"
    assert response.headers["grpc-message"] == "caf%C3%A9 100%25 missing%0Afor real"


async def test_gzip_is_accepted_and_other_encodings_are_unimplemented(client: Client) -> None:
    gzipped = await client.call(request_headers(UNARY, grpc_encoding="gzip"),
                                message(value(b"zipped"), compressed=True))
    assert gzipped.status == "0"
    assert gzipped.messages() == [value(b"zipped")]
    brotli = await client.call(request_headers(UNARY, grpc_encoding="br"),
                               message(value(b"x")))
    assert brotli.status == "12"
    assert "br" in brotli.grpc_message
    flagged = await client.call(request_headers(UNARY), message(value(b"x"), compressed=True))
    assert flagged.status == "13"
    assert "grpc-encoding" in flagged.grpc_message


async def test_the_deadline_cancels_the_call(client: Client, dispatcher: FakeDispatcher) -> None:
    response = await client.call(request_headers(UNARY, grpc_timeout="200m"),
                                 message(value(b"hang")))
    assert response.status == "4"
    await asyncio.wait_for(dispatcher.cancelled.wait(), 2)
    bad = await client.call(request_headers(UNARY, grpc_timeout="soon"), message(value(b"x")))
    assert bad.status == "13"


async def test_a_reset_before_the_request_ends_never_calls(
    client: Client, dispatcher: FakeDispatcher
) -> None:
    stream_id = client.start(request_headers(UNARY), message(value(b"hello")), end=False)
    await asyncio.sleep(0.05)
    client.reset(stream_id)
    assert (await client.call(request_headers(UNARY), message(value(b"next")))).status == "0"
    assert [payload for payload, _ in dispatcher.calls] == [value(b"next")]


async def test_a_reset_during_the_call_cancels_it(
    client: Client, dispatcher: FakeDispatcher
) -> None:
    stream_id = client.start(request_headers(UNARY), message(value(b"hang")))
    await asyncio.wait_for(dispatcher.started.wait(), 2)
    client.reset(stream_id)
    await asyncio.wait_for(dispatcher.cancelled.wait(), 2)


async def test_a_dropped_connection_cancels_its_calls(
    public: PublicServer, dispatcher: FakeDispatcher
) -> None:
    client = await Client.connect(public.port)
    client.start(request_headers(UNARY), message(value(b"hang")))
    await asyncio.wait_for(dispatcher.started.wait(), 2)
    await client.close()
    await asyncio.wait_for(dispatcher.cancelled.wait(), 2)
    await asyncio.wait_for(public.connections.wait_empty(), 2)


async def test_large_messages_both_ways_within_flow_control(client: Client) -> None:
    payload = bytes(range(256)) * ((MAX_MESSAGE - 64) // 256)
    stream_id = client.start(request_headers(UNARY), None, end=False)
    await client.send_all(stream_id, message(value(payload)))
    response = await client.wait(stream_id, seconds=60)
    assert response.status == "0"
    assert response.messages() == [value(payload)]


async def test_small_client_windows_are_respected(public: PublicServer) -> None:
    client = await Client.connect(public.port, window=1000)
    payload = b"x" * 200_000
    stream_id = client.start(request_headers(UNARY), None, end=False)
    await client.send_all(stream_id, message(value(payload)))
    response = await client.wait(stream_id)
    assert response.messages() == [value(payload)]


async def test_many_concurrent_streams_on_one_connection(
    client: Client, dispatcher: FakeDispatcher
) -> None:
    ids = [client.start(request_headers(UNARY), message(value(f"m{i}".encode())))
           for i in range(300)]
    responses = await asyncio.gather(*(client.wait(i) for i in ids))
    assert [r.messages() for r in responses] == [[value(f"m{i}".encode())] for i in range(300)]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (message(value(b"x"))[:-1], "13", "ended inside a message"),
        (message(value(b"x"), length=100), "13", "ended inside a message"),
        (message(value(b"a")) + message(value(b"b")), "13", "more than one message"),
        (b"", "13", "no message"),
        (struct.pack(">BI", 0, MAX_MESSAGE + 1), "8", "larger than the limit"),
        (message(b"\xff\xff"), "3", "not a valid"),
        (struct.pack(">BI", 7, 1) + b"x", "13", "compressed flag is 7"),
    ],
    ids=["truncated", "lying-prefix", "two-messages", "empty", "oversized", "not-protobuf",
         "bad-flag"],
)
async def test_bad_request_bodies_get_a_status(
    client: Client, dispatcher: FakeDispatcher, body: bytes, status: str, words: str
) -> None:
    response = await client.call(request_headers(UNARY), body)
    assert response.status == status
    assert words in response.grpc_message
    assert dispatcher.calls == []
    assert (await client.call(request_headers(UNARY), message(value(b"ok")))).status == "0"


async def test_a_gzip_bomb_is_refused_by_the_limit(client: Client) -> None:
    bomb = gzip.compress(b"\0" * (MAX_MESSAGE + 1))
    response = await client.call(request_headers(UNARY, grpc_encoding="gzip"),
                                 struct.pack(">BI", 1, len(bomb)) + bomb)
    assert response.status == "8"
