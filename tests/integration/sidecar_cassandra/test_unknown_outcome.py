"""A command in flight when Cassandra freezes, through a real sidecar process.

Cassandra is frozen with SIGSTOP: it accepts the journal's write into its socket
buffer but never answers, so the sidecar's driver times out after sending it. The
client gets UNAVAILABLE saying the outcome is unknown, within the request timeout.
When the node resumes it executes the buffered write, so the command landed although
the client was told it might not have. The same sidecar process then serves the
entity's next command from what the journal holds, after dropping the entity's
stream (the user function's in-memory state), and nothing is written twice.

(The other outcome, a write that never lands, would need the node killed while
frozen; but a killed node also loses the acknowledged writes since its last
periodic commit-log sync, which would test Cassandra's durability, not the sidecar.)
"""

from __future__ import annotations

import asyncio
import re
import time
from types import ModuleType

import grpc
import grpc.aio
import pytest

from tests.infra.cassandra import CassandraServer

from .conftest import (
    JournalTables,
    Pod,
    PodFactory,
    counter_pid,
    http_get,
)

REQUEST_TIMEOUT = 1.5
# The driver times out at REQUEST_TIMEOUT; the rest is the sidecar and the client.
MARGIN = 1.5
SETTLE_TIMEOUT = 30.0
_RESTARTS = re.compile(r'^larder_entity_restarts_total\{entity_type="sc-counter"\} (\S+)$', re.M)


async def _restarts(pod: Pod) -> float:
    status, body = await http_get(pod.admin, "/metrics")
    assert status == 200, body
    found = _RESTARTS.search(body)
    return float(found.group(1)) if found else 0.0


async def _tags(tables: JournalTables, pb: ModuleType, pid: str) -> list[str]:
    stored = await tables.events(pid)
    assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1)), f"a gap: {stored}"
    return [pb.Added.FromString(payload).tag for _, payload in stored]


async def _until_stored(tables: JournalTables, pb: ModuleType, pid: str, tag: str) -> None:
    async with asyncio.timeout(SETTLE_TIMEOUT):
        while True:
            if tag in await _tags(tables, pb, pid):
                return
            # Another process's progress can only be polled.
            await asyncio.sleep(0.05)


async def test_a_command_in_flight_when_cassandra_freezes(
    cassandra: CassandraServer, start_pod: PodFactory, tables: JournalTables, pb: ModuleType
) -> None:
    pod = await start_pod("frozen", REQUEST_TIMEOUT=f"{REQUEST_TIMEOUT}s")
    sidecar_pid = pod.sidecar.pid
    counter = "frozen"
    pid = counter_pid(counter)
    assert (await pod.add(counter, "t1", 1)).events == 1
    assert (await pod.add(counter, "t2", 10)).events == 2
    restarts = await _restarts(pod)

    with cassandra.suspended():
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pod.add(counter, "t3", 100, deadline=REQUEST_TIMEOUT + 10)
        waited = time.monotonic() - started
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE, caught.value
    details = caught.value.details() or ""
    assert "outcome unknown, the command may or may not be stored" in details, details
    assert REQUEST_TIMEOUT - 0.1 <= waited < REQUEST_TIMEOUT + MARGIN, waited

    # Resumed, the node executes the write it had buffered: the command landed once.
    await _until_stored(tables, pb, pid, "t3")
    assert await _tags(tables, pb, pid) == ["t1", "t2", "t3"]

    # The entity's stream was dropped, so its next command is served from the
    # journal: the reload sees t3, and t4 follows it without touching it.
    assert await _restarts(pod) == restarts + 1
    state = await pod.get(counter)
    assert (state.value, state.events) == (111, 3)
    reply = await pod.add(counter, "t4", 1000)
    assert (reply.value, reply.events) == (1111, 4)
    assert await _tags(tables, pb, pid) == ["t1", "t2", "t3", "t4"]

    # The same process served throughout.
    assert pod.sidecar.returncode is None and pod.sidecar.pid == sidecar_pid
    status, body = await pod.readyz()
    assert status == 200, body
