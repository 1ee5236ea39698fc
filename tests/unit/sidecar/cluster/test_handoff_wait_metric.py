"""`larder_handoff_wait_seconds`: each command that waited because its shard was being
handed to this member is observed once, with how long it waited; commands that did not
wait are not; a wait that ends in UNAVAILABLE is counted as a timeout too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from larder_sidecar.cluster.handoff import ShardState
from larder_sidecar.invoke import InvokeError
from larder_sidecar.model import Method

from ..entities.fakes import GatedJournal, es_method
from .fakes import Cluster, Network, Node, entity_owned_by, eventually, membership, shard, shard_map

HELD = 0.3
"""Seconds the old owner's in-flight journal write is held, so the hand-off lasts that long."""


@pytest.fixture
def method() -> Method:
    return es_method()


@pytest.fixture
def journal() -> GatedJournal:
    j = GatedJournal()
    j.gate.set()
    return j


@pytest.fixture
async def cluster(method: Method, journal: GatedJournal) -> AsyncIterator[Cluster]:
    c = Cluster(Network(), method, journal, handoff_wait=10.0)
    yield c
    journal.gate.set()
    await c.close()


def waits(node: Node) -> float:
    return node.sample("larder_handoff_wait_seconds_count")


def waited_at_most(node: Node, seconds: str) -> float:
    return node.sample("larder_handoff_wait_seconds_bucket", le=seconds)


async def test_a_command_held_by_a_hand_off_is_observed_once_with_its_wait(
    cluster: Cluster, method: Method, journal: GatedJournal
) -> None:
    alone, both = membership(1, "a"), membership(2, "a", "b")
    moving = entity_owned_by(shard_map(both), "b")
    staying = entity_owned_by(shard_map(both), "a")
    a = await cluster.start("a", alone)
    await a.submit(method, moving)
    # a's next write for the moving entity is in flight when the map changes, so a's
    # release, and b's acquisition, last until the gate opens.
    journal.gate.clear()
    journal.waiting.clear()
    in_flight = asyncio.create_task(a.submit(method, moving))
    await journal.waiting.wait()
    b = await cluster.start("b", both)
    await cluster.apply(a, both)
    assert b.router.table.state(shard(moving)) is ShardState.ACQUIRING
    held = asyncio.create_task(b.submit(method, moving))
    await eventually(lambda: b.sample("larder_commands_waiting_on_handoff") == 1)
    # Nothing is observed while the command still waits.
    assert waits(b) == 0
    await asyncio.sleep(HELD)
    journal.gate.set()
    assert (await asyncio.wait_for(held, 5)).kind == "reply"
    assert (await asyncio.wait_for(in_flight, 5)).kind == "reply"
    await cluster.settled()

    assert waits(b) == 1
    waited = b.sample("larder_handoff_wait_seconds_sum")
    assert HELD <= waited < 3.0
    # In the buckets: not at or below 0.25 s, at or below 5 s.
    assert waited_at_most(b, "0.25") == 0
    assert waited_at_most(b, "5.0") == 1
    assert b.sample("larder_handoff_wait_timeouts_total") == 0

    # Commands for settled shards, local or forwarded, do not wait and are not observed.
    assert (await b.submit(method, moving)).kind == "reply"
    assert (await b.submit(method, staying)).kind == "reply"
    assert (await a.submit(method, moving)).kind == "reply"
    assert (waits(a), waits(b)) == (0, 1)


async def test_a_wait_that_ends_in_unavailable_is_counted_as_a_timeout(
    cluster: Cluster, method: Method, journal: GatedJournal
) -> None:
    # The safety net of the router's wait (the hand-off wait + 2 s): a shard that comes
    # back to `a` while a's release of it cannot finish (its journal write is held)
    # stays `returning` longer than any command may wait.
    cluster.handoff_wait = 0.2
    alone, both = membership(1, "a"), membership(2, "a", "b")
    moving = entity_owned_by(shard_map(both), "b")
    a = await cluster.start("a", alone)
    await a.submit(method, moving)
    journal.gate.clear()
    journal.waiting.clear()
    in_flight = asyncio.create_task(a.submit(method, moving))
    await journal.waiting.wait()
    await cluster.apply(a, both)
    await cluster.apply(a, membership(3, "a"))
    assert a.router.table.state(shard(moving)) is ShardState.RETURNING

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(InvokeError) as failed:
        await a.submit(method, moving)
    assert failed.value.code is grpc.StatusCode.UNAVAILABLE
    assert loop.time() - started >= 2.2
    assert a.sample("larder_handoff_wait_timeouts_total") == 1
    assert waits(a) == 1
    assert a.sample("larder_handoff_wait_seconds_sum") >= 2.2
    assert waited_at_most(a, "2.0") == 0

    journal.gate.set()
    assert (await asyncio.wait_for(in_flight, 5)).kind == "reply"
