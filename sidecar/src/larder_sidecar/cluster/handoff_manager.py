"""The hand-off component: what this member does when the shard map changes.

For the shards it gained it asks the previous owner to release them (`Release`) and
serves them once that owner confirms, leaves the membership, or the hand-off wait
passes; for the shards it lost it has the entity host release their entities (in-flight
commands and journal writes finish, then passivation) and answers the new owner's
`Release` once that is done. Every move of a shard goes through the table in
`handoff.py`. The router (`sharded.py`) owns the map and routes commands by the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .. import tracing
from ..entities import EntityHost, EntityKey
from . import wire
from .handoff import HandOffEvent, ShardState, ShardTable
from .membership import Member, MemberId, Membership
from .metrics import ClusterMetrics
from .peers import PeerTransport, PeerUnavailable
from .shards import ShardId, ShardMap, ShardMove
from .tasks import OwnedTasks

log = logging.getLogger("larder_sidecar.cluster")

HANDOFF_WAIT = 10.0
"""Seconds a new owner waits for the previous owner to confirm a release before it takes
the shard over anyway."""
RELEASE_WAIT = 4.0
"""Seconds a `Release` call waits here (for our map to give the shards away, then for
our release of them) before answering STILL_OWNER; under the caller's 5 s deadline."""
CLAIM_WAIT = 3.0
"""Seconds a leaving member, once it has released all its shards, waits for their new
owners to ask for them (`Release`). A new owner that sees the change after the leaving
member has exited could not reach it: it would hold the shards' commands until the
membership drops that member, and its forwards meanwhile would meet a closed port."""
_BACKOFF = (0.05, 1.0)


def clip(items: Sequence[Any], limit: int = 8) -> str:
    """`3, 7, 12, … (5461 in all)` for a log line."""
    shown = ", ".join(str(i) for i in items[:limit])
    return f"{shown}, … ({len(items)} in all)" if len(items) > limit else shown


class Changes:
    """Wakes whoever waits for the map or a shard's state to change."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def notify(self) -> None:
        self.event.set()
        self.event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Until the next change, at most `seconds`."""
        event = self.event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


