"""The public port: gRPC and HTTP/1.1 JSON on one socket.

Each new connection is classified by its first bytes. A gRPC client opens with the
HTTP/2 client preface and is served by the gRPC front (`grpc_h2`): unary calls of the
user's services in process, every other stream forwarded to the internal grpc.aio
server; anything else is HTTP/1.1 and is served here. Over `max_connections`, a new
connection is answered 503 and closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import cast

import grpc
import grpc.aio
from larder_sidecar.function_limit import FunctionLimit
from larder_sidecar.invoke import Invoker, MethodModel
from larder_sidecar.metrics import Metrics
from larder_sidecar.model import Method
from larder_sidecar.settings import PublicPortLimits

from .connections import ConnectionSet
from .dispatch import Dispatcher, error_response
from .grpc_h2 import GrpcFront, UnaryDispatcher, UnaryServices
from .http1 import Http1Connection
from .relay import HttpRelay, RelayRouter
from .routes import build_route_table

log = logging.getLogger(__name__)

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Not configurable: the front's HTTP/2 header list limit is the HTTP/1.1 header limit.
DEFAULT_MAX_MESSAGE_BYTES = 12 * 1024 * 1024
_REFUSAL_LINGER_SECONDS = 1.0
"""How long a refused connection's input is read and dropped, so the peer sees the 503."""


class _Sniffer(asyncio.Protocol):
    """Reads just enough of a new connection to pick its protocol, then hands it over."""

    def __init__(self, server: PublicServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._first_byte_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        if not self._server.admit():
            transport.set_protocol(_Refused(self._transport))
            return
        self._server.connections.add(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._server.limits.idle_timeout, self._timed_out, "idle")

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        buffer = self._buffer + data if self._buffer else data
        if len(buffer) < len(HTTP2_PREFACE) and HTTP2_PREFACE.startswith(buffer):
            if self._first_byte_at is None:
                # A started preface (or request line) must complete like a request head.
                loop = asyncio.get_running_loop()
                self._first_byte_at = loop.time()
                self._cancel_timer()
                self._timer = loop.call_later(
                    self._server.limits.head_timeout, self._timed_out, "head"
                )
            self._buffer = buffer
            return
        self._cancel_timer()
        self._server.connections.discard(self)
        self._transport = None
        server = self._server
        protocol: asyncio.Protocol
        if buffer.startswith(HTTP2_PREFACE):
            protocol = server.grpc_front.connection(server.connections)
        else:
            protocol = Http1Connection(
                server.dispatcher,
                server.max_message_bytes,
                server.connections,
                limits=server.limits,
                metrics=server.metrics,
                first_byte_at=self._first_byte_at or asyncio.get_running_loop().time(),
            )
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._server.connections.discard(self)
        self._transport = None

    def _timed_out(self, which: str) -> None:
        self._timer = None
        if self._transport is not None:
            self._server.metrics.public_timeouts.labels(which).inc()
            self._transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def begin_close(self) -> None:
        # Nothing has been asked on this connection yet, so there is nothing to finish.
        self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()


_BUSY = error_response(
    503,
    # The code gRPC clients retry on; the 503 says the same to HTTP clients.
    grpc.StatusCode.UNAVAILABLE,
    "the sidecar has too many open connections; retry later",
).body
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(_BUSY)).encode() + b"\r\nretry-after: 1\r\n"
    b"connection: close\r\n\r\n" + _BUSY
)


