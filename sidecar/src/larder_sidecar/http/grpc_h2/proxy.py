"""Every stream that is not a unary call of the user's services — streamed methods,
reflection, health, unknown methods — forwarded to the internal grpc.aio server as a
call of its own on one channel, message by message.

The client sees what grpc.aio answers: its initial metadata, messages, status, message
and trailing metadata (`grpc-status-details-bin` among them). Back-pressure holds both
ways: a request message is taken from the stream (and its window given back) only when
grpc.aio has accepted the previous one, and the next reply is read only when the
previous one has left within the client's window.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import grpc
import grpc.aio

from .connection import Http2Connection, Stream
from .headers import RESPONSE_HEAD, RequestHead
from .messages import (
    CallError,
    MessageReader,
    check_encoding,
    metadata_block,
    parse_timeout,
    prefixed,
    status_trailers,
    trailers_only,
)

log = logging.getLogger(__name__)

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
# Request fields grpc.aio sets itself on the internal hop.
_NOT_FORWARDED = frozenset({"user-agent", "grpc-accept-encoding"})
# The status grpc.aio gives a call when a write to it fails: it replaces whatever status
# the call already had, so a server that ended the call while we were still writing a
# request message to it (an unknown method, a handler that fails early) would reach the
# client as this INTERNAL instead of its own status (grpc/grpc#36066, open in grpcio 1.85).
_WRITE_FAILED = (grpc.StatusCode.INTERNAL, "Internal error from Core")

T = TypeVar("T")
Status = tuple[grpc.StatusCode, str, Any]


def _settled(accessor: Coroutine[Any, Any, T]) -> T | None:
    """The value of a grpc.aio accessor (`code()`, `details()`, ...) of a call that has its
    status, which returns without waiting; None if it would wait."""
    try:
        accessor.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    accessor.close()
    return None


def forwarded_metadata(head: RequestHead) -> list[tuple[str, str | bytes]]:
    """The request's metadata for grpc.aio: `-bin` values decoded from base64."""
    out: list[tuple[str, str | bytes]] = []
    for name, value in head.metadata:
        if name in _NOT_FORWARDED or name.startswith("grpc-"):
            continue
        if name.endswith("-bin"):
            try:
                out.append((name, base64.b64decode(value + "=" * (-len(value) % 4))))
            except (binascii.Error, ValueError):
                raise CallError(grpc.StatusCode.INTERNAL,
                                f"the value of {name} is not base64") from None
        else:
            out.append((name, value))
    return out


class ProxyCall:
    __slots__ = (
        "_call",
        "_connection",
        "_credit",
        "_done",
        "_first_status",
        "_reader",
        "_requests",
        "_stream",
        "_task",
    )

    def __init__(
        self,
        connection: Http2Connection,
        stream: Stream,
        head: RequestHead,
        channel: Callable[[], grpc.aio.Channel],
        max_message_bytes: int,
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._reader = MessageReader(max_message_bytes, head.encoding)
        self._requests: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._credit = 0
        self._call: Any = None
        self._task: asyncio.Task[None] | None = None
        self._done = False
        self._first_status: Status | None = None
        try:
            check_encoding(head.encoding)
            timeout = parse_timeout(head.timeout) if head.timeout is not None else None
            metadata = forwarded_metadata(head)
        except CallError as e:
            self._fail(e)
            return
        # Raw bytes both ways: no serializers, so messages are passed on as they came.
        multicallable: Any = channel().stream_stream(head.path, None, None)
        self._call = multicallable(metadata=metadata, timeout=timeout)
        self._call.add_done_callback(self._status_set)
        self._task = connection.loop.create_task(self._run())

    # StreamHandler

    def data(self, data: bytes) -> None:
        if self._done:
            self._connection.consumed(self._stream, len(data))
            return
        self._credit += len(data)
        reader = self._reader
        try:
            reader.feed(data)
        except CallError as e:
            self._fail(e)
            return
        for message in reader.messages:
            self._requests.put_nowait(message)
        reader.messages.clear()
        if self._requests.empty():
            self._give_back()

    def end(self) -> None:
        if self._done:
            return
        if self._reader.partial:
            self._fail(CallError(grpc.StatusCode.INTERNAL,
                                 "the request ended inside a message (fewer bytes than its "
                                 "length prefix announced)"))
            return
        self._requests.put_nowait(None)

    def reset(self) -> None:
        self._stop()

    # the call

    def _status_set(self, call: Any) -> None:
        # grpc.aio runs done callbacks once, when the call first gets a status: the one the
        # server sent, unless a failed write got there first (see _WRITE_FAILED).
        code, details = _settled(call.code()), _settled(call.details())
        if code is not None and details is not None:
            self._first_status = (code, details, _settled(call.trailing_metadata()))

    def _servers_status(self, code: grpc.StatusCode, details: str, trailing: Any) -> Status:
        if (code, details) == _WRITE_FAILED and self._first_status is not None:
            return self._first_status
        return code, details, trailing

    def _give_back(self) -> None:
        credit, self._credit = self._credit, 0
        self._connection.consumed(self._stream, credit)

    async def _send_requests(self) -> None:
        call = self._call
        while True:
            message = await self._requests.get()
            if message is None:
                await call.done_writing()
                return
            await call.write(message)
            if self._requests.empty():
                self._give_back()

    async def _run(self) -> None:
        call = self._call
        connection, stream = self._connection, self._stream
        sender = asyncio.get_running_loop().create_task(self._send_requests())
        headers_sent = False
        try:
            try:
                while True:
                    reply = await call.read()
                    if reply is _EOF:
                        break
                    if not headers_sent:
                        headers_sent = True
                        initial = await call.initial_metadata()
                        connection.send_headers(stream, RESPONSE_HEAD + metadata_block(initial))
                    connection.send_data(stream, prefixed(reply))
                    await connection.writable(stream)
                code = await call.code()
                details = await call.details()
                trailing = await call.trailing_metadata()
                initial = await call.initial_metadata()
            except grpc.aio.AioRpcError as e:
                code, details = e.code(), e.details() or ""
                trailing, initial = e.trailing_metadata(), e.initial_metadata()
            code, details, trailing = self._servers_status(code, details or "", trailing)
            if self._done:
                return
            self._done = True
            if headers_sent:
                connection.send_data(stream, b"", status_trailers(code, details or "",
                                                                  trailing or ()))
            else:
                # Trailers-only, with whatever initial metadata grpc.aio had.
                block = RESPONSE_HEAD + metadata_block(initial or ()) + status_trailers(
                    code, details or "", trailing or ())
                connection.send_headers(stream, block, end_stream=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("forwarding a gRPC stream to the internal server failed")
            self._fail(CallError(grpc.StatusCode.INTERNAL,
                                 "the sidecar failed while forwarding this call; see its log"))
        finally:
            sender.cancel()

    def _fail(self, error: CallError) -> None:
        if self._done:
            return
        self._stop()
        self._connection.send_headers(self._stream, trailers_only(error.code, error.message),
                                      end_stream=True)

    def _stop(self) -> None:
        self._done = True
        if self._call is not None:
            self._call.cancel()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
