"""A write sent to a node that never answers: the append's outcome is unknown, the
journal says so (not "unavailable", which would mean nothing was stored), it never
sends the write again, and a later load sees whatever the node did with it.

The node is frozen with SIGSTOP: its sockets stay open and the kernel accepts the
request, so the driver's request goes out and only the client-side timeout ends the
wait (`OperationTimedOut`). On SIGCONT the node reads the buffered request and
executes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from cassandra import OperationTimedOut
from larder_sidecar.journal.base import PersistenceId, WriteOutcomeUnknown

from tests.infra.cassandra import CassandraServer, NodeViews

from .conftest import JournalFactory, payload

REQUEST_TIMEOUT = 1.5
SETTLE_TIMEOUT = 30.0


async def _requests(views: NodeViews, ports: set[int]) -> dict[int, int]:
    counts = await asyncio.to_thread(views.requests_by_client)
    return {port: n for port, n in counts.items() if port in ports}


async def _settled(views: NodeViews, port: int, received: int) -> None:
    """Until the node has received `received` requests on `port` and runs no write."""
    async with asyncio.timeout(SETTLE_TIMEOUT):
        while True:
            counts = await _requests(views, {port})
            tasks = await asyncio.to_thread(views.running_tasks)
            writing = [t for t in tasks if t.startswith(("BATCH", "Paxos"))]
            if counts.get(port, 0) >= received and not writing:
                return
            # Another process's progress can only be polled.
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("fencing", ["fenced", "unfenced"])
async def test_an_append_to_a_frozen_node_is_unknown_sent_once_and_then_visible(
    cassandra: CassandraServer,
    make_journal: JournalFactory,
    new_pid: Callable[[], PersistenceId],
    fencing: str,
) -> None:
    views = NodeViews(cassandra)
    try:
        others = set(await asyncio.to_thread(views.requests_by_client))
        journal = await make_journal(request_timeout=REQUEST_TIMEOUT, fencing=fencing)
        pid = new_pid()
        events = [payload(f"{pid}/{n}") for n in range(1, 6)]

        # The journal's own connections are the ones that appeared with it; the one
        # that carries its appends received exactly one request per append.
        ours = set(await asyncio.to_thread(views.requests_by_client)) - others
        before = await _requests(views, ours)
        for n in range(3):
            assert await journal.append(pid, n, [events[n]]) == n + 1
        after = await _requests(views, ours)
        carriers = [p for p in ours if after.get(p, 0) - before.get(p, 0) == 3]
        assert len(carriers) == 1, f"cannot tell the journal's data connection: {before} {after}"
        data = carriers[0]

        started = time.monotonic()
        with cassandra.suspended(), pytest.raises(WriteOutcomeUnknown) as caught:
            await journal.append(pid, 3, [events[3]])
        waited = time.monotonic() - started
        # Sent, then the driver's own timeout: neither "unavailable" (that would say
        # nothing was stored) nor a wait beyond the request timeout.
        assert isinstance(caught.value.__cause__, OperationTimedOut), repr(caught.value.__cause__)
        assert "may or may not be stored" in str(caught.value)
        assert REQUEST_TIMEOUT - 0.1 <= waited < REQUEST_TIMEOUT + 1.0, waited

        # Resumed: the node reads the frozen request and executes it. Once it has,
        # it has received exactly one more request on that connection: the write
        # was sent once and never again, by the driver or by the journal.
        await _settled(views, data, after[data] + 1)
        assert (await _requests(views, {data}))[data] == after[data] + 1

        recovery = await journal.load(pid)
        landed = recovery.last_sequence_nr == 4
        assert list(recovery.events) == events[: 4 if landed else 3]
        # The node executed the request it had accepted before freezing.
        assert landed, "the write buffered by the frozen node was dropped after resume"

        # The journal serves on, at the number the load reported.
        assert await journal.append(pid, 4, [events[4]]) == 5
        assert list((await journal.load(pid)).events) == events
    finally:
        await asyncio.to_thread(views.close)