class _Refused(asyncio.Protocol):
    """A connection over the limit: a 503, then input is dropped for a moment and the
    connection closes (closing with unread input would reset it and lose the 503)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        transport.write(_BUSY_RESPONSE)
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(_REFUSAL_LINGER_SECONDS, transport.abort)
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False


class PublicServer:
    """The running public port. Create it with `start_public_server`."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        grpc_target: str,
        max_message_bytes: int,
        limits: PublicPortLimits | None = None,
        metrics: Metrics | None = None,
        *,
        unary: UnaryServices | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.grpc_target = grpc_target
        self.max_message_bytes = max_message_bytes
        self.limits = limits or PublicPortLimits()
        self.metrics = metrics or Metrics()
        self.connections = ConnectionSet(self.metrics.public_connections)
        self.grpc_front = GrpcFront(
            self._grpc_channel,
            max_message_bytes,
            unary,
            max_header_list_size=self.limits.max_header_bytes,
            idle_timeout=self.limits.grpc_idle_timeout,
        )
        self._channel: grpc.aio.Channel | None = None
        self._server: asyncio.Server | None = None
        self._refused_in_burst = 0

    def _grpc_channel(self) -> grpc.aio.Channel:
        """The channel to the internal grpc.aio server, for the streams the front forwards."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.grpc_target,
                options=[
                    ("grpc.max_receive_message_length", self.max_message_bytes),
                    ("grpc.max_send_message_length", self.max_message_bytes),
                    # The client's own deadline and retries apply, not the hop's.
                    ("grpc.enable_retries", 0),
                ],
            )
        return self._channel

    def admit(self) -> bool:
        """Whether a new connection may stay; logs once per burst of refusals."""
        limit = self.limits.max_connections
        if len(self.connections) < limit:
            if self._refused_in_burst:
                log.info("accepting connections again; refused %d over the limit of %d "
                         "(LARDER_MAX_CONNECTIONS)", self._refused_in_burst, limit)
                self._refused_in_burst = 0
            return True
        if not self._refused_in_burst:
            log.warning("refusing new connections: %d are open, the limit is %d "
                        "(LARDER_MAX_CONNECTIONS)", len(self.connections), limit)
        self._refused_in_burst += 1
        self.metrics.limit_refusals.labels("connections").inc()
        return False

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
        """Stop accepting, let in-flight requests and calls finish (gRPC connections get
        GOAWAY), then end every connection; whatever is still open after `grace` seconds
        is aborted. Forwarded gRPC streams need the internal grpc.aio server until then:
        stop it concurrently with a grace no shorter than this one.
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
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None


async def start_public_server(
    host: str,
    port: int,
    grpc_target: str,
    invoker: Invoker,
    methods: Sequence[MethodModel],
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    limits: PublicPortLimits | None = None,
    metrics: Metrics | None = None,
    function_limit: FunctionLimit | None = None,
    unary_grpc: UnaryDispatcher | None = None,
    grpc_methods: Mapping[str, Method] | None = None,
    relay: RelayRouter | None = None,
) -> PublicServer:
    """Listen on host:port for gRPC and HTTP/1.1 JSON.

    gRPC: the methods among `grpc_methods` (by gRPC path) with one request message (unary
    and server-streamed) are served in process by `unary_grpc`; every other stream goes to
    the grpc.aio server at `grpc_target` (`unix:/path` or `host:port`). Without
    `unary_grpc`, every stream goes there. With `relay` (a sharded sidecar's router), an
    HTTP command for an entity a peer owns is relayed to it as HTTP (`relay.py`).

    Raises HttpRuleError when the methods' `google.api.http` options are invalid, and
    OSError when the port cannot be bound.
    """
    routes = build_route_table(methods)
    metrics = metrics or Metrics()
    limit = function_limit or FunctionLimit()
    dispatcher = Dispatcher(routes, invoker, metrics, limit)
    if relay is not None and grpc_methods is not None:
        dispatcher.relay = HttpRelay(relay, grpc_methods)
    unary = None
    if unary_grpc is not None:
        unary_methods = {
            path: m for path, m in (grpc_methods or {}).items()
            if not m.model.client_streaming
        }
        unary = UnaryServices(unary_grpc, unary_methods, max_message_bytes, limit, metrics)
    server = PublicServer(dispatcher, grpc_target, max_message_bytes, limits, metrics,
                          unary=unary)
    await server._listen(host, port)
    log.info("public port listening on %s:%d (gRPC: %d unary and server-streamed methods "
             "here, the rest via %s; HTTP/1.1 JSON: %d routes)", host, server.port,
             len(unary.methods) if unary else 0, grpc_target, len(routes.routes))
    return server
