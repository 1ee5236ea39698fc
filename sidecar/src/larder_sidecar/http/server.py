"""The public port: gRPC and HTTP/1.1 JSON on one socket.

Each new connection is classified by its first bytes. A gRPC client opens with the
HTTP/2 client preface and is relayed to the internal grpc.aio server; anything else
is HTTP/1.1 and is served here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import cast

from larder_sidecar.invoke import Invoker, MethodModel

from .connections import ConnectionSet
from .dispatch import Dispatcher
from .http1 import Http1Connection
from .relay import GrpcRelay, GrpcTarget
from .routes import build_route_table

log = logging.getLogger(__name__)

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_MAX_MESSAGE_BYTES = 12 * 1024 * 1024


class _Sniffer(asyncio.Protocol):
    """Reads just enough of a new connection to pick its protocol, then hands it over."""

    def __init__(self, server: PublicServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        buffer = self._buffer + data if self._buffer else data
        if len(buffer) < len(HTTP2_PREFACE) and HTTP2_PREFACE.startswith(buffer):
            self._buffer = buffer
            return
        self._server.connections.discard(self)
        self._transport = None
        protocol: asyncio.Protocol
        if buffer.startswith(HTTP2_PREFACE):
            protocol = GrpcRelay(self._server.target, self._server.connections)
        else:
            protocol = Http1Connection(
                self._server.dispatcher, self._server.max_message_bytes, self._server.connections
            )
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._transport = None

    def begin_close(self) -> None:
        # Nothing has been asked on this connection yet, so there is nothing to finish.
        self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()


class PublicServer:
    """The running public port. Create it with `start_public_server`."""

    def __init__(
        self, dispatcher: Dispatcher, target: GrpcTarget, max_message_bytes: int
    ) -> None:
        self.dispatcher = dispatcher
        self.target = target
        self.max_message_bytes = max_message_bytes
        self.connections = ConnectionSet()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        assert self._server is not None and self._server.sockets, "the server is not listening"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _listen(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Sniffer(self), host, port, reuse_address=True, backlog=1024
        )

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting, let in-flight HTTP requests finish, then end every connection.

        Relayed gRPC connections end when the internal gRPC server shuts down (its GOAWAY
        passes through), so stop that server concurrently with this call; whatever is
        still open after `grace` seconds is aborted.
        """
        if self._server is not None:
            self._server.close()
        self.connections.begin_close_all()
        try:
            await asyncio.wait_for(self.connections.wait_empty(), grace)
        except TimeoutError:
            log.warning("aborting %d public connections still open after %.1fs",
                        len(self.connections), grace)
            self.connections.abort_all()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


async def start_public_server(
    host: str,
    port: int,
    grpc_target: str,
    invoker: Invoker,
    methods: Sequence[MethodModel],
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> PublicServer:
    """Listen on host:port for gRPC (relayed to `grpc_target`) and HTTP/1.1 JSON.

    Raises HttpRuleError when the methods' `google.api.http` options are invalid, and
    OSError when the port cannot be bound.
    """
    routes = build_route_table(methods)
    server = PublicServer(Dispatcher(routes, invoker), GrpcTarget.parse(grpc_target),
                          max_message_bytes)
    await server._listen(host, port)
    log.info("public port listening on %s:%d (gRPC relayed to %s, HTTP/1.1 JSON: %d routes)",
             host, server.port, grpc_target, len(routes.routes))
    return server
