"""Byte relay from a public gRPC (HTTP/2) connection to the internal grpc.aio server.

No framing is parsed: each chunk read from one side is written to the other, and
each side stops reading while the other side's write buffer is full, so a slow
reader slows its writer down instead of growing memory.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import cast

from .connections import ConnectionSet

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GrpcTarget:
    """Where the internal gRPC server listens: a unix socket path or host and port."""

    unix_path: str | None = None
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, target: str) -> GrpcTarget:
        """Parse `unix:/path`, `unix:///path` or `host:port` (`[v6]:port` too)."""
        if target.startswith("unix:"):
            path = target[len("unix:") :]
            if path.startswith("//"):
                path = path[2:]
            if not path:
                raise ValueError(f"gRPC target {target!r} names no socket path")
            return cls(unix_path=path)
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"gRPC target {target!r} is neither unix:/path nor host:port")
        return cls(host=host.strip("[]"), port=int(port))

    def __str__(self) -> str:
        return f"unix:{self.unix_path}" if self.unix_path else f"{self.host}:{self.port}"


class GrpcRelay(asyncio.Protocol):
    """The public side of one relayed connection."""

    def __init__(self, target: GrpcTarget, connections: ConnectionSet) -> None:
        self._target = target
        self._connections = connections
        self._client: asyncio.Transport | None = None
        self._upstream: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self._connect_task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self._client = cast(asyncio.Transport, transport)
        self._connections.add(self)
        # Hold the client's bytes back until the internal server accepts the connection.
        self._client.pause_reading()
        self._connect_task = asyncio.get_running_loop().create_task(self._connect())

    def data_received(self, data: bytes) -> None:
        if self._upstream is not None:
            self._upstream.write(data)
        else:
            self._pending.append(data)

    def eof_received(self) -> bool:
        if self._upstream is not None:
            self._upstream.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._client = None
        if self._connect_task is not None:
            self._connect_task.cancel()
        if self._upstream is not None:
            self._upstream.close()

    def pause_writing(self) -> None:
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_writing(self) -> None:
        if self._upstream is not None:
            self._upstream.resume_reading()

    # Connection (graceful shutdown)

    def begin_close(self) -> None:
        # Nothing to do here: in-flight calls end when the internal server shuts down and
        # its GOAWAY travels through this relay; the server aborts us after its grace.
        pass

    def abort(self) -> None:
        if self._client is not None:
            self._client.abort()
        if self._upstream is not None:
            self._upstream.abort()

    # the internal side

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        target = self._target
        try:
            if target.unix_path is not None:
                upstream, _ = await loop.create_unix_connection(
                    lambda: _Upstream(self), target.unix_path
                )
            else:
                upstream, _ = await loop.create_connection(
                    lambda: _Upstream(self), target.host, target.port
                )
        except OSError as e:
            log.warning("cannot relay a gRPC connection: the internal server at %s: %s",
                        target, e)
            if self._client is not None:
                self._client.close()
            return
        client = self._client
        if client is None:
            upstream.close()
            return
        self._upstream = upstream
        if self._pending:
            upstream.write(b"".join(self._pending))
            self._pending = []
        client.resume_reading()

    def upstream_data(self, data: bytes) -> None:
        if self._client is not None:
            self._client.write(data)

    def upstream_lost(self) -> None:
        self._upstream = None
        if self._client is not None:
            self._client.close()

    def upstream_paused(self, paused: bool) -> None:
        if self._client is None:
            return
        if paused:
            self._client.pause_reading()
        else:
            self._client.resume_reading()


class _Upstream(asyncio.Protocol):
    def __init__(self, relay: GrpcRelay) -> None:
        self._relay = relay

    def data_received(self, data: bytes) -> None:
        self._relay.upstream_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.upstream_lost()

    def pause_writing(self) -> None:
        self._relay.upstream_paused(True)

    def resume_writing(self) -> None:
        self._relay.upstream_paused(False)
