"""The client side of the internal port: one long-lived connection per peer address,
carrying many calls at a time (`frames.py`, `connection.py`).

A call to a peer that does not answer fails fast: with no connection, the call waits at
most `CONNECT_WAIT` for one (a peer that just started is reached, one that is down
fails within that time with `UNAVAILABLE`, never sent); a peer that goes silent is
noticed by pings within `SILENT_AFTER` seconds and its calls fail; every call has a
deadline. This sidecar's map view goes once per connection and again only when it
changes; each call carries the map version it was routed under.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from . import frames, wire
from .connection import FramedConnection, ping, pong
from .frames import Kind

log = logging.getLogger("larder_sidecar.cluster")

FORWARD_TIMEOUT = 30.0
"""Seconds a forwarded command may take at its owner (a hand-off wait included)."""
CONNECT_WAIT = 1.0
"""Seconds a call waits for a peer's connection before it fails with UNAVAILABLE."""
RELEASE_CALL_TIMEOUT = 5.0
"""Seconds one Release call may take; the new owner asks again until its own bound."""
PING_EVERY = 1.0
"""Seconds between pings on a connection (the server answers each)."""
SILENT_AFTER = 5.0
"""Seconds without a byte from a peer before its connection is given up: its calls
fail with UNAVAILABLE (a pod that vanished without closing its connections)."""
_RECONNECT_DELAY = (0.1, 0.4)
_MAX_CALL_ID = 0xFFFFFFFF


class PeerUnavailable(Exception):
    """The peer could not be reached or failed the call itself (not the command).

    `sent` is False when the request certainly did not run there: it never left this
    sidecar (no connection, or the connection closed before the request was written to
    it), or the peer refused it without running it. Then sending it elsewhere cannot run
    the command twice."""

    def __init__(self, code: grpc.StatusCode, details: str, *, sent: bool = True) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.sent = sent


class PeerTransport(Protocol):
    """How the router talks to peers (a fake in unit tests)."""

    async def forward(self, address: str, view: Any, request: Any) -> Any:
        """Send a `ForwardRequest` routed under the map `view` (a `MapView`, one object
        per map: it is sent again only when another one is given); return the
        `ForwardReply` or raise PeerUnavailable."""
        ...

    async def release(self, address: str, request: Any) -> Any:
        """Send a `ReleaseRequest` (its `view` set); return the `ReleaseReply` or raise
        PeerUnavailable."""
        ...

    async def forget(self, keep: Sequence[str]) -> None:
        """Drop what is kept for addresses not in `keep` (they left the membership)."""
        ...


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class _Method:
    """A call's kind, its answer's kind and decoder, and its deadline."""

    __slots__ = ("decode", "kind", "reply", "seconds")

    def __init__(
        self, kind: Kind, reply: Kind, decode: Callable[[bytes], Any], seconds: float
    ) -> None:
        self.kind = kind
        self.reply = reply
        self.decode = decode
        self.seconds = seconds


class _Call:
    __slots__ = ("deadline", "future", "method")

    def __init__(self, future: asyncio.Future[Any], method: _Method, deadline: float) -> None:
        self.future = future
        self.method = method
        self.deadline = deadline


