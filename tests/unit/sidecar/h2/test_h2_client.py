"""The user function's stream client (`larder_sidecar.h2`): against a real grpc.aio
server, and against a scripted HTTP/2 peer for what a well-behaved server rarely does
(GOAWAY, resets, trailers-only errors, tiny windows, compressed messages)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import hpack
import pytest
from larder_sidecar.h2 import frames
from larder_sidecar.h2.channel import StreamChannel
from larder_sidecar.h2.client import request_block
from larder_sidecar.h2.frames import ErrorCode, FrameType, Setting
from larder_sidecar.h2.stream import EOF

PATH = "/test.Echo/Chat"
cancelled: list[bytes] = []
"""Requests the echo server saw cancelled."""


def identity(data: bytes) -> bytes:
    return data


def open_call(channel: StreamChannel, path: str = PATH) -> Any:
    return channel.stream_stream(path, identity, identity)()


# --- against grpc.aio ---------------------------------------------------------------


@pytest.fixture
async def echo_server() -> AsyncIterator[int]:
    async def chat(requests: Any, context: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            if request == b"fail":
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asked to fail: 100%")
            yield request

    async def say(request: bytes, context: Any) -> bytes:
        if request == b"sleep":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(request)
                raise
        if request == b"fail":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return b"said " + request

    async def twice(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield request
        if request != b"once":
            yield request

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 << 20)])
    handlers = {
        "Chat": grpc.stream_stream_rpc_method_handler(
            chat, request_deserializer=identity, response_serializer=identity
        ),
        "Say": grpc.unary_unary_rpc_method_handler(
            say, request_deserializer=identity, response_serializer=identity
        ),
        "Twice": grpc.unary_stream_rpc_method_handler(
            twice, request_deserializer=identity, response_serializer=identity
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(0)


async def test_messages_both_ways_on_many_streams_then_a_clean_end(echo_server: int) -> None:
    channel = StreamChannel("127.0.0.1", echo_server, 8 << 20)
    calls = [open_call(channel) for _ in range(50)]

    async def talk(n: int, call: Any) -> None:
        for i in range(20):
            await call.write(f"{n}:{i}".encode())
            assert await call.read() == f"{n}:{i}".encode()
        await call.done_writing()
        assert await call.read() is EOF
        assert call.done()

    await asyncio.gather(*(talk(n, call) for n, call in enumerate(calls)))
    await channel.close()


async def test_a_message_larger_than_every_window_flows(echo_server: int) -> None:
    channel = StreamChannel("127.0.0.1", echo_server, 8 << 20)
    call = open_call(channel)
    big = bytes(range(256)) * (5 << 12)  # 5 MiB: over grpc's 64 KiB windows many times
    await call.write(big)
    assert await call.read() == big
    await call.done_writing()
    await channel.close()


async def test_the_servers_error_status_and_message_reach_the_reader(echo_server: int) -> None:
    channel = StreamChannel("127.0.0.1", echo_server, 8 << 20)
    call = open_call(channel)
    await call.write(b"fail")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == "asked to fail: 100%"
    assert call.done()
    # The connection is still good for other streams.
    other = open_call(channel)
    await other.write(b"again")
    assert await other.read() == b"again"
    await channel.close()


async def test_an_unknown_method_is_unimplemented(echo_server: int) -> None:
    channel = StreamChannel("127.0.0.1", echo_server, 8 << 20)
    call = open_call(channel, "/test.Echo/Nope")
    await call.write(b"x")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
    await channel.close()


async def test_a_message_over_the_limit_is_refused_before_it_is_sent(echo_server: int) -> None:
    channel = StreamChannel("127.0.0.1", echo_server, 1024)
    call = open_call(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.write(b"x" * 2000)
    assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the 1024-byte limit" in (raised.value.details() or "")
    await channel.close()


async def test_nobody_listening_is_unavailable_at_once() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    channel = StreamChannel("127.0.0.1", port, 1024)
    call = open_call(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.write(b"x")
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert f"cannot connect to the user function at 127.0.0.1:{port}" in (
        raised.value.details() or ""
    )
    await channel.close()


# --- against a scripted peer -----------------------------------------------------------


class Peer:
    """One accepted connection, read frame by frame; answers are written by the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.encoder = hpack.Encoder()

    async def handshake(self, settings: dict[Setting, int] | None = None) -> None:
        assert await self.reader.readexactly(len(frames.PREFACE)) == frames.PREFACE
        self.writer.write(frames.settings(settings or {}))

    async def frame(self) -> tuple[int, int, int, bytes]:
        head = await self.reader.readexactly(9)
        word, flags, stream_id = frames.FRAME_HEADER.unpack(head)
        payload = await self.reader.readexactly(word >> 8)
        return word & 0xFF, flags, stream_id & 0x7FFFFFFF, payload

    async def until(self, kind: int, stream_id: int | None = None) -> tuple[int, bytes]:
        while True:
            got, flags, sid, payload = await self.frame()
            if got == kind and (stream_id is None or sid == stream_id):
                return flags, payload

    def headers(self, stream_id: int, fields: list[tuple[str, str]], end: bool = False) -> None:
        flags = frames.END_HEADERS | (frames.END_STREAM if end else 0)
        block = self.encoder.encode(fields)
        self.writer.write(frames.frame(FrameType.HEADERS, flags, stream_id, block))

    def message(self, stream_id: int, data: bytes, compressed: bool = False) -> None:
        body = bytes((1 if compressed else 0,)) + struct.pack(">I", len(data)) + data
        self.writer.write(frames.frame(FrameType.DATA, 0, stream_id, body))

    def ok_head(self, stream_id: int) -> None:
        self.headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])


