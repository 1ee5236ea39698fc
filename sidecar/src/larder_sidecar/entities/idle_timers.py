"""When idle entities reach their passivation timeout: one loop timer for a component's
entities, over a heap of deadlines, instead of a loop timer per entity.

A loop timer (handle, libuv timer, context) costs an idle entity about 0.5 KB and one
`call_later` plus a `cancel` per command; here an entity records when it became idle
(a float) and has at most one entry in the heap. When the entry comes due, the entity
says whether it is still idle since then: if it worked meanwhile, it goes back in the
heap at its new deadline, so it passivates exactly `timeout` after its last command,
as with a timer of its own.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import weakref
from typing import Protocol

log = logging.getLogger("larder_sidecar.entities")

# uvloop's timers count whole milliseconds: one set for `when` may run while `loop.time()`
# still reads a little less. Entries due within this are taken as due (as the timer of
# each entity's own was, early by as much), rather than re-armed again and again.
_CLOCK_SLACK = 0.002


class Idle(Protocol):
    def idle_due(self, now: float) -> float | None:
        """Called when this entity's entry comes due: passivate if idle long enough and
        return None, or return the deadline to come back at."""


class IdleTimers:
    """The heap of idle deadlines of one component type's entities."""

    def __init__(self) -> None:
        # (deadline, tie-breaker, entity): weak, so an entity that stopped for another
        # reason (released, restarted away) is not kept until its old deadline.
        self._heap: list[tuple[float, int, weakref.ref[Idle]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, entity: Idle, deadline: float) -> None:
        """Ask `entity.idle_due` at `deadline` (loop time)."""
        heapq.heappush(self._heap, (deadline, next(self._order), weakref.ref(entity)))
        if self._timer is None or deadline < self._timer.when():
            self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        if self._heap:
            self._timer = asyncio.get_running_loop().call_at(self._heap[0][0], self._due)

    def _due(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time() + _CLOCK_SLACK
        due = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2]())
        try:
            for entity in due:
                if entity is None:
                    continue
                try:
                    later = entity.idle_due(now)
                except Exception:
                    # A bug in one entity must not stop the others from passivating.
                    log.exception("passivating an idle entity failed")
                    continue
                if later is not None:
                    heapq.heappush(self._heap, (later, next(self._order), weakref.ref(entity)))
        finally:
            self._arm()
