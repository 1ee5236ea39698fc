"""The internal port's server (`LARDER_INTERNAL_PORT`): other members forward entity
commands here and ask for shards to be released, each over its one long-lived
connection (`frames.py`).

Nothing a connection carries runs before its sender's map view is accepted: it must
have sent one (else every call is refused with INVALID_ARGUMENT), the sender must be a
current member calling from that member's address (else PERMISSION_DENIED, and the
connection is closed), with the same shard count (else FAILED_PRECONDITION). The view is
checked once (and again when this sidecar's map changes), not per call; each call must
carry the version of that view. A forward then runs only if this member serves the
entity's shard; otherwise it is answered with a redirect, having run nothing. A forward
that relays an HTTP request (`ForwardRequest.http`, `http/relay.py`) is served by this
sidecar's own public HTTP front (`relayed_http`), and its encoded answer goes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from .. import tracing
from ..invoke import InvokeError
from ..model import Kind as ComponentKind
from ..model import Method
from ..outcome import Outcome, metadata_pairs
from . import frames, wire
from .connection import FramedConnection, pong
from .frames import Kind
from .metrics import ClusterMetrics
from .sharded import MAX_PEER_HOPS, MEMBER_WAIT, ShardedRouter, clip_id
from .shards import ShardMap

log = logging.getLogger("larder_sidecar.cluster")

SILENT_AFTER = 15.0
"""Seconds without a byte from a client (which pings every second) before its
connection is closed."""
TICK = 1.0
"""Seconds between a connection's checks: silence, and a map change that may have made
its sender a stranger."""


class Refused(Exception):
    """The call did not run: the transport's refusal (a status code and why)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _ViewCheck:
    """One view a connection sent and the verdict on it under this sidecar's map."""

    __slots__ = ("checking", "under", "verdict", "view")

    def __init__(self, view: Any) -> None:
        self.view = view
        self.under: ShardMap | bool | None = False
        """The map the verdict holds for (False: none yet)."""
        self.verdict: tuple[grpc.StatusCode, str] | None = None
        self.checking: asyncio.Task[None] | None = None


class PeerSession:
    """The server's side of one connection, without the socket: the sender's view and
    its verdict, and the calls' checks. (The unit tests' in-process transport drives
    one directly.)"""

    def __init__(self, server: InternalServer, peer_ip: str) -> None:
        self._server = server
        self.peer_ip = peer_ip
        self.current: _ViewCheck | None = None
        self._checks: set[asyncio.Task[None]] = set()

    def set_view(self, view: Any) -> None:
        """A new view from the sender: the calls after it are checked against it (the
        calls before it still against theirs)."""
        self.current = _ViewCheck(view)

    def stale(self) -> bool:
        """Whether this sidecar's map changed since the current view was judged."""
        current = self.current
        return current is not None and current.under is not self._server.router.map

    async def verdict(self, check: _ViewCheck | None) -> tuple[grpc.StatusCode, str] | None:
        """Why calls under `check`'s view must be refused (None: serve them); judged
        once per view and map, concurrent callers waiting for one judgement."""
        if check is None:
            return (
                grpc.StatusCode.INVALID_ARGUMENT,
                "the call came before any shard-map view on its connection",
            )
        router = self._server.router
        if check.under is router.map:
            return check.verdict
        if check.checking is None:
            check.checking = asyncio.get_running_loop().create_task(
                self._judge(check), name=f"check the view of {self.peer_ip}"
            )
            self._checks.add(check.checking)
            check.checking.add_done_callback(self._checks.discard)
        await asyncio.shield(check.checking)
        return check.verdict

    async def _judge(self, check: _ViewCheck) -> None:
        try:
            check.verdict = await self._server.router.refusal(check.view, self.peer_ip)
            check.under = self._server.router.map
        finally:
            check.checking = None

    async def forward(self, request: Any, check: _ViewCheck | None) -> Any:
        """Run a forwarded command (under the view `check` that preceded it)."""
        await self._admit(request, check)
        return await self._server.serve_forward(request)

    async def release(self, request: Any, check: _ViewCheck | None) -> Any:
        await self._admit(request, check)
        return await self._server.serve_release(request)

    async def _admit(self, request: Any, check: _ViewCheck | None) -> None:
        refusal = await self.verdict(check)
        if refusal is None and check is not None and request.map_version != check.view.version:
            refusal = (
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the call was routed under map version {request.map_version}, but its "
                f"connection's view is version {check.view.version}",
            )
        if refusal is not None:
            self._server.refused()
            raise Refused(*refusal)

    def close(self) -> None:
        for task in list(self._checks):
            task.cancel()


