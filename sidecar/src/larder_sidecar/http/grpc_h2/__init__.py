"""gRPC on the public port: an HTTP/2 connection of our own (`connection.py`) whose
streams are either unary calls of the user's services, served in process (`unary.py`),
or anything else, forwarded to the internal grpc.aio server (`proxy.py`).

docs/http.md (*gRPC*) describes what a client sees; docs/performance.md (*gRPC front:
HTTP/2 layer*) why the framing is ours.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import grpc.aio
from larder_sidecar.http.connections import ConnectionSet

from .connection import Http2Connection, Stream, StreamHandler
from .headers import GRPC_CONTENT_TYPE, RequestHead, literal, status_head
from .messages import percent_encoded
from .proxy import ProxyCall
from .unary import UnaryCall, UnaryDispatcher, UnaryServices

__all__ = ["GrpcFront", "UnaryDispatcher", "UnaryServices"]


class _Refused:
    """A request that is not a gRPC call: answered with an HTTP error and a line of text
    once it is complete (its body is read and dropped), as a client may still be sending."""

    def __init__(self, connection: Http2Connection, stream: Stream, status: int,
                 code: grpc.StatusCode, message: str) -> None:
        self._connection = connection
        self._stream = stream
        self._head = (
            status_head(status) + literal("content-type", "text/plain; charset=utf-8")
            + literal("grpc-status", str(code.value[0]))
            + literal("grpc-message", percent_encoded(message))
        )
        self._body = (message + "\n").encode()

    def data(self, data: bytes) -> None:
        self._connection.consumed(self._stream, len(data))

    def end(self) -> None:
        self._connection.send_headers(self._stream, self._head)
        self._connection.send_data(self._stream, self._body, end_stream=True)

    def reset(self) -> None:
        pass


class GrpcFront:
    """Makes the public port's HTTP/2 connections and picks each stream's handler."""

    def __init__(
        self,
        channel: Callable[[], grpc.aio.Channel],
        max_message_bytes: int,
        unary: UnaryServices | None,
        *,
        max_header_list_size: int,
        idle_timeout: float,
    ) -> None:
        """`channel`: the channel to the internal grpc.aio server (made on first use)."""
        self._channel = channel
        self._max_message_bytes = max_message_bytes
        self._unary = unary
        self._max_header_list_size = max_header_list_size
        self._idle_timeout = idle_timeout

    def connection(self, connections: ConnectionSet) -> Http2Connection:
        return Http2Connection(self._open_call, connections,
                               max_header_list_size=self._max_header_list_size,
                               idle_timeout=self._idle_timeout)

    def _open_call(
        self, connection: Http2Connection, stream: Stream, head: RequestHead
    ) -> StreamHandler:
        if head.method != b"POST":
            return _Refused(connection, stream, 405, grpc.StatusCode.UNIMPLEMENTED,
                            f"this port serves gRPC (POST) and HTTP/1.1; HTTP/2 "
                            f"{head.method.decode('latin-1')} requests are not served")
        content_type = head.content_type
        if content_type is None or not (
            content_type == GRPC_CONTENT_TYPE or content_type.startswith(("application/grpc+",
                                                                          "application/grpc;"))
        ):
            return _Refused(connection, stream, 415, grpc.StatusCode.INTERNAL,
                            f"a gRPC request's content-type is application/grpc, not "
                            f"{content_type!r}")
        unary = self._unary
        if unary is not None:
            method = unary.methods.get(head.path)
            if method is not None:
                return UnaryCall(connection, stream, method, head, unary)
        return ProxyCall(connection, stream, head, self._channel, self._max_message_bytes)
