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
    """A stream answered at once with an HTTP error (not a gRPC request)."""

    def data(self, data: bytes) -> None:
        pass

    def end(self) -> None:
        pass

    def reset(self) -> None:
        pass


def _http_error(status: int, code: grpc.StatusCode, message: str) -> bytes:
    return (
        status_head(status) + literal("content-type", GRPC_CONTENT_TYPE)
        + literal("grpc-status", str(code.value[0]))
        + literal("grpc-message", percent_encoded(message))
    )


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
            connection.send_headers(stream, _http_error(
                405, grpc.StatusCode.UNIMPLEMENTED,
                f"gRPC requests are POST, not {head.method.decode('latin-1')}"), end_stream=True)
            return _Refused()
        content_type = head.content_type
        if content_type is None or not (
            content_type == GRPC_CONTENT_TYPE or content_type.startswith(("application/grpc+",
                                                                          "application/grpc;"))
        ):
            connection.send_headers(stream, _http_error(
                415, grpc.StatusCode.INTERNAL,
                f"a gRPC request's content-type is application/grpc, not {content_type!r}"),
                end_stream=True)
            return _Refused()
        unary = self._unary
        if unary is not None:
            method = unary.methods.get(head.path)
            if method is not None:
                return UnaryCall(connection, stream, method, head, unary)
        return ProxyCall(connection, stream, head, self._channel, self._max_message_bytes)
