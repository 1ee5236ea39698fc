"""The sharded router: each entity is served by the one member that owns its shard.

`owner()` names this sidecar's entity host for the shards it owns and a `PeerOwner`
(forwarding over the internal port) for the others; while a shard is being handed to
this sidecar, callers wait (bounded). The router follows the membership source: each
new snapshot is a new `ShardMap`, and the shards that changed hands go through the
hand-off (the states and moves are in `handoff.py`, the steps in `handoff_manager.py`):

- a shard that left this member is *released*: new commands go to the new owner at
  once (it holds them), the entity host finishes the shard's in-flight commands and
  journal writes and passivates its entities; the commands that reached them too late
  come back through the dispatcher and are forwarded too;
- a shard that came to this member is *acquired*: its commands wait here while this
  member asks the previous owner to release it (the `Release` call answers once the
  release is done), until it confirms, leaves the membership, or `handoff_wait`
  passes. Safety does not depend on that bound: the journal refuses a second writer.

Ordering: a `PeerOwner` forwards the commands for one entity one at a time, in the
order they were submitted to it, each after the previous one's reply; so commands one
sidecar sends to an entity owned elsewhere run there in the order it received them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from .. import tracing
from ..entities import EntityHost, EntityKey
from ..invoke import InvokeError, MetadataPairs
from ..model import Method
from ..outcome import Outcome
from . import wire
from .handoff import SETTLING, ShardState
from .handoff_manager import HANDOFF_WAIT, Changes, HandOffManager
from .membership import Member, MemberId, Membership, MembershipSource
from .metrics import ClusterMetrics
from .peers import PeerTransport, PeerUnavailable
from .routing import Owner
from .shards import (
    ShardCountMismatchError,
    ShardId,
    ShardMap,
    check_shard_count,
    shard_of,
)
from .tasks import OwnedTasks

log = logging.getLogger("larder_sidecar.cluster")

REDIRECT_WAIT = 1.0
"""Seconds a redirected sender waits for its own map to change before it follows the
redirect to the owner the receiver named."""
BEHIND_RETRY = (0.05, 0.2)
"""Seconds before asking a receiver that answered under one of this sidecar's earlier maps
again, doubling from the first up to the second: it is behind and will serve the command
once it catches up, at a moment nobody knows; a longer pause would mostly be time after
that moment (a rebalance run had joins' commands wait 0.8 s past it)."""
EARLIER_MAPS = 16
"""How many of its earlier maps (their fingerprints) a sidecar remembers, to tell that a
redirect came from a receiver that is behind it."""
MEMBER_WAIT = 2.0
"""Seconds a call from an unknown sender waits for this sidecar's map to name it (it may
have joined a moment ago) before it is refused."""
MAX_PEER_HOPS = 4
"""Redirects one command may follow; past it the command fails with UNAVAILABLE."""

# Bound once: on the path of every command, `state in SETTLING` hashes an Enum member in
# Python and `ShardState.X` is a class attribute lookup through the enum's metaclass
# (about 1.4 µs either way, against 0.2 for two identity tests).
_ACQUIRING, _RETURNING, _OWNED = ShardState.ACQUIRING, ShardState.RETURNING, ShardState.OWNED


RelayedHttp = tuple[str, str, str | None, MetadataPairs, bytes]
"""An HTTP request to relay: method, raw path, raw query (None: none), the header fields
to pass on (lower-cased names), body."""


def clip_id(entity_id: str, limit: int = 64) -> str:
    return entity_id if len(entity_id) <= limit else entity_id[:limit] + "…"


class PeerOwner:
    """Forwards commands to the owner of their entity's shard (the router's `Owner` for
    entities served elsewhere), one at a time per entity, in submission order."""

    def __init__(self, router: ShardedRouter) -> None:
        self._router = router
        self._turns: dict[tuple[str, str], deque[asyncio.Future[None]] | None] = {}
        """Per entity being forwarded to: the commands waiting for their turn, first come
        first served (None: nobody waits). A command with no entry goes at once: the
        common case costs one dict entry, not a lock per command."""

    async def submit(
        self, method: Method, entity_id: str, payload: bytes, metadata: MetadataPairs
    ) -> Outcome:
        key = (method.component.entity_type, entity_id)
        if key in self._turns:
            await self._wait_turn(key)
        else:
            self._turns[key] = None
        try:
            return await self._router.forward(method, entity_id, payload, metadata)
        finally:
            self._pass(key)

    async def relay(self, entity_type: str, entity_id: str, http: RelayedHttp) -> Any | None:
        """Relay an HTTP request for the entity (`ShardedRouter.relay`), in the same turn
        as the entity's forwarded commands: one sender's commands keep their order
        whichever way each travels."""
        key = (entity_type, entity_id)
        if key in self._turns:
            await self._wait_turn(key)
        else:
            self._turns[key] = None
        try:
            return await self._router.relayed(entity_type, entity_id, http)
        finally:
            self._pass(key)

    async def _wait_turn(self, key: tuple[str, str]) -> None:
        """Queue behind the command for `key` in flight; return when it is this one's
        turn (the caller then owns the turn and must `_pass` it)."""
        waiting = self._turns[key]
        if waiting is None:
            waiting = self._turns[key] = deque()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.cancelled():
                # Still queued, unless `_pass` skipped it already (it was done).
                with contextlib.suppress(ValueError):
                    waiting.remove(turn)
            else:
                self._pass(key)  # handed the turn, then cancelled: hand it on
            raise

    def _pass(self, key: tuple[str, str]) -> None:
        """The turn for `key` goes to the next command waiting, if any."""
        waiting = self._turns[key]
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        del self._turns[key]


class _ForwardedOut:
    """`larder_forwarded_commands_out`'s children, bound once (`labels()` is a lookup
    under a lock, per forwarded command)."""

    __slots__ = ("error", "ok", "redirect", "rerouted", "unavailable")

    def __init__(self, metrics: ClusterMetrics) -> None:
        counter = metrics.forwarded_out
        self.ok = counter.labels("ok")
        self.error = counter.labels("error")
        self.redirect = counter.labels("redirect")
        self.unavailable = counter.labels("unavailable")
        self.rerouted = counter.labels("rerouted")


class ShardedRouter:
    """Implements `Router` over a membership source and the shard map."""

    def __init__(
        self,
        host: EntityHost,
        me: MemberId,
        shard_count: int,
        *,
        source: MembershipSource,
        transport: PeerTransport,
        metrics: ClusterMetrics,
        handoff_wait: float = HANDOFF_WAIT,
        redirect_wait: float = REDIRECT_WAIT,
    ) -> None:
        self._host = host
        self.me = me
        self.shard_count = shard_count
        self._source = source
        self._transport = transport
        self._metrics = metrics
        self._handoff_wait = handoff_wait
        self._redirect_wait = redirect_wait
        self._earlier: deque[str] = deque(maxlen=EARLIER_MAPS)
        """Fingerprints of the maps this sidecar had before its current one."""
        self._map: ShardMap | None = None
        self._first_map = asyncio.Event()
        self._changes = Changes()
        self._peer = PeerOwner(self)
        self._tasks = OwnedTasks()
        self._follower: asyncio.Task[None] | None = None
        self._resolved: dict[str, frozenset[str]] = {}
        self.shard_of: Callable[[str, str], ShardId] = functools.lru_cache(maxsize=65536)(
            functools.partial(_shard_of, shard_count=shard_count)
        )
        self.handoffs = HandOffManager(
            host,
            me,
            shard_count,
            current_map=lambda: self._map,
            shard_of=self.shard_of,
            transport=transport,
            metrics=metrics,
            changes=self._changes,
            handoff_wait=handoff_wait,
        )
        self.table = self.handoffs.table

    # --- start and stop ---------------------------------------------------------------

    async def start(self) -> None:
        """The host serves only the shards this member owns; then follow the membership."""
        await self._host.release(self._not_served)
        self._follower = self._tasks.spawn(self._follow(), "membership")

    @property
    def map(self) -> ShardMap | None:
        return self._map

    @property
    def ready(self) -> bool:
        """Whether this sidecar has its first shard map."""
        return self._map is not None

    async def close(self) -> None:
        await self._tasks.close()
        await self.handoffs.close()

    async def marked_leaving(self, within: float) -> bool:
        """Whether the membership marks this member terminating (or drops it), waiting
        up to `within` seconds for it to say so."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            shard_map = self._map
            me = None if shard_map is None else shard_map.member(self.me)
            if shard_map is not None and (me is None or me.terminating):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await self._changes.wait(remaining)

    async def handed_off(self, within: float) -> bool:
        """Wait (at most `within` seconds) until this member serves no shard and has
        finished releasing them: what a terminating member does before it exits."""
        return await self.handoffs.handed_off(within)

    async def serve_release(self, shards: Iterable[int]) -> Any:
        """A new owner's `Release` call (`HandOffManager.serve_release`)."""
        return await self.handoffs.serve_release(shards)

    # --- the Router seam --------------------------------------------------------------

    async def owner(self, entity_type: str, entity_id: str) -> Owner:
        # Per command: no coroutine is awaited unless there is something to wait for.
        if self._map is None:
            await self._wait_map()
        shard = self.shard_of(entity_type, entity_id)
        state = self.table.state(shard)
        if state is _ACQUIRING or state is _RETURNING:  # SETTLING
            state = await self._settled(shard)
        return self._host if state is _OWNED else self._peer

    async def _wait_map(self) -> ShardMap:
        if self._map is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_map.wait(), self._handoff_wait)
            if self._map is None:
                raise InvokeError(
                    grpc.StatusCode.UNAVAILABLE,
                    "this sidecar has no shard map yet (its membership is not known); retry",
                )
        return self._map

    async def _settled(self, shard: ShardId) -> ShardState:
        """The shard's state once it is not being handed to this member (bounded wait)."""
        state = self.table.state(shard)
        if state not in SETTLING:
            return state
        loop = asyncio.get_running_loop()
        # perf_counter for the histogram: uvloop's clock has millisecond steps.
        started = time.perf_counter()
        # The acquisition itself gives up after `handoff_wait`; this is a safety net.
        deadline = loop.time() + self._handoff_wait + 2.0
        self._metrics.waiting.inc()
        try:
            while state in SETTLING:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self._metrics.handoff_wait_timeouts.inc()
                    raise InvokeError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"shard {shard} is still being handed over to this sidecar; retry",
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
                state = self.table.state(shard)
            return state
        finally:
            self._metrics.waiting.dec()
            # However the wait ended (served, timed out, the caller gone): it was waited.
            self._metrics.handoff_wait.observe(time.perf_counter() - started)

    def _not_served(self, key: EntityKey) -> bool:
        """The host's refusal: every entity whose shard this member does not serve."""
        return self.table.state(self.shard_of(*key)) is not _OWNED

    @property
    def _changed(self) -> asyncio.Event:
        return self._changes.event

    def _changed_now(self) -> None:
        self._changes.notify()
        self._metrics.shards_owned.set(self.table.owned)

    # --- forwarding (sender) ----------------------------------------------------------

    @functools.cached_property
    def _forwarded_out(self) -> _ForwardedOut:
        return _ForwardedOut(self._metrics)

    async def forward(
        self, method: Method, entity_id: str, payload: bytes, metadata: MetadataPairs
    ) -> Outcome:
        """Run a command at its entity's owner: here if the shard is (now) ours, else at
        the owner under this member's map, following redirects up to `MAX_PEER_HOPS`."""
        entity_type = method.component.entity_type
        path = method.model.path

        def request(hops: int, map_version: int) -> Any:
            return wire.forward_request(
                hops=hops,
                entity_type=entity_type,
                entity_id=entity_id,
                method=path,
                payload=payload,
                # The owner's spans continue from the current (CLIENT) span.
                metadata=tracing.inject(metadata),
                map_version=map_version,
            )

        reply = await self._send(entity_type, entity_id, request)
        if reply is None:
            return await self._host.submit(method, entity_id, payload, metadata)
        if reply.WhichOneof("result") == "outcome":
            return wire.outcome_of(reply.outcome)
        raise wire.error_of(reply.error)

    async def relay(self, entity_type: str, entity_id: str, http: RelayedHttp) -> Any | None:
        """The HTTP front's lean path (`http/relay.py`): if a peer owns the entity, send it
        the HTTP request as received and return the owner's `ForwardReply` (its `http`
        answer, or an `error` the transport or the owner's checks gave); None when this
        sidecar serves the entity (the front then serves the request itself). Waits for
        a hand-off as `owner()` does; raises InvokeError as `forward()` does."""
        if await self.owner(entity_type, entity_id) is not self._peer:
            return None
        return await self._peer.relay(entity_type, entity_id, http)

    async def relayed(self, entity_type: str, entity_id: str, http: RelayedHttp) -> Any | None:
        """`relay` past the owner check, in the entity's turn."""
        method, path, query, headers, body = http

        def request(hops: int, map_version: int) -> Any:
            return wire.relay_request(
                hops=hops,
                entity_type=entity_type,
                entity_id=entity_id,
                # The owner's spans continue from the current (CLIENT) span.
                http=wire.http_request(method, path, query, tracing.inject(headers), body),
                map_version=map_version,
            )

        return await self._send(entity_type, entity_id, request)

    async def _send(
        self, entity_type: str, entity_id: str, request: Callable[[int, int], Any]
    ) -> Any | None:
        """Send the `ForwardRequest` that `request(hops, map_version)` builds to the owner
        of the entity's shard under this member's map, following redirects up to
        `MAX_PEER_HOPS`; return its `ForwardReply` (an answer or an error), or None if the
        shard is (now) this member's: then nothing was sent and the caller serves it."""
        shard = self.shard_of(entity_type, entity_id)
        out = self._forwarded_out
        hops = 0
        target: tuple[MemberId, str] | None = None
        behind_until: float | None = None
        behind_retries = 0
        while True:
            shard_map = self._map or await self._wait_map()
            state = self.table.state(shard)
            if state is _ACQUIRING or state is _RETURNING:  # SETTLING
                state = await self._settled(shard)
            if state is _OWNED:
                return None
            if target is None:
                owner = shard_map.owner(shard)
                member = None if owner is None else shard_map.member(owner)
                if owner is None or member is None:
                    raise InvokeError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"no sidecar owns {entity_type}/{clip_id(entity_id)} (shard {shard}): "
                        "the membership has no active member; retry",
                    )
                target = (owner, member.address)
            owner, address = target
            try:
                with tracing.span(
                    f"forward to {owner}",
                    tracing.SpanKind.CLIENT,
                    attributes={"larder.peer": owner, "larder.shard": shard, "larder.hops": hops},
                ):
                    reply = await self._transport.forward(
                        address,
                        wire.view_of(self.me, shard_map),
                        request(hops, shard_map.version),
                    )
            except PeerUnavailable as e:
                if not e.sent and self._map is not shard_map and hops < MAX_PEER_HOPS:
                    # Never sent, and our map changed meanwhile (the member may have left):
                    # route it again under the new map.
                    out.rerouted.inc()
                    hops += 1
                    target = None
                    continue
                out.unavailable.inc()
                raise InvokeError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the sidecar that owns {entity_type}/{clip_id(entity_id)}, {owner} at "
                    f"{address}, did not answer ({e}); retry. The command did not run if the "
                    "connection failed before it was sent; its shard moves to another sidecar "
                    "once membership drops that member",
                ) from e
            result = reply.WhichOneof("result")
            if result in {"outcome", "http"}:
                out.ok.inc()
                return reply
            if result == "error":
                out.error.inc()
                return reply
            out.redirect.inc()
            redirect = reply.redirect
            if redirect.fingerprint and redirect.fingerprint in self._earlier:
                # The receiver answered under a map this sidecar has left behind (a member
                # that joined is often the last to see itself listed): it will serve the
                # command once it catches up. Ask it again soon rather than follow its old
                # map elsewhere; not a hop (no loop: each retry waits, and for at most two
                # redirect waits in all, then the redirect is followed as any other).
                loop = asyncio.get_running_loop()
                if behind_until is None:
                    behind_until = loop.time() + 2 * self._redirect_wait
                if (remaining := behind_until - loop.time()) > 0:
                    pause = min(BEHIND_RETRY[0] * 2**behind_retries, BEHIND_RETRY[1])
                    await self._changes.wait(min(pause, remaining))
                    behind_retries += 1
                    if self._map is not shard_map:
                        target = None
                    continue
            hops += 1
            if hops > MAX_PEER_HOPS:
                raise InvokeError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"{entity_type}/{clip_id(entity_id)} was redirected {MAX_PEER_HOPS} times: "
                    "the sidecars disagree on its owner while membership changes; retry",
                )
            target = await self._after_redirect(shard_map, owner, redirect, hops)

    async def _after_redirect(
        self, sent_under: ShardMap, refused_by: MemberId, redirect: Any, hops: int
    ) -> tuple[MemberId, str] | None:
        """Where to send next: under our own map once it changes; if it does not change
        within `redirect_wait`, to the owner the receiver named (when that is neither us
        nor the receiver), else to the same member again."""
        named = MemberId(redirect.owner)
        wait = self._redirect_wait
        if named == self.me:
            # The receiver's map gives the entity to this sidecar, ours to the receiver:
            # one of the two is behind, and the receiver's is as likely to be the late one
            # (members see a change up to about a second apart). Ask it again sooner,
            # backing off (0.25, 0.5, 1 s), rather than waiting only for our own map.
            wait = min(wait, 0.25 * 2 ** max(0, hops - 1))
        if self._map is sent_under:
            loop = asyncio.get_running_loop()
            # One deadline: the event also fires for shard-state changes, which must not
            # extend the wait.
            deadline = loop.time() + wait
            while self._map is sent_under and (remaining := deadline - loop.time()) > 0:
                await self._changes.wait(remaining)
        if self._map is not sent_under:
            return None
        if named and named not in (self.me, refused_by) and redirect.address:
            return named, redirect.address
        return None

    # --- forwarding (receiver) --------------------------------------------------------

    async def serve(
        self, method: Method, entity_id: str, payload: bytes, metadata: MetadataPairs
    ) -> Outcome | Any:
        """Run a forwarded command if this member serves its shard (after a hand-off to
        it, if one is under way); otherwise a `Redirect` to the owner under our map,
        having run nothing."""
        redirect = await self.redirect(method.component.entity_type, entity_id)
        if redirect is None:
            return await self._host.submit(method, entity_id, payload, metadata)
        return redirect

    async def redirect(self, entity_type: str, entity_id: str) -> Any | None:
        """None if this member serves the entity's shard (after a hand-off to it, if one
        is under way), else the `Redirect` a forwarded command gets instead of running."""
        shard_map = self._map
        if shard_map is None:
            raise InvokeError(grpc.StatusCode.UNAVAILABLE, "the owner has no shard map yet")
        shard = self.shard_of(entity_type, entity_id)
        if await self._settled(shard) is ShardState.OWNED:
            return None
        shard_map = self._map or shard_map
        return wire.redirect_of(shard_map, shard_map.owner(shard))

    async def refusal(self, view: Any, peer_ip: str) -> tuple[grpc.StatusCode, str] | None:
        """Why calls from `peer_ip` under the sender's map `view` must not be served: no
        view, a sender that is not a member or not at a member's address, another shard
        count. None: serve them."""
        shard_map = self._map
        if not view.sender or not view.fingerprint or view.version == 0:
            return grpc.StatusCode.INVALID_ARGUMENT, "the call carries no shard-map view"
        try:
            check_shard_count(self.shard_count, view.shard_count, MemberId(view.sender))
        except ShardCountMismatchError as e:
            log.error("refused a call from %s: %s", view.sender, e)  # noqa: TRY400
            return grpc.StatusCode.FAILED_PRECONDITION, str(e)
        if shard_map is None:
            return grpc.StatusCode.UNAVAILABLE, "this sidecar has no shard map yet"
        member = await self._member_soon(MemberId(view.sender))
        if member is None:
            return grpc.StatusCode.PERMISSION_DENIED, f"{view.sender!r} is not a member"
        if _peer_ip(peer_ip) not in await self._addresses(member):
            return (
                grpc.StatusCode.PERMISSION_DENIED,
                f"the call comes from {peer_ip or 'an unknown address'}, not from member "
                f"{member.id}'s address {member.address}",
            )
        return None

    async def _member_soon(self, member_id: MemberId) -> Member | None:
        """The member, waiting up to `MEMBER_WAIT` for a map that has it: a member that
        just joined may call before this sidecar has seen it join."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MEMBER_WAIT
        while True:
            shard_map = self._map
            member = None if shard_map is None else shard_map.member(member_id)
            remaining = deadline - loop.time()
            if member is not None or remaining <= 0:
                return member
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    async def _addresses(self, member: Member) -> frozenset[str]:
        host = member.address.rpartition(":")[0].strip("[]")
        known = self._resolved.get(host)
        if known is not None:
            return known
        try:
            known = frozenset({str(ipaddress.ip_address(host))})
        except ValueError:
            try:
                infos = await asyncio.wait_for(
                    asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM),
                    2.0,
                )
            except (OSError, TimeoutError):
                return frozenset()
            known = frozenset(str(info[4][0]) for info in infos)
        self._resolved[host] = known
        return known

    # --- following the membership -----------------------------------------------------

    async def _follow(self) -> None:
        async with contextlib.aclosing(self._source.snapshots()) as snapshots:
            async for membership in snapshots:
                self.apply(membership)
                await self._transport.forget([m.address for m in membership.members])

    def apply(self, membership: Membership) -> None:
        """Make `membership` the current one: a new map, and the hand-offs it causes."""
        new = ShardMap(membership, self.shard_count)
        old = self._map
        if old is not None and old.membership == membership:
            return
        if membership.get(self.me) is None:
            log.warning(
                "this sidecar (%s) is not in its membership v%d; it owns no shards",
                self.me,
                membership.version,
            )
        if old is not None:
            fingerprint = membership.fingerprint
            earlier = [f for f in self._earlier if f != fingerprint]
            earlier.append(old.membership.fingerprint)
            self._earlier = deque(earlier, maxlen=EARLIER_MAPS)
        self._map = new
        self._resolved.clear()
        self._metrics.map_version.set(membership.version)
        self.handoffs.apply(old, new)
        if old is None:
            log.info(
                "first shard map (membership v%d): %d of %d shards are this sidecar's (%s)",
                membership.version,
                len(new.shards_of(self.me)),
                self.shard_count,
                self.me,
            )
        self._first_map.set()
        self._changed_now()


def _shard_of(entity_type: str, entity_id: str, shard_count: int) -> ShardId:
    return shard_of(entity_type, entity_id, shard_count)


def _peer_ip(host: str) -> str:
    """`host` as the canonical text of an IP address ("" if it is none)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""