Script = Callable[[Peer], Awaitable[None]]


async def scripted(script: Script) -> tuple[StreamChannel, asyncio.Server]:
    """A channel to a server that runs `script` on each connection."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await script(Peer(reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return StreamChannel("127.0.0.1", port, 1 << 20), server


async def test_the_request_head_is_a_valid_grpc_request() -> None:
    seen: list[list[tuple[str, str]]] = []

    async def script(peer: Peer) -> None:
        await peer.handshake()
        _, block = await peer.until(FrameType.HEADERS)
        seen.append([(str(k), str(v)) for k, v in hpack.Decoder().decode(block)])
        peer.ok_head(1)
        peer.message(1, b"pong")
        await peer.until(FrameType.DATA, 1)

    channel, server = await scripted(script)
    call = open_call(channel)
    await call.write(b"ping")
    assert await call.read() == b"pong"
    fields = dict(seen[0])
    assert fields[":method"] == "POST" and fields[":path"] == PATH
    assert fields["content-type"] == "application/grpc" and fields["te"] == "trailers"
    assert list(fields)[:4] == [":method", ":scheme", ":path", ":authority"]
    await channel.close()
    server.close()


def test_request_blocks_never_touch_the_peers_table() -> None:
    decoder = hpack.Decoder()
    block = request_block(PATH, "h:1")
    decoder.decode(block)
    assert len(decoder.header_table.dynamic_entries) == 0


async def test_a_small_peer_window_is_respected_and_window_updates_resume_it() -> None:
    received = bytearray()

    async def script(peer: Peer) -> None:
        await peer.handshake({Setting.INITIAL_WINDOW_SIZE: 100})
        await peer.until(FrameType.HEADERS)
        peer.ok_head(1)
        while len(received) < 1005:
            kind, _, _, payload = await peer.frame()
            if kind == FrameType.DATA:
                assert len(payload) <= 100, "a DATA frame beyond the window"
                received.extend(payload)
                # The stream window only: the connection's 65,535 is plenty.
                peer.writer.write(frames.window_update(1, len(payload)))
        peer.message(1, b"all")
        await peer.until(FrameType.DATA, 1)

    channel, server = await scripted(script)
    call = open_call(channel)
    await call.write(b"y" * 1000)
    assert await call.read() == b"all"
    assert bytes(received[5:]) == b"y" * 1000
    await channel.close()
    server.close()


async def test_trailers_only_error_and_pings_and_an_unknown_frame() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.until(FrameType.HEADERS)
        peer.writer.write(frames.frame(0xEE, 0, 0, b"junk"))  # an extension frame: ignored
        peer.writer.write(frames.frame(FrameType.PING, 0, 0, b"12345678"))
        flags, opaque = await peer.until(FrameType.PING)
        assert flags & frames.ACK and opaque == b"12345678"
        peer.headers(1, [(":status", "200"), ("content-type", "application/grpc"),
                         ("grpc-status", "5"), ("grpc-message", "no%20such%20entity")], end=True)
        await asyncio.sleep(0.5)

    channel, server = await scripted(script)
    call = open_call(channel)
    await call.write(b"x")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "no such entity"
    await channel.close()
    server.close()


async def test_goaway_fails_the_streams_it_refuses_and_new_ones_get_a_new_connection() -> None:
    connections = 0

    async def script(peer: Peer) -> None:
        nonlocal connections
        connections += 1
        await peer.handshake()
        if connections == 1:
            await peer.until(FrameType.HEADERS, 1)
            await peer.until(FrameType.HEADERS, 3)
            # Stream 1 will be served; stream 3 was never seen.
            peer.writer.write(frames.goaway(1, ErrorCode.NO_ERROR))
            peer.ok_head(1)
            peer.message(1, b"one")
            peer.headers(1, [("grpc-status", "0")], end=True)
            await asyncio.sleep(1)
        else:
            await peer.until(FrameType.HEADERS, 1)
            peer.ok_head(1)
            peer.message(1, b"fresh")
            await asyncio.sleep(1)

    channel, server = await scripted(script)
    first, second = open_call(channel), open_call(channel)
    await first.write(b"a")
    await second.write(b"b")
    assert await first.read() == b"one"
    assert await first.read() is EOF
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await second.read()
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "GOAWAY" in (raised.value.details() or "")
    third = open_call(channel)
    await third.write(b"c")
    assert await third.read() == b"fresh"
    assert connections == 2
    await channel.close()
    server.close()


async def test_a_reset_a_lost_connection_and_a_compressed_message_fail_their_streams() -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.until(FrameType.HEADERS, 1)
        await peer.until(FrameType.HEADERS, 3)
        await peer.until(FrameType.HEADERS, 5)
        peer.writer.write(frames.rst_stream(1, ErrorCode.REFUSED_STREAM))
        peer.ok_head(3)
        peer.message(3, b"zz", compressed=True)
        # The client resets the stream whose message it refused.
        _, payload = await peer.until(FrameType.RST_STREAM, 3)
        assert frames.read_u32(payload) == ErrorCode.CANCEL
        peer.writer.close()

    channel, server = await scripted(script)
    calls = [open_call(channel) for _ in range(3)]
    for call in calls:
        await call.write(b"x")
    errors: list[tuple[grpc.StatusCode, str]] = []
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
        errors.append((raised.value.code(), raised.value.details() or ""))
    assert errors[0][0] is grpc.StatusCode.UNAVAILABLE and "REFUSED_STREAM" in errors[0][1]
    assert errors[1][0] is grpc.StatusCode.INTERNAL and "compressed" in errors[1][1]
    assert errors[2][0] is grpc.StatusCode.UNAVAILABLE and "closed" in errors[2][1]
    await channel.close()
    server.close()


async def test_cancel_resets_the_stream_and_the_reader_gets_cancelled() -> None:
    reset = asyncio.get_running_loop().create_future()

    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.until(FrameType.HEADERS, 1)
        _, payload = await peer.until(FrameType.RST_STREAM, 1)
        reset.set_result(frames.read_u32(payload))
        await asyncio.sleep(0.5)

    channel, server = await scripted(script)
    call = open_call(channel)
    await call.write(b"x")
    reader = asyncio.ensure_future(call.read())
    await asyncio.sleep(0.05)
    assert call.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await reader
    assert raised.value.code() is grpc.StatusCode.CANCELLED
    assert await asyncio.wait_for(reset, 5) == ErrorCode.CANCEL
    assert not call.cancel()  # once
    await channel.close()
    server.close()


async def test_a_server_that_ends_first_gets_our_side_closed_with_no_error() -> None:
    reset = asyncio.get_running_loop().create_future()

    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.until(FrameType.HEADERS, 1)
        peer.ok_head(1)
        peer.headers(1, [("grpc-status", "0")], end=True)
        _, payload = await peer.until(FrameType.RST_STREAM, 1)
        reset.set_result(frames.read_u32(payload))
        await asyncio.sleep(0.5)

    channel, server = await scripted(script)
    call = open_call(channel)
    await call.write(b"x")
    assert await call.read() is EOF
    assert await asyncio.wait_for(reset, 5) == ErrorCode.NO_ERROR
    with pytest.raises(asyncio.InvalidStateError):
        await call.write(b"more")
    await channel.close()
    server.close()


async def test_unary_calls_answer_fail_and_refuse_a_streamed_answer(echo_server: int) -> None:
    channel = StreamChannel("127.0.0.1", echo_server, 8 << 20)
    say = channel.unary_unary("/test.Echo/Say", identity, identity)
    assert await asyncio.gather(*(say(f"{n}".encode()) for n in range(20))) == [
        f"said {n}".encode() for n in range(20)
    ]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await say(b"fail")
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.NOT_FOUND, "no such thing"
    )
    twice = channel.unary_unary("/test.Echo/Twice", identity, identity)
    assert await twice(b"once") == b"once"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await twice(b"two")
    assert raised.value.code() is grpc.StatusCode.INTERNAL
    assert "more than one message" in (raised.value.details() or "")
    await channel.close()


async def test_a_unary_caller_that_gives_up_cancels_the_call_at_the_server(
    echo_server: int,
) -> None:
    channel = StreamChannel("127.0.0.1", echo_server, 8 << 20)
    say = channel.unary_unary("/test.Echo/Say", identity, identity)
    cancelled.clear()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(say(b"sleep"), 0.3)
    for _ in range(50):  # the server's handler is cancelled when our reset arrives
        if cancelled:
            break
        await asyncio.sleep(0.05)
    assert cancelled == [b"sleep"]
    await channel.close()


async def test_a_unary_request_ends_the_stream_in_its_own_data_frame() -> None:
    frames_seen: list[tuple[int, int]] = []

    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.until(FrameType.HEADERS, 1)
        kind, flags, _, payload = await peer.frame()
        while kind != FrameType.DATA:
            kind, flags, _, payload = await peer.frame()
        frames_seen.append((flags, len(payload)))
        peer.ok_head(1)
        peer.message(1, b"done")
        peer.headers(1, [("grpc-status", "0")], end=True)
        await asyncio.sleep(0.5)

    channel, server = await scripted(script)
    say = channel.unary_unary("/test.Echo/Say", identity, identity)
    assert await say(b"hello") == b"done"
    # One DATA frame: the message (5-byte prefix + 5 bytes) with END_STREAM, as gRPC
    # clients send a unary request; a separate empty frame costs the server a wake-up.
    assert frames_seen == [(frames.END_STREAM, 10)]
    await channel.close()
    server.close()
