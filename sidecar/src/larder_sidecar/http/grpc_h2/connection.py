"""One HTTP/2 connection of the public port, speaking just what gRPC needs (RFC 9113).

The connection owns the frames, HPACK, both directions of flow control, SETTINGS, PING
and GOAWAY; each stream's gRPC call is a `StreamHandler` (`unary.py` serves the user's
unary methods in process, `proxy.py` forwards every other stream to the internal
grpc.aio server). What it does not do, because gRPC never needs it: server push,
priorities (PRIORITY is read and ignored, RFC 9113 §5.3.2), CONNECT, HTTP/1.1 Upgrade.

Output is collected during one pass of the event loop and written once, so the replies
of many calls finishing together, and their control frames, share one `write`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, cast

from larder_sidecar.http.connections import ConnectionSet

from ...h2 import frames
from ...h2.frames import (
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
from .headers import (
    CompressionError,
    HeaderDecoder,
    MalformedRequest,
    RequestHead,
    check_trailers,
    request_head,
)

log = logging.getLogger(__name__)

MAX_CONCURRENT_STREAMS = 1000
STREAM_WINDOW = 1 << 20
"""Our receive window per stream: enough for a large message to flow without a round trip
per 64 KiB, while the front refuses a message over the limit by its prefix."""
CONNECTION_WINDOW = 16 << 20
MAX_PING_STRIKES = 2
MIN_PING_INTERVAL = 10.0
"""Seconds between two client PINGs with no response data between them, below which
a PING is a strike; more than MAX_PING_STRIKES strikes close the connection with
ENHANCE_YOUR_CALM (grpc-core's policy, with a much shorter interval than its default
5 minutes)."""
LINGER_SECONDS = 2.0
"""After our last frame, how long a closing connection keeps reading (and discarding)
before it is closed. Closing a socket with unread input makes the kernel send a reset,
which can destroy our GOAWAY before the client reads it; so we half-close, drain, and
close when the client does or this runs out (a "lingering close")."""
_MAX_HEADER_BLOCK_FACTOR = 4
"""A header block in HEADERS + CONTINUATION frames may be this many times the header
list limit on the wire before the connection is failed (HPACK rarely grows a block)."""


class StreamHandler(Protocol):
    """One call on a stream: told what the client sends, answers through the connection."""

    def data(self, data: bytes) -> None:
        """DATA bytes (padding removed). The handler gives the window back with
        `Http2Connection.consumed` when it has taken them."""

    def end(self) -> None:
        """The client's END_STREAM: nothing more comes."""

    def reset(self) -> None:
        """The stream is gone (RST_STREAM either way, or the connection closed): stop,
        send nothing."""


class Stream:
    __slots__ = (
        "content_length",
        "handler",
        "id",
        "local_closed",
        "pending",
        "received",
        "recv_window",
        "remote_closed",
        "send_window",
        "trailers",
        "unacked",
        "writable",
    )

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.handler: StreamHandler | None = None
        self.recv_window = STREAM_WINDOW
        self.unacked = 0
        self.send_window = send_window
        self.remote_closed = False
        self.local_closed = False
        self.pending: list[memoryview] = []
        """Response DATA waiting for flow-control window."""
        self.trailers: bytes | None = None
        """The trailers' header block, sent when `pending` is empty (empty: end the stream
        with an empty DATA frame instead)."""
        self.writable: asyncio.Event | None = None
        self.content_length: int | None = None
        self.received = 0


HandlerFactory = Callable[["Http2Connection", Stream, RequestHead], StreamHandler]