class ServerConnection(FramedConnection):
    """The server end of one connection from a peer."""

    def __init__(self, server: InternalServer) -> None:
        super().__init__("a peer", server.max_frame, TICK)
        self._server = server
        self._session: PeerSession | None = None
        self._running: dict[int, asyncio.Task[None]] = {}
        self._leaving = False
        self._rechecking: asyncio.Task[None] | None = None
        self._admitting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peername = transport.get_extra_info("peername")
        host = str(peername[0]) if isinstance(peername, tuple) and peername else ""
        self.peer = f"{host}:{peername[1]}" if host else "an unknown address"
        self._session = PeerSession(self._server, _ip(host))
        self._server.connections.add(self)
        # At accept: an address that is no member's is turned away before it sends
        # anything (its calls could not run anyway: each view is checked too).
        self._admitting = self._loop.create_task(self._admit(self._session.peer_ip))

    def on_preface(self, version: int, max_frame: int) -> None:
        # Our own preface first, even to a peer of another version: it says which one
        # this side speaks.
        self.send_now(frames.preface(self._max_frame))
        if version != frames.VERSION:
            raise frames.FramingError(
                f"it speaks peer framing version {version}, this sidecar {frames.VERSION}: "
                "all the function's pods must run the same release"
            )

    def on_frame(self, kind: int, call: int, body: bytes) -> None:
        session = self._session
        assert session is not None
        try:
            if kind == Kind.FORWARD:
                self._start(
                    call, self._forward(call, wire.ForwardRequest.FromString(body), session.current)
                )
            elif kind == Kind.RELEASE:
                self._start(
                    call, self._release(call, wire.ReleaseRequest.FromString(body), session.current)
                )
            elif kind == Kind.VIEW:
                session.set_view(wire.MapView.FromString(body))
            elif kind == Kind.CANCEL:
                task = self._running.get(call)
                if task is not None:
                    task.cancel()
            elif kind == Kind.PING:
                self.send(pong())
            elif kind != Kind.PONG:
                raise frames.FramingError(f"a {Kind(kind).name} frame sent to a server")
        except DecodeError as e:
            raise frames.FramingError(f"a {Kind(kind).name} frame that does not parse") from e

    def _start(self, call: int, work: Any) -> None:
        if self._leaving or call in self._running:
            work.close()
            why = "a call id already in use" if call in self._running else "going away"
            self._failed(call, grpc.StatusCode.UNAVAILABLE, f"not run: {why}")
            return
        task = self._loop.create_task(work)
        self._running[call] = task
        task.add_done_callback(lambda _: self._finished(call))

    def _finished(self, call: int) -> None:
        self._running.pop(call, None)
        if self._leaving and not self._running:
            self.close("gone away")

    async def _forward(self, call: int, request: Any, check: _ViewCheck | None) -> None:
        assert self._session is not None
        try:
            reply = await self._session.forward(request, check)
        except Refused as e:
            self._refused(call, e)
            return
        except Exception:
            # It may have run: an answer, not a refusal.
            log.exception("a forwarded command from %s failed", self.peer)
            reply = _error_reply(grpc.StatusCode.INTERNAL, "the forwarded call failed at its owner")
        self._reply(call, Kind.FORWARD_REPLY, reply)

    async def _release(self, call: int, request: Any, check: _ViewCheck | None) -> None:
        assert self._session is not None
        try:
            reply = await self._session.release(request, check)
        except Refused as e:
            self._refused(call, e)
            return
        except Exception:
            log.exception("a Release call from %s failed", self.peer)
            self._failed(call, grpc.StatusCode.INTERNAL, "the Release call failed")
            return
        self._reply(call, Kind.RELEASE_REPLY, reply)

    def _reply(self, call: int, kind: Kind, reply: Any) -> None:
        body = reply.SerializeToString()
        if len(body) > self.send_limit:
            message = (
                f"the owner's reply is {len(body)} bytes, more than the {self.send_limit} "
                "bytes the forwarding sidecar accepts (LARDER_MAX_MESSAGE_BYTES)"
            )
            if kind != Kind.FORWARD_REPLY:
                self._failed(call, grpc.StatusCode.RESOURCE_EXHAUSTED, message)
                return
            # The command ran: its answer is this error (FAILED would say it did not run).
            body = _error_reply(grpc.StatusCode.RESOURCE_EXHAUSTED, message).SerializeToString()
        self.send(frames.frame(kind, call, body))

    def _failed(self, call: int, code: grpc.StatusCode, message: str) -> None:
        body = wire.Status(code=code.value[0], message=message).SerializeToString()
        self.send(frames.frame(Kind.FAILED, call, body))

    def _refused(self, call: int, refusal: Refused) -> None:
        self._failed(call, refusal.code, refusal.details)
        if refusal.code is grpc.StatusCode.PERMISSION_DENIED:
            self._go_away(refusal.details)

    def _go_away(self, why: str) -> None:
        """No new calls; close once the running ones have answered."""
        if self._leaving or self.closed:
            return
        log.warning("refusing the internal connection from %s: %s", self.peer, why)
        self.go_away(grpc.StatusCode.PERMISSION_DENIED, why)

    def go_away(self, code: grpc.StatusCode, why: str) -> None:
        if self._leaving or self.closed:
            return
        self._leaving = True
        body = wire.Status(code=code.value[0], message=why).SerializeToString()
        self.send(frames.frame(Kind.GOAWAY, 0, body))
        if not self._running:
            self.close("gone away")

    async def _admit(self, ip: str) -> None:
        """Turn the connection away unless `ip` is a member's address, waiting up to
        `MEMBER_WAIT` (from this sidecar's first map) for a map that has it (a member
        that just joined)."""
        router = self._server.router
        deadline = self._loop.time() + MEMBER_WAIT
        while True:
            shard_map = router.map
            if shard_map is None:
                # No map yet, no verdict: the wait starts with the first map.
                deadline = self._loop.time() + MEMBER_WAIT
            elif ip in await self._server.member_ips(shard_map):
                return
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                self._go_away(f"{ip or 'an unknown address'} is no member's address")
                return
            # A poll, briefly: only a connection not yet admitted waits here.
            await asyncio.sleep(min(remaining, 0.2))

    def on_tick(self, now: float) -> None:
        if now - self.last_heard > SILENT_AFTER:
            self.fail(f"nothing heard for {now - self.last_heard:.1f}s")
            return
        session = self._session
        if session is not None and session.stale() and self._rechecking is None:
            # This sidecar's map changed: is the sender still a member at this address?
            self._rechecking = self._loop.create_task(self._recheck(session))

    async def _recheck(self, session: PeerSession) -> None:
        try:
            refusal = await session.verdict(session.current)
            if refusal is not None and refusal[0] is grpc.StatusCode.PERMISSION_DENIED:
                self._go_away(refusal[1])
        finally:
            self._rechecking = None

    def on_closed(self, reason: str) -> None:
        self._server.connections.discard(self)
        if self._session is not None:
            self._session.close()
        if self._rechecking is not None:
            self._rechecking.cancel()
        if self._admitting is not None:
            self._admitting.cancel()
        # Nobody can receive their answers: as gRPC cancels a call whose client is gone.
        for task in list(self._running.values()):
            task.cancel()

    async def drain(self, grace: float) -> None:
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=grace)


