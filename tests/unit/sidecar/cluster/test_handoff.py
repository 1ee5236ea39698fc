"""Hand-off between members (in-process): the old owner finishes what it has and
releases, the new owner holds commands until then, and takes over anyway after a
bounded wait when the old owner is silent or gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from larder_sidecar.cluster.handoff import ShardState
from larder_sidecar.journal.base import persistence_id
from larder_sidecar.model import Method

from ..entities.fakes import GatedJournal, es_method
from .fakes import (
    Cluster,
    Network,
    entity_owned_by,
    eventually,
    membership,
    shard,
    shard_map,
)


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
    c = Cluster(Network(), method, journal, handoff_wait=0.5)
    yield c
    await c.close()


async def _events(journal: GatedJournal, entity_id: str) -> int:
    loaded = await journal.load(persistence_id("svc", entity_id))
    return len(loaded.events)


async def test_a_joining_member_holds_commands_until_the_old_owner_has_written_and_released(
    cluster: Cluster, method: Method, journal: GatedJournal
) -> None:
    cluster.handoff_wait = 10.0
    alone, both = membership(1, "a"), membership(2, "a", "b")
    moving = entity_owned_by(shard_map(both), "b")
    a = await cluster.start("a", alone)
    await a.submit(method, moving)
    # The next command's journal write is held: it is in flight when the map changes.
    journal.gate.clear()
    journal.waiting.clear()
    in_flight = asyncio.create_task(a.submit(method, moving))
    await journal.waiting.wait()
    b = await cluster.start("b", both)
    await cluster.apply(a, both)
    assert a.router.table.state(shard(moving)) is ShardState.RELEASING
    # Sent to a after the change: forwarded to b, which holds it (b is acquiring).
    after = asyncio.create_task(a.submit(method, moving))
    await eventually(lambda: b.sample("larder_commands_waiting_on_handoff") == 1)
    assert b.router.table.state(shard(moving)) is ShardState.ACQUIRING
    assert not in_flight.done() and not after.done()
    journal.gate.set()
    assert (await asyncio.wait_for(in_flight, 5)).kind == "reply"
    assert (await asyncio.wait_for(after, 5)).kind == "reply"
    await cluster.settled()
    # Every command is in the journal once; b activated from it after a's write.
    assert await _events(journal, moving) == 3
    assert a.ran() == [moving, moving] and b.ran() == [moving]
    assert b.router.table.state(shard(moving)) is ShardState.OWNED
    assert a.router.table.state(shard(moving)) is ShardState.NOT_OWNED
    assert b.sample("larder_handoffs_total", direction="in", ending="confirmed") >= 1
    assert b.sample("larder_handoffs_total", direction="in", ending="timeout") == 0
    assert a.sample("larder_handoffs_total", direction="out", ending="released") == 1
    assert a.sample("larder_shards_owned") + b.sample("larder_shards_owned") == 64
    assert b.sample("larder_commands_waiting_on_handoff") == 0


async def test_a_silent_old_owner_is_taken_over_after_the_bounded_wait(
    cluster: Cluster, method: Method
) -> None:
    alone, both = membership(1, "a"), membership(2, "a", "b")
    moving = entity_owned_by(shard_map(both), "b")
    a = await cluster.start("a", alone)
    cluster.network.down.add(a.address)
    loop = asyncio.get_running_loop()
    started = loop.time()
    b = await cluster.start("b", both)
    assert (await b.submit(method, moving)).kind == "reply"
    waited = loop.time() - started
    assert 0.4 < waited < 3.0
    assert b.sample("larder_handoffs_total", direction="in", ending="timeout") >= 1
    assert b.router.table.state(shard(moving)) is ShardState.OWNED


async def test_the_shards_of_a_departed_member_are_taken_over_at_once(
    cluster: Cluster, method: Method
) -> None:
    both = membership(1, "a", "b")
    a = await cluster.start("a", both)
    b = await cluster.start("b", both)
    await cluster.settled()
    from_a = entity_owned_by(shard_map(both), "a")
    cluster.network.down.add(a.address)
    await cluster.apply(b, membership(2, "b"))
    assert b.router.table.state(shard(from_a)) is ShardState.OWNED
    assert b.sample("larder_handoffs_total", direction="in", ending="gone") == 1
    assert (await b.submit(method, from_a)).kind == "reply"
    assert a.ran() == []


async def test_a_terminating_member_hands_all_its_shards_away(
    cluster: Cluster, method: Method, journal: GatedJournal
) -> None:
    both = membership(1, "a", "b")
    a = await cluster.start("a", both)
    b = await cluster.start("b", both)
    await cluster.settled()
    from_b = entity_owned_by(shard_map(both), "b")
    await a.submit(method, from_b)
    assert b.ran() == [from_b] and b.host.active == 1
    confirmed_before = a.sample("larder_handoffs_total", direction="in", ending="confirmed")
    leaving = membership(2, "a", "b", terminating=["b"])
    await cluster.apply(b, leaving)
    await cluster.apply(a, leaving)
    assert await b.router.handed_off(5.0)
    assert b.host.active == 0 and b.router.table.owned == 0
    await cluster.settled()
    assert a.router.table.owned == 64
    # Through either member, the entity now runs at a, from the journal.
    await b.submit(method, from_b)
    assert a.ran() == [from_b] and await _events(journal, from_b) == 2
    confirmed = a.sample("larder_handoffs_total", direction="in", ending="confirmed")
    assert confirmed == confirmed_before + 1


async def test_a_member_that_keeps_its_shards_does_not_wait_to_leave(cluster: Cluster) -> None:
    both = membership(1, "a", "b")
    a = await cluster.start("a", both)
    await cluster.start("b", both)
    await cluster.settled()
    assert not await a.router.handed_off(0.1)


async def test_the_old_owner_answers_as_soon_as_it_sees_the_change_and_has_released(
    cluster: Cluster, method: Method
) -> None:
    cluster.handoff_wait = 10.0
    alone, both = membership(1, "a"), membership(2, "a", "b")
    moving = entity_owned_by(shard_map(both), "b")
    a = await cluster.start("a", alone)
    await a.submit(method, moving)
    b = await cluster.start("b", both)
    # b asked a, which still owns the shards under its map: the call waits there.
    await eventually(lambda: len(cluster.network.releases) == 1)
    assert b.router.table.state(shard(moving)) is ShardState.ACQUIRING
    await cluster.apply(a, both)
    await cluster.settled()
    # One call, answered once a had released: no asking again, no timeout.
    assert len(cluster.network.releases) == 1
    assert b.sample("larder_handoffs_total", direction="in", ending="confirmed") == 1
    assert (await b.submit(method, moving)).kind == "reply"
    assert b.ran() == [moving]


async def test_a_failing_release_call_does_not_leave_the_shards_waiting(
    cluster: Cluster, method: Method
) -> None:
    alone, both = membership(1, "a"), membership(2, "a", "b")
    moving = entity_owned_by(shard_map(both), "b")
    a = await cluster.start("a", alone)
    original = a.server.serve_release

    async def broken(request: object) -> object:
        raise RuntimeError("a bug in the call")

    a.server.serve_release = broken  # type: ignore[method-assign]
    b = await cluster.start("b", both)
    await cluster.apply(a, both)
    # The calls keep failing; once a leaves the membership b takes over at once.
    await eventually(lambda: len(cluster.network.releases) >= 2)
    await cluster.apply(b, membership(3, "b"))
    await cluster.settled()
    # Both of b's acquisitions from a (its own shards, then a's) ended when a left.
    assert b.sample("larder_handoffs_total", direction="in", ending="gone") == 2
    assert b.sample("larder_handoffs_total", direction="in", ending="timeout") == 0
    assert (await b.submit(method, moving)).kind == "reply"
    a.server.serve_release = original  # type: ignore[method-assign]


async def test_a_stopping_member_waits_only_briefly_to_be_marked_terminating(
    cluster: Cluster,
) -> None:
    both = membership(1, "a", "b")
    await cluster.start("a", both)
    b = await cluster.start("b", both)
    await cluster.settled()
    assert not await b.router.marked_leaving(0.05)
    waiting = asyncio.create_task(b.router.marked_leaving(5.0))
    await cluster.apply(b, membership(2, "a", "b", terminating=["b"]))
    assert await asyncio.wait_for(waiting, 1.0)
    assert await b.router.handed_off(5.0)
    # Dropped from the membership altogether counts too.
    await cluster.apply(b, membership(3, "a"))
    assert await b.router.marked_leaving(0.0)
