"""Server-streamed calls of the user's services, served by the public port itself (not
relayed through grpc.aio): messages as they come, metadata, errors after messages, flow
control, cancellation."""

from __future__ import annotations

import asyncio

import h2.errors
import pytest
from larder_sidecar.http import PublicServer

from .client import Client, message, request_headers
from .conftest import REPEAT, FakeDispatcher, value


@pytest.fixture
async def client(public: PublicServer) -> Client:
    return await Client.connect(public.port)


async def test_replies_stream_with_the_first_metadata_as_headers_and_the_rest_in_trailers(
    client: Client, dispatcher: FakeDispatcher
) -> None:
    response = await client.call(request_headers(REPEAT), message(value(b"3")))
    assert response.headers[":status"] == "200"
    assert response.headers["x-first"] == "yes"
    assert response.messages() == [value(b"0"), value(b"1"), value(b"2")]
    assert response.trailers == {"grpc-status": "0", "x-later-1": "1", "x-later-2": "2"}
    assert [payload for payload, _ in dispatcher.calls] == [value(b"3")]


async def test_no_message_is_a_trailers_only_ok(client: Client) -> None:
    response = await client.call(request_headers(REPEAT), message(value(b"0")))
    assert response.data == b""
    assert response.headers["grpc-status"] == "0"


async def test_an_error_after_messages_is_the_trailers_status(client: Client) -> None:
    response = await client.call(request_headers(REPEAT), message(value(b"2-fail")))
    assert response.messages() == [value(b"0"), value(b"1")]
    assert response.trailers["grpc-status"] == "10"
    assert response.trailers["grpc-message"] == "stopped after the messages"


async def test_a_slow_reader_holds_the_replies_back_and_gets_them_all(
    public: PublicServer,
) -> None:
    # A 64-byte stream window: every message waits for the client's WINDOW_UPDATE.
    client = await Client.connect(public.port, window=64)
    response = await client.call(request_headers(REPEAT), message(value(b"200")))
    assert response.messages() == [value(str(i).encode()) for i in range(200)]
    assert response.trailers["grpc-status"] == "0"


async def test_a_reset_mid_stream_cancels_the_producer(
    client: Client, dispatcher: FakeDispatcher
) -> None:
    stream_id = client.start(request_headers(REPEAT), message(value(b"1-hang")))
    await asyncio.wait_for(dispatcher.started.wait(), 5)
    client.reset(stream_id)
    await asyncio.wait_for(dispatcher.cancelled.wait(), 5)


async def test_the_deadline_ends_a_stream_that_already_sent_messages(
    client: Client, dispatcher: FakeDispatcher
) -> None:
    response = await client.call(request_headers(REPEAT, grpc_timeout="300m"),
                                 message(value(b"1-hang")))
    assert response.messages() == [value(b"0")]
    assert response.trailers["grpc-status"] == "4"
    assert response.reset is None or response.reset == h2.errors.ErrorCodes.NO_ERROR
    await asyncio.wait_for(dispatcher.cancelled.wait(), 5)