class HandOffManager:
    def __init__(
        self,
        host: EntityHost,
        me: MemberId,
        shard_count: int,
        *,
        current_map: Callable[[], ShardMap | None],
        shard_of: Callable[[str, str], ShardId],
        transport: PeerTransport,
        metrics: ClusterMetrics,
        changes: Changes,
        handoff_wait: float = HANDOFF_WAIT,
    ) -> None:
        self._host = host
        self.me = me
        self.shard_count = shard_count
        self._current_map = current_map
        self.shard_of = shard_of
        self._transport = transport
        self._metrics = metrics
        self._changes = changes
        self._handoff_wait = handoff_wait
        self.table = ShardTable(shard_count)
        self._releases: dict[ShardId, asyncio.Future[None]] = {}
        self._returning_from: dict[ShardId, MemberId | None] = {}
        self._unclaimed: dict[ShardId, MemberId] = {}
        """Shards this member gave up, and the new owner that has not asked for them."""
        self._tasks = OwnedTasks()

    @property
    def _map(self) -> ShardMap | None:
        return self._current_map()

    @property
    def _changed(self) -> asyncio.Event:
        return self._changes.event

    def _changed_now(self) -> None:
        self._changes.notify()
        self._metrics.shards_owned.set(self.table.owned)

    async def close(self) -> None:
        await self._tasks.close()

    def apply(self, old: ShardMap | None, new: ShardMap) -> None:
        """Start the hand-offs from `old` (None: this member's first map) to `new`."""
        moves = self._first_moves(new) if old is None else old.moves_to(new)
        started = asyncio.get_running_loop().time()
        for move in moves:
            if move.target == self.me:
                self._gain(move.shards, move.source, started)
            elif move.source == self.me:
                self._lose(move.shards, move.target, started)
            if old is not None:
                log.info(
                    "shards moved from %s to %s under membership v%d: %s",
                    move.source or "nobody",
                    move.target or "nobody",
                    new.version,
                    clip(move.shards),
                )

    async def handed_off(self, within: float) -> bool:
        """Wait (at most `within` seconds) until this member serves no shard and has
        finished releasing them, then (at most `CLAIM_WAIT` more) until their new owners
        have asked for them: what a terminating member does before it exits. False if
        the release itself did not finish in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.table.owned or self._releases or self.table.in_state(ShardState.ACQUIRING):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        deadline = min(deadline, loop.time() + CLAIM_WAIT)
        while unclaimed := self._awaiting_claims():
            remaining = deadline - loop.time()
            if remaining <= 0:
                owners = sorted({self._unclaimed[s] for s in unclaimed})
                log.info(
                    "stopping before %s asked for %d of the shards it released (%s); they "
                    "take them over once this member leaves the membership",
                    ", ".join(owners),
                    len(unclaimed),
                    clip(unclaimed),
                )
                break
            await self._changes.wait(remaining)
        return True

    def _awaiting_claims(self) -> list[ShardId]:
        """Released shards whose new owner, still their owner and a member, has not asked
        for them yet."""
        shard_map = self._map
        if shard_map is None:
            return []
        return sorted(
            s
            for s, owner in self._unclaimed.items()
            if owner != self.me and shard_map.owner(s) == owner and shard_map.member(owner)
        )

    async def serve_release(self, shards: Iterable[int]) -> Any:
        """Answer a new owner's `Release`: RELEASED once our map no longer gives us any of
        the shards and our release of them has finished; STILL_OWNER if that does not
        happen within `RELEASE_WAIT` (the new owner may have seen the change before us;
        it asks again)."""
        wanted = [ShardId(s) for s in shards if 0 <= s < self.shard_count]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELEASE_WAIT
        while self._map is None or any(self.table.state(s) is ShardState.OWNED for s in wanted):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return self._release_reply(wire.STILL_OWNER)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        pending = {self._releases[s] for s in wanted if s in self._releases}
        if pending:
            remaining = max(0.0, deadline - loop.time())
            _, unfinished = await asyncio.wait(pending, timeout=remaining)
            if unfinished:
                return self._release_reply(wire.STILL_OWNER)
        claimed = [s for s in wanted if self._unclaimed.pop(s, None) is not None]
        if claimed:
            self._changes.notify()  # a leaving member may be waiting for these claims
        return self._release_reply(wire.RELEASED)

    def _release_reply(self, result: Any) -> Any:
        shard_map = self._map
        if shard_map is None:
            return wire.ReleaseReply(result=result)
        return wire.ReleaseReply(
            result=result, version=shard_map.version, fingerprint=shard_map.membership.fingerprint
        )

    def _first_moves(self, new: ShardMap) -> list[ShardMove]:
        """On the first map, this member's shards came from whoever owns them in the same
        membership without this member: the owner before it joined, if any."""
        without = Membership(
            tuple(m for m in new.membership.members if m.id != self.me), new.version
        )
        previous = ShardMap(without, self.shard_count)
        groups: dict[MemberId | None, list[ShardId]] = {}
        for shard in new.shards_of(self.me):
            groups.setdefault(previous.owner(shard), []).append(shard)
        return [ShardMove(source, self.me, tuple(s)) for source, s in groups.items()]

    # --- hand-off: gaining ------------------------------------------------------------

    def _gain(self, shards: Sequence[ShardId], source: MemberId | None, started: float) -> None:
        acquiring = []
        for shard in shards:
            self._unclaimed.pop(shard, None)
            if self.table.fire(shard, HandOffEvent.GAIN) is ShardState.ACQUIRING:
                acquiring.append(shard)
            else:  # RETURNING: acquired once our own release of it is done
                self._returning_from[shard] = source
        if acquiring:
            self._acquire(acquiring, source, started)

    def _acquire(self, shards: Sequence[ShardId], source: MemberId | None, started: float) -> None:
        numbers = {s: self.table.acquisition(s) for s in shards}
        shard_map = self._map
        member = None if source is None or shard_map is None else shard_map.member(source)
        if source is None or source == self.me or member is None:
            self._confirm(shards, numbers, source, "none" if source is None else "gone", started)
            return
        self._tasks.spawn(self._ask(shards, numbers, member, started), f"acquire from {source}")

    async def _ask(
        self,
        shards: Sequence[ShardId],
        numbers: Mapping[ShardId, int],
        source: Member,
        started: float,
    ) -> None:
        with tracing.span(
            "hand-off in",
            # A trace of its own, not that of whatever the spawning task last ran.
            parent=tracing.extract(()),
            attributes={"larder.peer": source.id, "larder.shards": len(shards)},
        ):
            await self._asking(shards, numbers, source, started)

    async def _asking(
        self,
        shards: Sequence[ShardId],
        numbers: Mapping[ShardId, int],
        source: Member,
        started: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = started + self._handoff_wait
        ending = "timeout"
        delay = _BACKOFF[0]
        while (remaining := deadline - loop.time()) > 0:
            pending = [
                s
                for s in shards
                if self.table.state(s) is ShardState.ACQUIRING
                and self.table.acquisition(s) == numbers[s]
            ]
            shard_map = self._map
            if not pending or shard_map is None:
                tracing.annotate({"larder.handoff.ending": "lost again"})
                return
            if shard_map.member(source.id) is None:
                ending = "gone"
                break
            request = wire.ReleaseRequest(view=wire.view_of(self.me, shard_map), shards=pending)
            try:
                reply = await asyncio.wait_for(
                    self._transport.release(source.address, request), remaining
                )
            except (PeerUnavailable, TimeoutError) as e:
                log.debug("asking %s to release shards: %s", source.id, e)
            except Exception:
                # Whatever went wrong with one call, the shards must not wait forever.
                log.exception("asking %s to release shards failed", source.id)
            else:
                if reply.result == wire.RELEASED:
                    ending = "confirmed"
                    break
            # Ask again after a pause, or sooner when our map changes (the source may
            # have left).
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, _BACKOFF[1])
        tracing.annotate({"larder.handoff.ending": ending})
        self._confirm(shards, numbers, source.id, ending, started)

    def _confirm(
        self,
        shards: Sequence[ShardId],
        numbers: Mapping[ShardId, int],
        source: MemberId | None,
        ending: str,
        started: float,
    ) -> None:
        done = self.table.confirm(shards, numbers)
        if not done:
            return
        elapsed = asyncio.get_running_loop().time() - started
        self._metrics.handoffs.labels("in", ending).inc()
        self._metrics.handoff_duration.labels("in").observe(elapsed)
        how = {
            "confirmed": "it confirmed the release",
            "timeout": f"it did not confirm within {self._handoff_wait:g}s",
            "gone": "it is no longer a member",
            "none": "nobody owned them before",
        }[ending]
        log.log(
            logging.WARNING if ending == "timeout" else logging.INFO,
            "took over %d shards from %s after %.3fs (%s): %s",
            len(done),
            source or "nobody",
            elapsed,
            how,
            clip(done),
        )
        self._changed_now()

    # --- hand-off: losing -------------------------------------------------------------

    def _lose(self, shards: Sequence[ShardId], target: MemberId | None, started: float) -> None:
        releasing = []
        for shard in shards:
            before = self.table.state(shard)
            self.table.fire(shard, HandOffEvent.LOSE)
            self._returning_from.pop(shard, None)
            # Its new owner will ask this member (its previous owner) to release it.
            if target is None:
                self._unclaimed.pop(shard, None)
            else:
                self._unclaimed[shard] = target
            if before is ShardState.OWNED:
                releasing.append(shard)
        if releasing:
            future = asyncio.get_running_loop().create_future()
            for shard in releasing:
                self._releases[shard] = future
            self._tasks.spawn(self._release(releasing, target, future, started), "release")

    async def _release(
        self,
        shards: Sequence[ShardId],
        target: MemberId | None,
        future: asyncio.Future[None],
        started: float,
    ) -> None:
        with tracing.span(
            "hand-off out",
            parent=tracing.extract(()),  # a trace of its own, as `_ask`'s
            attributes={"larder.peer": target or "", "larder.shards": len(shards)},
        ):
            await self._releasing(shards, future, started)

    async def _releasing(
        self, shards: Sequence[ShardId], future: asyncio.Future[None], started: float
    ) -> None:
        selected = frozenset(shards)

        def predicate(key: EntityKey) -> bool:
            return self.shard_of(*key) in selected

        passivated = 0
        try:
            passivated = await self._host.release(predicate)
        finally:
            # The router's own refusal (`_not_served`) keeps refusing them.
            self._host.readmit(predicate)
            for shard in shards:
                if self._releases.get(shard) is future:
                    del self._releases[shard]
            if not future.done():
                future.set_result(None)
            returning: dict[MemberId | None, list[ShardId]] = {}
            for shard in shards:
                if self.table.fire(shard, HandOffEvent.RELEASED) is ShardState.ACQUIRING:
                    returning.setdefault(self._returning_from.pop(shard, None), []).append(shard)
            elapsed = asyncio.get_running_loop().time() - started
            tracing.annotate({"larder.entities.passivated": passivated})
            self._metrics.handoffs.labels("out", "released").inc()
            self._metrics.handoff_duration.labels("out").observe(elapsed)
            log.info(
                "released %d shards in %.3fs (%d active entities passivated): %s",
                len(shards),
                elapsed,
                passivated,
                clip(shards),
            )
            loop_time = asyncio.get_running_loop().time()
            for source, back in returning.items():
                self._acquire(back, source, loop_time)
            self._changed_now()
