"""One gRPC call on a `ClientConnection` (`client.py`): what the entities see.

It has the part of grpc.aio's `StreamStreamCall` the entities use — `write`, `read`,
`done_writing`, `done`, `cancel`, `wait_for_connection` — and fails with the error
grpc.aio raises (`grpc.aio.AioRpcError`), so an entity cannot tell the transports apart.
A stream is made before it has a connection (grpc.aio's `Handle()` returns at once) and
is put on one at its first use.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import grpc
import grpc.aio

from .frames import ErrorCode

if TYPE_CHECKING:
    from .client import ClientConnection

EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
"""What `read()` returns once the server ended the call with status OK (as grpc.aio)."""

_MESSAGE_PREFIX = 5

_HTTP_TO_GRPC = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
"""gRPC's mapping of an HTTP status that is not 200 (doc/http-grpc-status-mapping.md)."""
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error grpc.aio raises, so callers handle both transports alike."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


class ClientStream:
    """One gRPC call on a `ClientConnection`, with the part of grpc.aio's
    `StreamStreamCall` the entities use: `write`, `read`, `done_writing`, `done`,
    `cancel`, `wait_for_connection`. Errors are `grpc.aio.AioRpcError`s."""

    __slots__ = (
        "_conn",
        "_deserialize",
        "_error",
        "_headers",
        "_inbox",
        "_loop",
        "_messages",
        "_opened",
        "_opener",
        "_pending",
        "_pending_end",
        "_read_waiter",
        "_remote_ended",
        "_sent_end",
        "_serialize",
        "_space",
        "_stream_id",
        "recv_unacked",
        "send_window",
    )

    def __init__(
        self,
        opener: Callable[[ClientStream], asyncio.Future[None] | None],
        serialize: Callable[[Any], bytes],
        deserialize: Callable[[bytes], Any],
    ) -> None:
        self._opener = opener
        self._serialize = serialize
        self._deserialize = deserialize
        self._conn: ClientConnection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The connection's loop, from `attach` on."""
        self._stream_id = 0
        self._opened: asyncio.Future[None] | None = None
        self._messages: deque[Any] = deque()
        self._inbox = bytearray()
        self._read_waiter: asyncio.Future[None] | None = None
        self._headers: asyncio.Future[None] | None = None
        self._error: grpc.aio.AioRpcError | None = None
        self._remote_ended = False
        self._sent_end = False
        self._pending = bytearray()
        self._pending_end = False
        self._space: asyncio.Future[None] | None = None
        self.send_window = 0
        self.recv_unacked = 0

    # The caller's side.

    async def write(self, message: Any, *, last: bool = False) -> None:
        """Send one message; `last` also closes our side, in the message's own DATA frame
        (as gRPC clients send a unary request) rather than an empty one after it."""
        if self._conn is None:
            await self._open()
        if self._error is not None:
            raise self._error
        if self._sent_end or self._pending_end or self._remote_ended:
            raise asyncio.InvalidStateError("the call is already closed for writing")
        data = self._serialize(message)
        conn = self._conn
        assert conn is not None
        if len(data) > conn.max_message_bytes:
            raise rpc_error(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"a message of {len(data)} bytes to the user function is over the "
                f"{conn.max_message_bytes}-byte limit",
            )
        self._pending += b"\x00" + len(data).to_bytes(4, "big") + data
        self._pending_end = last
        conn.pump(self)
        while self._pending and self._error is None:
            # Only a message larger than the peer's windows waits here.
            assert self._loop is not None
            self._space = self._loop.create_future()
            await self._space
        if self._error is not None:
            raise self._error

    async def read(self) -> Any:
        if self._conn is None:
            await self._open()
        while not self._messages:
            if self._error is not None:
                raise self._error
            if self._remote_ended:
                return EOF
            assert self._loop is not None
            self._read_waiter = waiter = self._loop.create_future()
            await waiter
        return self._messages.popleft()

    async def done_writing(self) -> None:
        if self._conn is None:
            await self._open()
        if self._error is not None or self._pending_end or self._sent_end:
            return
        self._pending_end = True
        assert self._conn is not None
        self._conn.pump(self)

    async def wait_for_connection(self) -> None:
        """Until the server's response headers arrived or the call ended."""
        if self._conn is None:
            await self._open()
        if self._headers is not None and not self.done():
            await asyncio.shield(self._headers)

    def done(self) -> bool:
        return self._error is not None or self._remote_ended

    def cancel(self) -> bool:
        if self.done():
            return False
        self.fail(
            rpc_error(grpc.StatusCode.CANCELLED, "cancelled by the sidecar"), ErrorCode.CANCEL
        )
        return True

    async def _open(self) -> None:
        if self._opened is None:
            self._opened = self._opener(self)
        if self._opened is not None:
            await asyncio.shield(self._opened)
        if self._conn is None and self._error is None:
            raise AssertionError("the stream's opener neither attached nor failed it")
        if self._error is not None:
            raise self._error

    # The connection's side.

    def attach(self, conn: ClientConnection, stream_id: int, window: int) -> None:
        self._conn = conn
        self._stream_id = stream_id
        self.send_window = window
        self._loop = conn.loop
        self._headers = conn.loop.create_future()

    @property
    def stream_id(self) -> int:
        return self._stream_id

    def take_pending(self, limit: int) -> tuple[bytes, bool]:
        """Up to `limit` bytes to send, and whether they end the stream."""
        chunk = bytes(self._pending[:limit])
        del self._pending[:limit]
        end = self._pending_end and not self._pending
        if end:
            self._sent_end = True
        if not self._pending and self._space is not None and not self._space.done():
            self._space.set_result(None)
        return chunk, end

    def pending_size(self) -> int:
        return len(self._pending)

    def has_pending(self) -> bool:
        return bool(self._pending) or (self._pending_end and not self._sent_end)

    def closed(self) -> bool:
        """Both sides are done: the connection can forget the stream."""
        return self._error is not None or (self._remote_ended and self._sent_end)

    def headers(self, fields: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        if self._headers is not None and not self._headers.done():
            # The response head (or a trailers-only response).
            self._headers.set_result(None)
            status = next((v for k, v in fields if k == b":status"), b"")
            if status != b"200":
                code = _HTTP_TO_GRPC.get(int(status or 0), grpc.StatusCode.UNKNOWN)
                self.fail(
                    rpc_error(code, f"the user function answered HTTP {status.decode()}"),
                    None if end_stream else ErrorCode.CANCEL,
                )
                return
            if not end_stream:
                content_type = next((v for k, v in fields if k == b"content-type"), b"")
                if not content_type.startswith(b"application/grpc"):
                    self.fail(rpc_error(
                        grpc.StatusCode.UNKNOWN,
                        f"the user function answered content-type {content_type.decode()!r}, "
                        "not application/grpc",
                    ), ErrorCode.CANCEL)
                return
        if not end_stream:
            self.fail(
                rpc_error(grpc.StatusCode.INTERNAL, "a third header block from the user function"),
                ErrorCode.PROTOCOL_ERROR,
            )
            return
        self._trailers(fields)

    def _trailers(self, fields: list[tuple[bytes, bytes]]) -> None:
        """The server ended the call (its side of the stream is closed)."""
        # Our side, if still open, is closed by the connection (`settle`).
        raw = next((v for k, v in fields if k == b"grpc-status"), None)
        if self._inbox:
            self.fail(rpc_error(
                grpc.StatusCode.INTERNAL,
                f"the user function ended the call inside a message ({len(self._inbox)} "
                "bytes of it unread)",
            ))
            return
        if raw is None:
            self.fail(rpc_error(
                grpc.StatusCode.UNKNOWN, "the user function ended the call without grpc-status"
            ))
            return
        code = _CODES.get(int(raw) if raw.isdigit() else -1, grpc.StatusCode.UNKNOWN)
        if code is grpc.StatusCode.OK:
            self._remote_ended = True
            self._wake()
            return
        message = next((v for k, v in fields if k == b"grpc-message"), b"")
        self.fail(rpc_error(code, unquote(message.decode("utf-8", "replace"))))

    def data(self, data: bytes | memoryview, end_stream: bool) -> None:
        if self.done():
            return
        inbox = self._inbox
        inbox += data
        limit = self._conn.max_message_bytes if self._conn is not None else 0
        while len(inbox) >= _MESSAGE_PREFIX:
            if inbox[0] != 0:
                self.fail(rpc_error(
                    grpc.StatusCode.INTERNAL,
                    "the user function sent a compressed message; none was offered",
                ), ErrorCode.CANCEL)
                return
            size = int.from_bytes(inbox[1:5], "big")
            if size > limit:
                self.fail(rpc_error(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the user function sent a message of {size} bytes, over the "
                    f"{limit}-byte limit",
                ), ErrorCode.CANCEL)
                return
            if len(inbox) < _MESSAGE_PREFIX + size:
                break
            try:
                message = self._deserialize(bytes(inbox[_MESSAGE_PREFIX : _MESSAGE_PREFIX + size]))
            except Exception as e:
                self.fail(rpc_error(
                    grpc.StatusCode.INTERNAL,
                    f"the user function sent a message that does not parse: {e}",
                ), ErrorCode.CANCEL)
                return
            del inbox[: _MESSAGE_PREFIX + size]
            self._messages.append(message)
        self._wake()
        if end_stream:
            # END_STREAM on DATA: the server ended the call without trailers.
            self._trailers([])

    def fail(
        self, error: grpc.aio.AioRpcError, reset: ErrorCode | None = None, *, gone: bool = False
    ) -> None:
        """End the call with `error` (the first one wins) and wake whoever waits; with
        `reset`, tell the server too (RST_STREAM). `gone`: the stream no longer exists for
        the server (it reset it, refused it, or the connection is closed)."""
        if self._error is not None or self._remote_ended:
            return
        self._error = error
        self._pending.clear()
        self._wake()
        for waiter in (self._space, self._headers):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if self._conn is not None:
            self._conn.settle(self, reset, gone=gone)

    def _wake(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
