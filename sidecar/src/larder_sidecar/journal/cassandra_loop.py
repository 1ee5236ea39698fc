"""A Cassandra driver connection whose socket I/O runs on the sidecar's own event loop.

The driver's default reactor (libev) reads and writes on a thread of its own, so every
request crosses threads twice: the loop hands the request to the reactor thread, and
the reactor thread hands the answer back with `call_soon_threadsafe`. Both threads are
busy under load and fight over the GIL; measured on two cores that costs more CPU per
command than the rest of the journal code (docs/performance.md). With this connection
class the loop that issues a request also reads its answer, and the driver's callbacks
run on that loop.

What keeps that safe:
- The driver creates connections (pools, reconnection, the control connection) on its
  own executor threads and blocks there until the handshake is done; the loop does the
  handshake meanwhile. Creating one *on* the loop thread would deadlock, so it is
  refused with an error instead.
- `push` and `close` may come from any driver thread (heartbeats, shutdown); off the
  loop they are handed over with `call_soon_threadsafe`, whole messages at a time.
- Request timeouts are `loop.call_later` timers.

Plain TCP only: the journal settings have no TLS options (a TLS socket would need the
loop's own TLS, not the driver's wrapped socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from cassandra.connection import Connection, ConnectionShutdown


class LoopNotBound(RuntimeError):
    """The connection class was used without a loop bound to it (or after it closed)."""


class _LoopTimer:
    """A request timeout: the driver's `Timer` interface on `loop.call_later`."""

    __slots__ = ("_cancelled", "_handle")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_loop_thread: bool,
        timeout: float,
        callback: Callable[[], Any],
    ) -> None:
        self._cancelled = False
        self._handle: asyncio.TimerHandle | None = None
        if on_loop_thread:
            self._handle = loop.call_later(timeout, callback)
        else:
            loop.call_soon_threadsafe(self._arm, loop, timeout, callback)

    def _arm(
        self, loop: asyncio.AbstractEventLoop, timeout: float, callback: Callable[[], Any]
    ) -> None:
        if not self._cancelled:
            self._handle = loop.call_later(timeout, callback)

    def cancel(self) -> None:
        self._cancelled = True
        handle = self._handle
        if handle is not None:
            # TimerHandle.cancel is safe from the loop thread, where answers arrive;
            # from another thread a late cancel at worst lets a timeout fire on a
            # finished request, which the driver ignores.
            handle.cancel()


class _Stream(asyncio.Protocol):
    def __init__(self, connection: LoopConnection) -> None:
        self._connection = connection

    def data_received(self, data: bytes) -> None:
        connection = self._connection
        connection._iobuf.write(data)
        connection.process_io_buffer()

    def eof_received(self) -> bool:
        # The server closed its side: the connection is finished.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        connection = self._connection
        if exc is not None:
            connection.defunct(exc)
        elif not connection.is_closed:
            connection.close()


class LoopConnection(Connection):  # type: ignore[misc]
    """`cassandra.connection.Connection` on the asyncio loop given to `bind`."""

    _loop: ClassVar[asyncio.AbstractEventLoop | None] = None
    _loop_thread: ClassVar[int | None] = None
    # Declared by the (untyped) driver base class.
    is_closed: bool
    is_defunct: bool

    @classmethod
    def for_running_loop(cls) -> type[LoopConnection]:
        """A subclass bound to the running loop; one per journal, so two journals on
        two loops (tests do that, one after another) never share timers or threads."""
        bound: type[LoopConnection] = type(
            "LoopConnection",
            (cls,),
            {"_loop": asyncio.get_running_loop(), "_loop_thread": threading.get_ident()},
        )
        return bound

    @classmethod
    def on_loop_thread(cls) -> bool:
        return threading.get_ident() == cls._loop_thread

    @classmethod
    def _bound_loop(cls) -> asyncio.AbstractEventLoop:
        loop = cls._loop
        if loop is None or loop.is_closed():
            raise LoopNotBound(
                "the Cassandra journal's connection class is not bound to a running event "
                "loop; use LoopConnection.for_running_loop() on the loop that sends requests"
            )
        return loop

    @classmethod
    def initialize_reactor(cls) -> None:
        cls._bound_loop()

    @classmethod
    def handle_fork(cls) -> None:
        cls._loop = None
        cls._loop_thread = None

    @classmethod
    def create_timer(cls, timeout: float, callback: Callable[[], Any]) -> _LoopTimer:
        return _LoopTimer(cls._bound_loop(), cls.on_loop_thread(), timeout, callback)

    @classmethod
    def factory(cls, endpoint: Any, timeout: float, *args: Any, **kwargs: Any) -> Any:
        if cls.on_loop_thread():
            # The handshake needs this very loop, and `factory` blocks until it is done.
            raise RuntimeError(
                "a Cassandra connection was opened from the event loop thread; the driver "
                "must connect from its own threads (asyncio.to_thread)"
            )
        return super().factory(endpoint, timeout, *args, **kwargs)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        Connection.__init__(self, *args, **kwargs)
        self._loop_ref = self._bound_loop()
        self._transport: asyncio.Transport | None = None
        # Messages pushed before the transport exists (the OPTIONS message is).
        self._early: list[bytes] = []
        self._attaching: asyncio.Task[None] | None = None
        self._connect_socket()
        self._socket.setblocking(False)
        self._loop_ref.call_soon_threadsafe(self._attach)
        self._send_options_message()

    def _attach(self) -> None:
        if self.is_closed:
            with contextlib.suppress(OSError):
                self._socket.close()
            return

        async def attach() -> None:
            try:
                transport, _ = await self._loop_ref.create_connection(
                    lambda: _Stream(self), sock=self._socket
                )
            except OSError as e:
                self.defunct(e)
                return
            # (uvloop's transports do not subclass asyncio.Transport: no isinstance here.)
            self._transport = transport
            early, self._early = self._early, []
            for data in early:
                self._transport.write(data)
            if self.is_closed:
                self._transport.close()

        # Owned by the connection: it ends by itself as soon as the socket is attached.
        self._attaching = self._loop_ref.create_task(attach())

    def push(self, data: bytes) -> None:
        if self.on_loop_thread():
            self._write(data)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to write to
                self._loop_ref.call_soon_threadsafe(self._write, data)

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            self._early.append(data)
        elif not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        with self.lock:
            if self.is_closed:
                return
            self.is_closed = True
        if self.on_loop_thread():
            self._close_transport()
        else:
            try:
                self._loop_ref.call_soon_threadsafe(self._close_transport)
            except RuntimeError:
                # The loop is gone (shutdown after it closed): close the socket here.
                with contextlib.suppress(OSError):
                    self._socket.close()
        if not self.is_defunct:
            # Requests still waiting on this connection would otherwise never finish.
            shutdown = ConnectionShutdown(f"Connection to {self.endpoint} was closed")
            self.error_all_requests(shutdown)
            self.connected_event.set()

    def _close_transport(self) -> None:
        transport = self._transport
        if transport is not None:
            transport.close()
        else:
            with contextlib.suppress(OSError):
                self._socket.close()