class InternalServer:
    def __init__(
        self,
        router: ShardedRouter,
        methods: Mapping[str, Method],
        metrics: ClusterMetrics,
        max_message_bytes: int,
    ) -> None:
        self.router = router
        self._methods = methods
        self.max_frame = max_message_bytes + frames.OVERHEAD
        self._server: asyncio.Server | None = None
        self.connections: set[ServerConnection] = set()
        self.port = 0
        self._member_ips: tuple[ShardMap, frozenset[str]] | None = None
        # Bound once: `labels()` is a lookup under a lock.
        self._in_ok = metrics.forwarded_in.labels("ok")
        self._in_error = metrics.forwarded_in.labels("error")
        self._in_redirect = metrics.forwarded_in.labels("redirect")
        self._in_refused = metrics.forwarded_in.labels("refused")
        self.relayed_http: Callable[[Any], Awaitable[Any]] | None = None
        """Serves a relayed HTTP request (an `HttpRequest`) as this sidecar's public HTTP
        front would and returns its `HttpAnswer`; set once that front runs (app.py: the
        front is a layer above this one)."""

    async def start(self, host: str, port: int) -> int:
        """Bind `host:port` (0: any free port) and serve; returns the bound port."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: ServerConnection(self), host, port)
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop accepting; ask every peer for no new calls; let the running ones finish
        for `grace` seconds; then close."""
        if self._server is None:
            return
        self._server.close()
        connections = list(self.connections)
        for connection in connections:
            connection.go_away(grpc.StatusCode.UNAVAILABLE, "this sidecar is stopping")
        await asyncio.gather(*(c.drain(grace) for c in connections))
        for connection in connections:
            connection.abort("this sidecar stopped")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def member_ips(self, shard_map: ShardMap) -> frozenset[str]:
        """The IPs of every member's address under `shard_map` (hostnames resolved once
        per map)."""
        known = self._member_ips
        if known is not None and known[0] is shard_map:
            return known[1]
        ips: set[str] = set()
        for member in shard_map.membership.members:
            host = member.address.rpartition(":")[0].strip("[]")
            if _ip(host):
                ips.add(_ip(host))
                continue
            try:
                infos = await asyncio.wait_for(
                    asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM),
                    2.0,
                )
            except (OSError, TimeoutError):
                continue
            ips.update(_ip(str(info[4][0])) for info in infos)
        result = frozenset(ips)
        self._member_ips = (shard_map, result)
        return result

    def session(self, peer_ip: str) -> PeerSession:
        """A session for an in-process caller (tests) as if connected from `peer_ip`."""
        return PeerSession(self, peer_ip)

    def refused(self) -> None:
        self._in_refused.inc()

    async def serve_release(self, request: Any) -> Any:
        """A new owner's `Release` (its view accepted)."""
        return await self.router.serve_release(request.shards)

    async def serve_forward(self, request: Any) -> Any:
        """A forwarded command (its view accepted): the `ForwardReply`."""
        if request.HasField("http"):
            return await self._serve_relayed(request)
        try:
            result = await self._run(request)
        except InvokeError as e:
            self._in_error.inc()
            return wire.ForwardReply(error=wire.error_message(e))
        if isinstance(result, Outcome):
            self._in_ok.inc()
            return wire.ForwardReply(outcome=wire.outcome_message(result))
        self._in_redirect.inc()
        return wire.ForwardReply(redirect=result)

    async def _serve_relayed(self, request: Any) -> Any:
        """A relayed HTTP request: if this member serves the entity, the answer of its own
        HTTP front (`relayed_http`), else a redirect, having run nothing."""
        http = request.http
        serve = self.relayed_http
        if serve is None:
            # Not wired yet (the public port starts after the internal one): the sender
            # forwards it the transcoded way instead (as to a sidecar of an older release).
            self._in_error.inc()
            return _error_reply(
                grpc.StatusCode.UNIMPLEMENTED, "this sidecar does not serve relayed HTTP yet"
            )
        try:
            _check_hops(request)
            with tracing.span(
                f"forwarded {http.method} {http.path}",
                tracing.SpanKind.SERVER,
                # The forwarding sidecar's CLIENT span: the command's trace goes on here.
                parent=tracing.extract((h.name, h.value) for h in http.headers),
                attributes={"larder.entity_type": request.entity_type},
            ):
                redirect = await self.router.redirect(request.entity_type, request.entity_id)
                if redirect is not None:
                    self._in_redirect.inc()
                    return wire.ForwardReply(redirect=redirect)
                if tracing.enabled():
                    # The owner's front continues the trace under this span.
                    wire.set_headers(
                        http, tracing.inject([(h.name, h.value) for h in http.headers])
                    )
                # The front's own path from here: the dispatcher routes the command again,
                # to this member's entity host (or, if the shard moved on meanwhile, to
                # its new owner, as any command of this front).
                answer = await serve(http)
        except InvokeError as e:
            self._in_error.inc()
            return wire.ForwardReply(error=wire.error_message(e))
        self._in_ok.inc()
        return wire.ForwardReply(http=answer)

    async def _run(self, request: Any) -> Outcome | Any:
        _check_hops(request)
        method = self._methods.get(request.method)
        if method is None or method.component.kind is ComponentKind.ACTION:
            raise InvokeError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"the owner's user function has no entity method {request.method}: do all the "
                "function's pods run the same version?",
            )
        if method.component.entity_type != request.entity_type:
            raise InvokeError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{request.method} belongs to entity type {method.component.entity_type!r} "
                f"here, not {request.entity_type!r}: do all the function's pods run the same "
                "version?",
            )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "forwarded %s for %s/%s",
                request.method,
                request.entity_type,
                clip_id(request.entity_id),
            )
        metadata = metadata_pairs(request.metadata)
        with tracing.span(
            f"forwarded {request.method}",
            tracing.SpanKind.SERVER,
            # The forwarding sidecar's CLIENT span: the command's trace goes on here.
            parent=tracing.extract(metadata),
            attributes={"larder.entity_type": request.entity_type},
        ):
            # The entity's spans go under this one (the host captures it as their parent).
            return await self.router.serve(method, request.entity_id, request.payload, metadata)


def _check_hops(request: Any) -> None:
    if request.hops > MAX_PEER_HOPS:
        raise InvokeError(
            grpc.StatusCode.UNAVAILABLE,
            f"the command was redirected {request.hops} times: the sidecars disagree on "
            "its owner while membership changes; retry",
        )


def _error_reply(code: grpc.StatusCode, message: str) -> Any:
    return wire.ForwardReply(error=wire.Status(code=code.value[0], message=message))


def _ip(host: str) -> str:
    """The peer's IP as the member list would spell it (an IPv4-mapped IPv6 address,
    from a dual-stack socket, as IPv4)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