class PeerConnection(FramedConnection):
    """The client end of one connection to one peer."""

    def __init__(
        self, address: str, max_frame: int, *, ping_every: float, silent_after: float
    ) -> None:
        super().__init__(address, max_frame, ping_every)
        self._silent_after = silent_after
        self.ready: asyncio.Future[None] = self._loop.create_future()
        """Done when the server's preface arrived (or failed: the connection is unusable)."""
        self.ready.add_done_callback(_retrieve)
        self._calls: dict[int, _Call] = {}
        self._unflushed: list[int] = []
        self._next_call = 1
        self._view: Any = None
        self._view_key: tuple[Any, ...] | None = None
        self.goaway: str | None = None
        """Why the server asked for no new calls here (None: it did not)."""
        self._retiring = False
        self.on_gone: Callable[[PeerConnection], None] | None = None
        """Called once this connection takes no new calls (closed, go-away, retired)."""

    @property
    def usable(self) -> bool:
        return self.ready.done() and not (self.closed or self.goaway or self._retiring)

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.send_now(frames.preface(self._max_frame))

    def on_preface(self, version: int, max_frame: int) -> None:
        if version != frames.VERSION:
            error = PeerUnavailable(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the sidecar at {self.peer} speaks peer framing version {version}, this one "
                f"{frames.VERSION}: all the function's pods must run the same release",
                sent=False,
            )
            if not self.ready.done():
                self.ready.set_exception(error)
            raise frames.FramingError(error.details)
        if not self.ready.done():
            self.ready.set_result(None)

    # --- calls ------------------------------------------------------------------------

    async def call(
        self, method: _Method, view: Any, request: Any, view_key: tuple[Any, ...] | None = None
    ) -> Any:
        """One call: its frame (after the view, if this connection has not sent that one
        yet) leaves with the others of this loop pass; wait for the answer."""
        if not self.usable:
            raise PeerUnavailable(
                grpc.StatusCode.UNAVAILABLE,
                f"the connection to {self.peer} takes no new calls "
                f"({self.goaway or self.close_reason or 'retired'})",
                sent=False,
            )
        body = request.SerializeToString()
        if len(body) > self.send_limit:
            raise PeerUnavailable(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the request is {len(body)} bytes, more than the {self.send_limit} bytes the "
                f"sidecar at {self.peer} accepts (LARDER_MAX_MESSAGE_BYTES, here and there)",
                sent=False,
            )
        if view is not self._view and (view_key is None or view_key != self._view_key):
            self._view = view
            self._view_key = view_key
            self.send(frames.frame(Kind.VIEW, 0, view.SerializeToString()))
        call_id = self._next_call
        self._next_call = 1 if call_id == _MAX_CALL_ID else call_id + 1
        future: asyncio.Future[Any] = self._loop.create_future()
        # Deadlines are checked by the connection's tick (every `ping_every` seconds), not
        # by a timer per call.
        self._calls[call_id] = _Call(future, method, self._loop.time() + method.seconds)
        self.send(frames.frame(method.kind, call_id, body))
        self._unflushed.append(call_id)
        try:
            return await future
        except asyncio.CancelledError:
            # The caller gave up: forget the call, and tell the server to stop it.
            if self._calls.pop(call_id, None) is not None:
                self._cancel_remote(call_id)
            raise

    def _expire(self, now: float) -> None:
        for call_id in [i for i, call in self._calls.items() if call.deadline <= now]:
            call = self._calls.pop(call_id)
            self._cancel_remote(call_id)
            if not call.future.done():
                call.future.set_exception(
                    PeerUnavailable(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no answer from {self.peer} within {call.method.seconds:g}s",
                    )
                )

    def _cancel_remote(self, call_id: int) -> None:
        if not self.closed:
            self.send(frames.frame(Kind.CANCEL, call_id))
        self._after_call()

    def on_flushed(self) -> None:
        self._unflushed.clear()

    def on_frame(self, kind: int, call_id: int, body: bytes) -> None:
        if kind in (Kind.FORWARD_REPLY, Kind.RELEASE_REPLY, Kind.FAILED):
            call = self._calls.pop(call_id, None)
            if call is None:
                return  # the caller gave up on it
            outcome = self._answer(kind, call, body)
            if not call.future.done():
                if isinstance(outcome, PeerUnavailable):
                    call.future.set_exception(outcome)
                else:
                    call.future.set_result(outcome)
            self._after_call()
        elif kind == Kind.PONG:
            pass
        elif kind == Kind.PING:
            self.send(pong())
        elif kind == Kind.GOAWAY:
            status = wire.Status.FromString(body)
            self.goaway = status.message or "the peer is going away"
            log.info("the sidecar at %s asks for no new calls: %s", self.peer, self.goaway)
            self._gone()
            self._after_call()
        else:
            raise frames.FramingError(f"a {Kind(kind).name} frame sent to a client")

    def _answer(self, kind: int, call: _Call, body: bytes) -> Any:
        """The call's reply, or the PeerUnavailable it fails with."""
        if kind not in (Kind.FAILED, call.method.reply):
            call.future.set_exception(
                PeerUnavailable(grpc.StatusCode.INTERNAL, f"a wrong answer from {self.peer}")
            )
            raise frames.FramingError(f"a {Kind(kind).name} for a call of another kind")
        try:
            if kind == Kind.FAILED:
                # Refused (or not started): the call did not run there.
                status = wire.Status.FromString(body)
                code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
                return PeerUnavailable(code, status.message, sent=False)
            return call.method.decode(body)
        except DecodeError as e:
            call.future.set_exception(
                PeerUnavailable(grpc.StatusCode.INTERNAL, f"a broken answer from {self.peer}")
            )
            raise frames.FramingError(f"a {Kind(kind).name} that does not parse") from e

    def on_tick(self, now: float) -> None:
        if now - self.last_heard > self._silent_after:
            self.fail(f"nothing heard for {now - self.last_heard:.1f}s")
            return
        if self._calls:
            self._expire(now)
            self._after_call()
        if not self.closed:
            self.send(ping())

    def on_closed(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(
                PeerUnavailable(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the connection to {self.peer} closed: {reason}",
                    sent=False,
                )
            )
        unsent = set(self._unflushed)
        calls, self._calls = self._calls, {}
        for call_id, call in calls.items():
            if call.future.done():
                continue
            if call_id in unsent:
                error = PeerUnavailable(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the connection to {self.peer} closed before the call was sent: {reason}",
                    sent=False,
                )
            else:
                error = PeerUnavailable(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the connection to {self.peer} closed: {reason}",
                )
            call.future.set_exception(error)
        self._gone()

    # --- ending -----------------------------------------------------------------------

    def retire(self) -> None:
        """Take no new calls; close once the calls in flight have their answers (or
        their deadlines passed)."""
        self._retiring = True
        self._gone()
        self._after_call()

    def _after_call(self) -> None:
        if (self._retiring or self.goaway) and not self._calls:
            self.close("retired" if self._retiring else f"go-away: {self.goaway}")

    def _gone(self) -> None:
        callback, self.on_gone = self.on_gone, None
        if callback is not None:
            callback(self)


class _Link:
    """What this sidecar keeps for one peer address: the connection calls use, and the
    attempt to open one."""

    __slots__ = ("address", "connecting", "connection")

    def __init__(self, address: str) -> None:
        self.address = address
        self.connection: PeerConnection | None = None
        self.connecting: asyncio.Task[PeerConnection] | None = None


class PeerClients:
    """Implements `PeerTransport`: connections are opened on first use and again after
    they close (a peer that restarted is reached by the next call)."""

    def __init__(
        self,
        max_message_bytes: int,
        forward_timeout: float = FORWARD_TIMEOUT,
        *,
        connect_wait: float = CONNECT_WAIT,
        ping_every: float = PING_EVERY,
        silent_after: float = SILENT_AFTER,
    ) -> None:
        self._max_frame = max_message_bytes + frames.OVERHEAD
        self._forward_timeout = forward_timeout
        self._connect_wait = connect_wait
        self._ping_every = ping_every
        self._silent_after = silent_after
        self._links: dict[str, _Link] = {}
        self._retired: set[PeerConnection] = set()
        self._closing = False
        self._forward = _Method(
            Kind.FORWARD, Kind.FORWARD_REPLY, wire.ForwardReply.FromString, forward_timeout
        )
        self._release = _Method(
            Kind.RELEASE, Kind.RELEASE_REPLY, wire.ReleaseReply.FromString, RELEASE_CALL_TIMEOUT
        )

    async def forward(self, address: str, view: Any, request: Any) -> Any:
        link = self._links.get(address)
        connection = None if link is None else link.connection
        if connection is None or not connection.usable:
            connection = await self._connect(address)
        return await connection.call(self._forward, view, request)

    async def release(self, address: str, request: Any) -> Any:
        view = wire.MapView()
        view.CopyFrom(request.view)
        body = wire.ReleaseRequest(shards=request.shards, map_version=view.version)
        connection = await self._connect(address)
        # Release builds a view per call: the same view is known by its content.
        return await connection.call(self._release, view, body, wire.view_key(view))

    async def _connect(self, address: str) -> PeerConnection:
        if self._closing:
            raise PeerUnavailable(
                grpc.StatusCode.UNAVAILABLE, "this sidecar is stopping", sent=False
            )
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = _Link(address)
        if link.connection is not None and link.connection.usable:
            return link.connection
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_wait
        while True:
            if link.connecting is None:
                link.connecting = loop.create_task(self._open(link), name=f"connect to {address}")
                link.connecting.add_done_callback(_retrieve)
            attempt = link.connecting
            try:
                async with asyncio.timeout_at(deadline):
                    # Shielded: a caller that gives up does not stop the attempt others
                    # wait for.
                    return await asyncio.shield(attempt)
            except TimeoutError:
                raise PeerUnavailable(
                    grpc.StatusCode.UNAVAILABLE,
                    f"no connection to {address} within {self._connect_wait:g}s",
                    sent=False,
                ) from None
            except PeerUnavailable as e:
                # An attempt that began before this call may have given up just before the
                # peer came up: this call gets its own full wait.
                if e.code is grpc.StatusCode.FAILED_PRECONDITION or loop.time() >= deadline:
                    raise
                if link.connecting is attempt:
                    link.connecting = None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if attempt.cancelled() and (task is None or not task.cancelling()):
                    # The attempt was stopped (`forget`, `close`), not this caller: the
                    # request never left.
                    raise PeerUnavailable(
                        grpc.StatusCode.UNAVAILABLE,
                        f"the connection attempt to {address} was stopped: the member left "
                        "or this sidecar is stopping",
                        sent=False,
                    ) from None
                raise

    async def _open(self, link: _Link) -> PeerConnection:
        """Connect (again and again, within `CONNECT_WAIT`) and wait for the preface."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_wait
        host, _, port = link.address.rpartition(":")
        delay = _RECONNECT_DELAY[0]
        why = "no answer"
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                connection: PeerConnection | None = None
                try:
                    async with asyncio.timeout(remaining):
                        _, connection = await loop.create_connection(
                            lambda: PeerConnection(
                                link.address,
                                self._max_frame,
                                ping_every=self._ping_every,
                                silent_after=self._silent_after,
                            ),
                            host.strip("[]"),
                            int(port),
                        )
                        await connection.ready
                except TimeoutError:
                    if connection is not None:
                        connection.abort("no preface in time")
                    break
                except PeerUnavailable as e:
                    if e.code is grpc.StatusCode.FAILED_PRECONDITION:
                        log.error("%s", e.details)  # noqa: TRY400 - not a crash
                        raise
                    why = e.details
                except OSError as e:
                    why = e.strerror or str(e)
                else:
                    if self._closing or self._links.get(link.address) is not link:
                        # Forgotten or stopping meanwhile: not to be used.
                        connection.close("not needed any more")
                        raise PeerUnavailable(
                            grpc.StatusCode.UNAVAILABLE,
                            f"the connection to {link.address} was closed: the member left",
                            sent=False,
                        )
                    link.connection = connection
                    connection.on_gone = _dropper(link)
                    return connection
                pause = min(delay, deadline - loop.time())
                if pause <= 0:
                    break
                await asyncio.sleep(pause)
                delay = min(delay * 2, _RECONNECT_DELAY[1])
            raise PeerUnavailable(
                grpc.StatusCode.UNAVAILABLE,
                f"no connection to {link.address} within {self._connect_wait:g}s ({why})",
                sent=False,
            )
        finally:
            link.connecting = None

    async def forget(self, keep: Sequence[str]) -> None:
        """Retire the connections of addresses no longer in the membership: they take no
        new call and close once the calls on them have their answers (a forward already
        sent must get its answer)."""
        for address in [a for a in self._links if a not in keep]:
            link = self._links.pop(address)
            if link.connecting is not None:
                link.connecting.cancel()
            if link.connection is not None:
                self._retire(link.connection)

    def _retire(self, connection: PeerConnection) -> None:
        self._retired = {c for c in self._retired if not c.closed}
        if connection.closed:
            return
        self._retired.add(connection)
        connection.retire()

    async def close(self) -> None:
        """At shutdown: nothing is forwarded any more; give calls a second to finish."""
        self._closing = True
        links, self._links = list(self._links.values()), {}
        for link in links:
            if link.connecting is not None:
                link.connecting.cancel()
            if link.connection is not None:
                self._retired.add(link.connection)
                link.connection.retire()
        open_ = [c.ended for c in self._retired if not c.closed]
        if open_:
            await asyncio.wait(open_, timeout=1.0)
        for connection in self._retired:
            connection.abort("this sidecar is stopping")
        self._retired.clear()


def _dropper(link: _Link) -> Callable[[PeerConnection], None]:
    """The callback that stops `link` using a connection that takes no new calls."""

    def drop(connection: PeerConnection) -> None:
        if link.connection is connection:
            link.connection = None

    return drop


def _retrieve(future: asyncio.Future[Any]) -> None:
    """A connection attempt nobody awaits any more must not log 'never retrieved'."""
    if not future.cancelled():
        future.exception()
