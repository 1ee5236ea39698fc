"""One HTTP/2 connection to the user function, carrying gRPC calls (RFC 9113, gRPC over
HTTP/2) — the client side of what `http/grpc_h2/connection.py` serves.

Why not grpc.aio: an active entity holds one bidirectional stream to the user function
and every command is one message each way on it. Through grpc.aio each message is a
trip through the C core's call batch and its completion queue poller, and each call
holds the C core's state: with the entity streams framed here the sidecar spends a third
to a half less CPU per command and 4 KB instead of 27 KB per active entity
(docs/performance.md, *Entity streams*). Unary action calls use it too; discovery,
streamed actions and views keep grpc.aio. Each call is a `ClientStream`
(`stream.py`); `channel.py` makes and replaces connections.

What it speaks, because gRPC needs it: SETTINGS both ways, flow control both ways (we
give windows back as soon as bytes arrive, since a stream's messages are taken into
memory at once and bounded by the message limit), PING answered, GOAWAY (streams the
peer will not process fail with UNAVAILABLE; the rest finish, and new streams go to a
new connection), RST_STREAM both ways, CONTINUATION, padding. Not: server push (turned
off in our SETTINGS), priorities (ignored), compression (we offer none, so a server
sends none).

Output is collected during one pass of the event loop and written once, so the commands
of many entities, and their control frames, share one `write`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import cast

import grpc
import grpc.aio
import hpack

from . import frames
from .frames import (
    ACK,
    END_HEADERS,
    END_STREAM,
    FRAME_HEADER,
    MAX_WINDOW,
    PADDED,
    PRIORITY_FLAG,
    ErrorCode,
    FrameType,
    Setting,
    read_u32,
)
from .stream import ClientStream, rpc_error

log = logging.getLogger(__name__)

STREAM_WINDOW = 1 << 22
"""Our receive window per stream, given back as data arrives."""
CONNECTION_WINDOW = 1 << 26
_MAX_HEADER_LIST = 1 << 16
_OUR_MAX_FRAME = frames.DEFAULT_MAX_FRAME
"""We never raise SETTINGS_MAX_FRAME_SIZE, so the peer may not send larger frames."""

def _hpack_int(value: int, prefix_bits: int, flags: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal field *without indexing*, new name, no Huffman (RFC 7541 §6.2.2): it
    never touches the peer's table, so a block of them is valid on any connection."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


def request_block(path: str, authority: str) -> bytes:
    """The header block of a gRPC call to `path`: constant per path, encoded once."""
    fields = (
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", authority.encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"user-agent", b"larder-sidecar"),
    )
    return b"".join(_literal(name, value) for name, value in fields)


class ClientConnection(asyncio.Protocol):
    """The frames of one connection to the user function, shared by its streams."""

    def __init__(self, authority: str, max_message_bytes: int) -> None:
        self.authority = authority
        self.max_message_bytes = max_message_bytes
        # Held once: in CPython 3.11 every asyncio.get_running_loop() is a getpid system
        # call, and the streams ask for the loop on every read.
        self.loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        """Done when the connection is closed (by either side)."""
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._streams: dict[int, ClientStream] = {}
        self._next_id = 1
        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = _MAX_HEADER_LIST
        self._blocks: dict[str, bytes] = {}
        self._send_window = frames.DEFAULT_WINDOW
        self._peer_initial_window = frames.DEFAULT_WINDOW
        self._peer_max_frame = frames.DEFAULT_MAX_FRAME
        self._peer_max_streams = 2**31
        self._recv_unacked = 0
        self._blocked: deque[ClientStream] = deque()
        self._block: bytearray | None = None
        self._block_stream = 0
        self._block_end = False
        self._draining = False

    # Who may use it.

    def usable(self) -> bool:
        return (
            self._transport is not None
            and not self._draining
            and len(self._streams) < self._peer_max_streams
            and self._next_id < 2**31 - 1
        )

    def open(self, stream: ClientStream, path: str) -> None:
        stream_id = self._next_id
        self._next_id += 2
        stream.attach(self, stream_id, self._peer_initial_window)
        self._streams[stream_id] = stream
        block = self._blocks.get(path)
        if block is None:
            block = self._blocks[path] = request_block(path, self.authority)
        self._send(frames.frame(FrameType.HEADERS, END_HEADERS, stream_id, block))

    def pump(self, stream: ClientStream) -> None:
        """Send as much of the stream's pending data as the windows allow."""
        while stream.has_pending():
            size = stream.pending_size()
            allowed = min(size, stream.send_window, self._send_window, self._peer_max_frame)
            if size and allowed <= 0:
                if stream not in self._blocked:
                    self._blocked.append(stream)
                return
            chunk, end = stream.take_pending(allowed)
            stream.send_window -= len(chunk)
            self._send_window -= len(chunk)
            flags = END_STREAM if end else 0
            self._send(frames.frame(FrameType.DATA, flags, stream.stream_id, chunk))
        if stream.closed():
            self.settle(stream)

    def settle(
        self, stream: ClientStream, reset: ErrorCode | None = None, *, gone: bool = False
    ) -> None:
        """Forget a stream that is over: closed both ways, failed (with `reset`, told so),
        or ended by the server while our side is open (closed with RST_STREAM NO_ERROR,
        RFC 9113 §8.1: nothing we could still send would be read)."""
        if stream.stream_id not in self._streams or not stream.done():
            return
        if reset is None and not gone and not stream.closed():
            reset = ErrorCode.NO_ERROR
        if reset is not None and not gone:
            self._send(frames.rst_stream(stream.stream_id, reset))
        del self._streams[stream.stream_id]
        if self._draining and not self._streams:
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._flush()
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._send(
            frames.PREFACE
            + frames.settings({
                Setting.ENABLE_PUSH: 0,
                Setting.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                Setting.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST,
            })
            + frames.window_update(0, CONNECTION_WINDOW - frames.DEFAULT_WINDOW)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        why = f": {exc}" if exc is not None else ""
        error = rpc_error(
            grpc.StatusCode.UNAVAILABLE, f"the connection to the user function closed{why}"
        )
        for stream in list(self._streams.values()):
            stream.fail(error, gone=True)
        self._streams.clear()
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        position, available = 0, len(buffer)
        try:
            while available - position >= 9:
                word, flags, stream_id = FRAME_HEADER.unpack_from(buffer, position)
                length, kind = word >> 8, word & 0xFF
                if length > _OUR_MAX_FRAME:
                    self._fail_connection(ErrorCode.FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                    return
                end = position + 9 + length
                if end > available:
                    break
                payload = bytes(buffer[position + 9 : end])
                self._frame(kind, flags, stream_id & 0x7FFFFFFF, payload)
                position = end
                if self._transport is None:
                    return
        finally:
            del buffer[:position]
        self._give_back()

    # Frames in.

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is not None and kind != FrameType.CONTINUATION:
            self._fail_connection(ErrorCode.PROTOCOL_ERROR, "a header block was interrupted")
            return
        if kind == FrameType.DATA:
            self._recv_unacked += len(payload)
            stream = self._streams.get(stream_id)
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if stream is not None:
                stream.recv_unacked += len(payload)
                if stream.recv_unacked >= STREAM_WINDOW // 2 and not flags & END_STREAM:
                    self._send(frames.window_update(stream_id, stream.recv_unacked))
                    stream.recv_unacked = 0
                stream.data(payload, bool(flags & END_STREAM))
                self.settle(stream)
        elif kind == FrameType.HEADERS:
            start = 0
            if flags & PADDED:
                start, payload = 1, payload[: len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                start += 5
            self._block = bytearray(payload[start:])
            self._block_stream, self._block_end = stream_id, bool(flags & END_STREAM)
            if flags & END_HEADERS:
                self._header_block_done()
        elif kind == FrameType.CONTINUATION:
            if self._block is None or stream_id != self._block_stream:
                self._fail_connection(ErrorCode.PROTOCOL_ERROR, "CONTINUATION out of place")
                return
            self._block += payload
            if len(self._block) > 4 * _MAX_HEADER_LIST:
                self._fail_connection(ErrorCode.ENHANCE_YOUR_CALM, "an endless header block")
                return
            if flags & END_HEADERS:
                self._header_block_done()
        elif kind == FrameType.RST_STREAM:
            stream = self._streams.get(stream_id)
            if stream is not None:
                code = read_u32(payload)
                stream.fail(rpc_error(
                    grpc.StatusCode.UNAVAILABLE if code == ErrorCode.REFUSED_STREAM
                    else grpc.StatusCode.CANCELLED if code == ErrorCode.CANCEL
                    else grpc.StatusCode.INTERNAL,
                    f"the user function reset the stream ({_error_name(code)})",
                ), gone=True)
        elif kind == FrameType.SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == FrameType.PING:
            if not flags & ACK:
                self._send(frames.ping_ack(bytes(payload)))
        elif kind == FrameType.GOAWAY:
            self._goaway(payload)
        elif kind == FrameType.WINDOW_UPDATE:
            self._window_update(stream_id, read_u32(payload) & 0x7FFFFFFF)
        elif kind == FrameType.PUSH_PROMISE:
            self._fail_connection(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE after ENABLE_PUSH=0")
        # PRIORITY and unknown types are ignored (RFC 9113 §5.5).

    def _header_block_done(self) -> None:
        block, self._block = self._block, None
        assert block is not None
        try:
            # Every block is decoded, even a reset stream's: HPACK state is per connection.
            fields = [(k, v) for k, v in self._decoder.decode(bytes(block), raw=True)]
        except hpack.HPACKError as e:
            self._fail_connection(ErrorCode.COMPRESSION_ERROR, f"a header block: {e}")
            return
        stream = self._streams.get(self._block_stream)
        if stream is not None:
            stream.headers(fields, self._block_end)
            self.settle(stream)

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            self._fail_connection(ErrorCode.FRAME_SIZE_ERROR, "a SETTINGS frame's length")
            return
        for offset in range(0, len(payload), 6):
            key = int.from_bytes(payload[offset : offset + 2], "big")
            value = read_u32(payload, offset + 2)
            if key == Setting.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    self._fail_connection(ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE")
                    return
                delta, self._peer_initial_window = value - self._peer_initial_window, value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == Setting.MAX_FRAME_SIZE:
                self._peer_max_frame = min(
                    max(value, frames.DEFAULT_MAX_FRAME), frames.MAX_FRAME_LIMIT
                )
            elif key == Setting.MAX_CONCURRENT_STREAMS:
                self._peer_max_streams = value
        self._send(frames.SETTINGS_ACK)
        self._unblock()

    def _window_update(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            self._send_window += increment
            self._unblock()
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            if stream.has_pending():
                self.pump(stream)

    def _unblock(self) -> None:
        blocked, self._blocked = self._blocked, deque()
        for stream in blocked:
            if not stream.done():
                self.pump(stream)

    def _goaway(self, payload: bytes) -> None:
        last = read_u32(payload) & 0x7FFFFFFF
        code = read_u32(payload, 4)
        self._draining = True
        log.info(
            "the user function is closing a connection (GOAWAY %s); new entity streams "
            "use a new one", _error_name(code),
        )
        for stream_id, stream in list(self._streams.items()):
            if stream_id > last:
                stream.fail(rpc_error(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the user function closed the connection before this stream (GOAWAY "
                    f"{_error_name(code)})",
                ), gone=True)
        if not self._streams:
            self.close()

    def _fail_connection(self, code: ErrorCode, what: str) -> None:
        log.warning("protocol error from the user function: %s; closing the connection", what)
        self._send(frames.goaway(self._next_id - 2 if self._next_id > 1 else 0, code, what))
        error = rpc_error(
            grpc.StatusCode.INTERNAL, f"HTTP/2 protocol error from the user function: {what}"
        )
        for stream in list(self._streams.values()):
            stream.fail(error, gone=True)
        self.close()
        self._transport = None

    def _give_back(self) -> None:
        if self._recv_unacked >= CONNECTION_WINDOW // 2:
            self._send(frames.window_update(0, self._recv_unacked))
            self._recv_unacked = 0

    # Frames out.

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        out, self._out = self._out, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))


def _error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error code {code:#x}"