class ConnectionError_(Exception):
    """A connection error (RFC 9113 §5.4.1): GOAWAY with `code`, then close."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Http2Connection(asyncio.Protocol):
    def __init__(
        self,
        open_call: HandlerFactory,
        connections: ConnectionSet,
        *,
        max_header_list_size: int,
        idle_timeout: float,
    ) -> None:
        self._open_call = open_call
        self._connections = connections
        # Held once: in CPython 3.11 every asyncio.get_running_loop() is a getpid system
        # call, and every call of the connection schedules something on the loop.
        self.loop = asyncio.get_running_loop()
        self._idle_timeout = idle_timeout
        self._max_header_list = max_header_list_size
        self._decoder = HeaderDecoder(max_header_list_size)
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._preface_seen = False
        self._settings_seen = False
        self.streams: dict[int, Stream] = {}
        self._last_stream_id = 0
        self._continuing: tuple[int, int, list[bytes], bool] | None = None
        """(stream id, HEADERS flags, block fragments, bad priority) of a header block
        that CONTINUATION frames are completing."""
        # Flow control: what we may send, what the client may send.
        self._send_window = frames.DEFAULT_WINDOW
        self._peer_initial_window = frames.DEFAULT_WINDOW
        self._peer_max_frame = frames.DEFAULT_MAX_FRAME
        self._recv_window = CONNECTION_WINDOW
        self._recv_unacked = 0
        self._blocked: dict[int, Stream] = {}
        # Output of this loop pass, written together.
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._write_paused = False
        # Closing.
        self._going_away = False
        """We sent GOAWAY: no new streams; close when the last one ends."""
        self._closed = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._ping_strikes = 0
        self._last_ping = -MIN_PING_INTERVAL
        self._sent_data_since_ping = False

    # asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        self._write(
            frames.settings({
                Setting.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                Setting.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                Setting.MAX_HEADER_LIST_SIZE: self._max_header_list,
            })
            + frames.window_update(0, CONNECTION_WINDOW - frames.DEFAULT_WINDOW)
        )
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        buffer = self._buffer
        buffer += data
        pos = 0
        if not self._preface_seen:
            if len(buffer) < len(frames.PREFACE):
                return
            if not buffer.startswith(frames.PREFACE):
                self._fail(ErrorCode.PROTOCOL_ERROR, "the connection preface is invalid")
                return
            self._preface_seen = True
            pos = len(frames.PREFACE)
        unpack = FRAME_HEADER.unpack_from
        try:
            while len(buffer) - pos >= 9 and not self._closed:
                length_type, flags, stream_id = unpack(buffer, pos)
                length = length_type >> 8
                if length > frames.DEFAULT_MAX_FRAME:
                    self._fail(ErrorCode.FRAME_SIZE_ERROR,
                               f"a frame of {length} bytes is over SETTINGS_MAX_FRAME_SIZE")
                    return
                end = pos + 9 + length
                if len(buffer) < end:
                    break
                payload = bytes(buffer[pos + 9 : end])
                pos = end
                self._frame(length_type & 0xFF, flags, stream_id & 0x7FFFFFFF, payload)
        except ConnectionError_ as e:
            self._fail(e.code, str(e))
            return
        del buffer[:pos]

    def eof_received(self) -> bool:
        # gRPC clients never half-close a connection: EOF is a client gone, and its calls
        # are cancelled (connection_lost follows).
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if stream.handler is not None:
                stream.handler.reset()
        self._transport = None

    def pause_writing(self) -> None:
        # A client that does not read its replies is not read from either.
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    # Connection (graceful shutdown) ---------------------------------------------------

    def begin_close(self) -> None:
        """GOAWAY: calls already started finish, new ones are refused (the client retries
        them on a new connection), then the connection closes."""
        if not self._going_away and not self._closed:
            self._going_away = True
            self._write(frames.goaway(self._last_stream_id, ErrorCode.NO_ERROR))
        self._close_if_done()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # What the handlers call --------------------------------------------------------

    def send_headers(self, stream: Stream, block: bytes, end_stream: bool = False) -> None:
        if stream.local_closed or self._closed:
            return
        self._header_frames(stream.id, block, end_stream)
        self._sent_data_since_ping = True
        if end_stream:
            self._local_end(stream)

    def send_data(
        self, stream: Stream, data: bytes, trailers: bytes | None = None, *,
        end_stream: bool = False,
    ) -> None:
        """Queue DATA within the windows, then the trailers (ending the stream), or end the
        stream with the data when `end_stream`."""
        if stream.local_closed or self._closed:
            return
        if data:
            stream.pending.append(memoryview(data))
        if trailers is not None:
            stream.trailers = trailers
        elif end_stream:
            stream.trailers = b""
        self._pump(stream)

    async def writable(self, stream: Stream) -> None:
        """Wait until the stream's queued DATA has been sent (or the stream is gone)."""
        while stream.pending and not stream.local_closed and not self._closed:
            if stream.writable is None:
                stream.writable = asyncio.Event()
            stream.writable.clear()
            await stream.writable.wait()

    def consumed(self, stream: Stream, count: int) -> None:
        """The handler took `count` DATA bytes: the client may send that many more."""
        if stream.remote_closed or stream.local_closed or count <= 0:
            return
        stream.unacked += count
        if stream.unacked >= STREAM_WINDOW // 2:
            stream.recv_window += stream.unacked
            self._write(frames.window_update(stream.id, stream.unacked))
            stream.unacked = 0

    def reset_stream(self, stream: Stream, code: ErrorCode) -> None:
        """End the stream with RST_STREAM (after whatever was already queued)."""
        if self.streams.pop(stream.id, None) is None:
            return
        self._blocked.pop(stream.id, None)
        stream.local_closed = stream.remote_closed = True
        if stream.writable is not None:
            stream.writable.set()
        self._write(frames.rst_stream(stream.id, code))
        self._stream_closed()

    # Frames ------------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        continuing = self._continuing
        if continuing is not None and kind != FrameType.CONTINUATION:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR,
                                   "a header block was interrupted by another frame")
        if not self._settings_seen and kind != FrameType.SETTINGS:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR,
                                   "the client's first frame is not SETTINGS")
        if kind == FrameType.DATA:
            self._data(flags, stream_id, payload)
        elif kind == FrameType.HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == FrameType.CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == FrameType.WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == FrameType.SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == FrameType.PING:
            self._ping(flags, stream_id, payload)
        elif kind == FrameType.RST_STREAM:
            self._rst_stream(stream_id, payload)
        elif kind == FrameType.PRIORITY:
            self._priority(stream_id, payload)
        elif kind == FrameType.GOAWAY:
            if stream_id != 0:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
            # The client leaves: its started calls still get their answers.
            self._going_away = True
            self._close_if_done()
        elif kind == FrameType.PUSH_PROMISE:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "a client sent PUSH_PROMISE")
        # Frames of unknown types are ignored (RFC 9113 §4.1).

    def _unpadded(self, flags: int, payload: bytes) -> bytes:
        if not flags & PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR,
                                   "the padding is as long as the frame or longer")
        return payload[1 : len(payload) - payload[0]]

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._recv_window -= size
        if self._recv_window < 0:
            raise ConnectionError_(ErrorCode.FLOW_CONTROL_ERROR,
                                   "DATA beyond the connection's flow-control window")
        # The connection's window is ours to manage whatever the stream does with the data:
        # the stream's own window bounds what one call buffers.
        self._recv_unacked += size
        if self._recv_unacked >= CONNECTION_WINDOW // 2:
            self._recv_window += self._recv_unacked
            self._write(frames.window_update(0, self._recv_unacked))
            self._recv_unacked = 0
        data = self._unpadded(flags, payload)
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream_id:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream")
            self._write(frames.rst_stream(stream_id, ErrorCode.STREAM_CLOSED))
            return
        if stream.remote_closed:
            self._stream_error(stream, ErrorCode.STREAM_CLOSED)
            return
        stream.recv_window -= size
        if stream.recv_window < 0:
            self._stream_error(stream, ErrorCode.FLOW_CONTROL_ERROR)
            return
        stream.received += len(data)
        padding = size - len(data)
        if padding:
            self.consumed(stream, padding)
        if stream.handler is not None and data:
            stream.handler.data(data)
        if flags & END_STREAM and stream.id in self.streams:
            self._remote_end(stream)

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._unpadded(flags, payload)
        bad_priority = False
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short")
            bad_priority = read_u32(block) & 0x7FFFFFFF == stream_id
            block = block[5:]
        if not flags & END_HEADERS:
            self._continuing = (stream_id, flags, [block], bad_priority)
            return
        self._header_block(stream_id, flags, block, bad_priority)

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        continuing = self._continuing
        if continuing is None or continuing[0] != stream_id:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR,
                                   "CONTINUATION without a header block to continue")
        fragments = continuing[2]
        fragments.append(payload)
        if sum(map(len, fragments)) > _MAX_HEADER_BLOCK_FACTOR * self._max_header_list:
            raise ConnectionError_(ErrorCode.ENHANCE_YOUR_CALM,
                                   "a header block is far over the header list limit")
        if flags & END_HEADERS:
            self._continuing = None
            self._header_block(stream_id, continuing[1], b"".join(fragments), continuing[3])

    def _header_block(self, stream_id: int, flags: int, block: bytes, bad_priority: bool) -> None:
        try:
            headers = self._decoder.decode(block)
        except CompressionError as e:
            raise ConnectionError_(ErrorCode.COMPRESSION_ERROR, str(e)) from e
        stream = self.streams.get(stream_id)
        if stream is not None:
            # Trailers: they must end the stream.
            if stream.remote_closed:
                self._stream_error(stream, ErrorCode.STREAM_CLOSED)
                return
            if not flags & END_STREAM:
                self._stream_error(stream, ErrorCode.PROTOCOL_ERROR)
                return
            try:
                check_trailers(headers)
            except MalformedRequest:
                self._stream_error(stream, ErrorCode.PROTOCOL_ERROR)
                return
            self._remote_end(stream)
            return
        if stream_id % 2 == 0:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR,
                                   "a client opened a stream with an even id")
        if stream_id <= self._last_stream_id:
            raise ConnectionError_(ErrorCode.STREAM_CLOSED,
                                   f"HEADERS on stream {stream_id}, which is closed")
        self._last_stream_id = stream_id
        if bad_priority:
            self._write(frames.rst_stream(stream_id, ErrorCode.PROTOCOL_ERROR))
            return
        if self._going_away or len(self.streams) >= MAX_CONCURRENT_STREAMS:
            self._write(frames.rst_stream(stream_id, ErrorCode.REFUSED_STREAM))
            return
        try:
            head = request_head(headers)
        except MalformedRequest as e:
            log.debug("stream %d: malformed request: %s", stream_id, e)
            self._write(frames.rst_stream(stream_id, ErrorCode.PROTOCOL_ERROR))
            return
        stream = Stream(stream_id, self._peer_initial_window)
        stream.content_length = head.content_length
        self.streams[stream_id] = stream
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        ending = bool(flags & END_STREAM)
        # Known before the handler exists: one that answers at once must not also reset
        # a request that is already complete.
        stream.remote_closed = ending
        stream.handler = self._open_call(self, stream, head)
        if ending and stream.id in self.streams:
            self._remote_end(stream)

    def _remote_end(self, stream: Stream) -> None:
        stream.remote_closed = True
        if stream.content_length is not None and stream.content_length != stream.received:
            self._stream_error(stream, ErrorCode.PROTOCOL_ERROR)
            return
        if stream.handler is not None:
            stream.handler.end()
        if stream.local_closed:
            self._forget(stream)

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE is not 4 bytes")
        increment = read_u32(payload) & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise ConnectionError_(ErrorCode.FLOW_CONTROL_ERROR,
                                       "the connection's window is over 2^31-1")
            for blocked in list(self._blocked.values()):
                if self._send_window <= 0:
                    break
                self._pump(blocked)
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream_id:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR,
                                       "WINDOW_UPDATE on an idle stream")
            if increment == 0:
                self._write(frames.rst_stream(stream_id, ErrorCode.PROTOCOL_ERROR))
            return
        if increment == 0:
            self._stream_error(stream, ErrorCode.PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._stream_error(stream, ErrorCode.FLOW_CONTROL_ERROR)
            return
        self._pump(stream)

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR,
                                   "SETTINGS is not a multiple of 6 bytes")
        self._settings_seen = True
        for offset in range(0, len(payload), 6):
            key = payload[offset] << 8 | payload[offset + 1]
            value = read_u32(payload, offset + 2)
            if key == Setting.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionError_(ErrorCode.FLOW_CONTROL_ERROR,
                                           "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise ConnectionError_(ErrorCode.FLOW_CONTROL_ERROR,
                                               "a stream's window is over 2^31-1")
            elif key == Setting.MAX_FRAME_SIZE:
                if not frames.DEFAULT_MAX_FRAME <= value <= frames.MAX_FRAME_LIMIT:
                    raise ConnectionError_(ErrorCode.PROTOCOL_ERROR,
                                           f"SETTINGS_MAX_FRAME_SIZE {value} is out of range")
                self._peer_max_frame = value
            elif key == Setting.ENABLE_PUSH and value > 1:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR,
                                       f"SETTINGS_ENABLE_PUSH {value} is neither 0 nor 1")
            # HEADER_TABLE_SIZE: our blocks never use the dynamic table. Others: nothing
            # to do (we open no streams; unknown settings are ignored).
        self._write(frames.SETTINGS_ACK)
        for stream in list(self.streams.values()):
            self._pump(stream)

    def _ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "PING is not 8 bytes")
        if flags & ACK:
            return
        now = self.loop.time()
        if not self._sent_data_since_ping and now - self._last_ping < MIN_PING_INTERVAL:
            self._ping_strikes += 1
            if self._ping_strikes > MAX_PING_STRIKES:
                raise ConnectionError_(ErrorCode.ENHANCE_YOUR_CALM,
                                       "too many PINGs without calls (ping flood)")
        else:
            self._ping_strikes = 0
        self._last_ping = now
        self._sent_data_since_ping = False
        self._write(frames.ping_ack(payload))

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ConnectionError_(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM is not 4 bytes")
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            if stream_id > self._last_stream_id:
                raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            return
        self._blocked.pop(stream_id, None)
        stream.local_closed = stream.remote_closed = True
        if stream.writable is not None:
            stream.writable.set()
        if stream.handler is not None:
            stream.handler.reset()
        self._stream_closed()

    def _priority(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionError_(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            self._write(frames.rst_stream(stream_id, ErrorCode.FRAME_SIZE_ERROR))
            return
        if read_u32(payload) & 0x7FFFFFFF == stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                self._stream_error(stream, ErrorCode.PROTOCOL_ERROR)
            else:
                self._write(frames.rst_stream(stream_id, ErrorCode.PROTOCOL_ERROR))

    # Sending -----------------------------------------------------------------------

    def _header_frames(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        size = self._peer_max_frame
        flags = END_STREAM if end_stream else 0
        if len(block) <= size:
            self._write(frames.frame(FrameType.HEADERS, flags | END_HEADERS, stream_id, block))
            return
        chunks = [block[i : i + size] for i in range(0, len(block), size)]
        self._write(frames.frame(FrameType.HEADERS, flags, stream_id, chunks[0]))
        for i, chunk in enumerate(chunks[1:], start=2):
            last = END_HEADERS if i == len(chunks) else 0
            self._write(frames.frame(FrameType.CONTINUATION, last, stream_id, chunk))

    def _pump(self, stream: Stream) -> None:
        """Send what the windows allow of the stream's queued DATA, then its trailers."""
        pending = stream.pending
        while pending:
            chunk = pending[0]
            size = min(len(chunk), self._send_window, stream.send_window, self._peer_max_frame)
            if size <= 0:
                self._blocked[stream.id] = stream
                return
            self._write(frames.frame(FrameType.DATA, 0, stream.id, bytes(chunk[:size])))
            self._send_window -= size
            stream.send_window -= size
            if size == len(chunk):
                pending.pop(0)
            else:
                pending[0] = chunk[size:]
        self._blocked.pop(stream.id, None)
        self._sent_data_since_ping = True
        if stream.writable is not None:
            stream.writable.set()
        if stream.trailers is not None:
            trailers, stream.trailers = stream.trailers, None
            if trailers:
                self._header_frames(stream.id, trailers, end_stream=True)
            else:
                self._write(frames.frame(FrameType.DATA, END_STREAM, stream.id))
            self._local_end(stream)

    def _local_end(self, stream: Stream) -> None:
        stream.local_closed = True
        if stream.writable is not None:
            stream.writable.set()
        if stream.remote_closed:
            self._forget(stream)
        else:
            # The answer is complete but the client is still sending (a call failed
            # early): tell it to stop (RFC 9113 §8.1).
            self.reset_stream(stream, ErrorCode.NO_ERROR)

    def _forget(self, stream: Stream) -> None:
        if self.streams.pop(stream.id, None) is not None:
            self._blocked.pop(stream.id, None)
            self._stream_closed()

    def _stream_error(self, stream: Stream, code: ErrorCode) -> None:
        handler = stream.handler
        self.reset_stream(stream, code)
        if handler is not None:
            handler.reset()

    def _stream_closed(self) -> None:
        if not self.streams:
            self._close_if_done()
            self._arm_idle()

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self._transport is not None and out:
            self._transport.write(b"".join(out))

    # Closing -----------------------------------------------------------------------

    def _close_if_done(self) -> None:
        if self._going_away and not self.streams and self._transport is not None:
            self._flush()
            self._closed = True
            self._linger()

    def _fail(self, code: ErrorCode, message: str) -> None:
        """A connection error: GOAWAY with the code, every stream ends, then close."""
        if self._closed:
            return
        log.info("closing a gRPC connection: %s (%s)", message, code.name)
        self._write(frames.goaway(self._last_stream_id, code, message))
        self._flush()
        self._closed = True
        self._continuing = None
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if stream.handler is not None:
                stream.handler.reset()
        if self._transport is not None:
            self._linger()

    def _linger(self) -> None:
        """Half-close after our last frame; input is discarded from now on (`_closed`),
        and the transport closes at the client's EOF (`eof_received`) or after
        LINGER_SECONDS, whichever is first."""
        transport = self._transport
        if transport is None or self._linger_timer is not None:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:
            # The client is already gone (reset, not connected): nothing to drain.
            transport.close()
            return
        # A client that stopped reading must not keep the drain from happening.
        transport.resume_reading()
        self._linger_timer = self.loop.call_later(
            LINGER_SECONDS, transport.close
        )

    def _arm_idle(self) -> None:
        if self._closed or self._idle_timer is not None:
            return
        self._idle_timer = self.loop.call_later(
            self._idle_timeout, self._idle_expired
        )

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if not self.streams:
            self.begin_close()
