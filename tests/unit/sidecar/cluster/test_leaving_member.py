"""A terminating member stays until the new owners of its shards have asked for them
(bounded): a member that sees the change after it had exited could not reach it, and
would hold those shards' commands until the membership dropped it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from larder_sidecar.cluster import handoff_manager
from larder_sidecar.model import Method

from ..entities.fakes import es_method
from .fakes import Cluster, Network, entity_owned_by, membership, shard_map


@pytest.fixture
def method() -> Method:
    return es_method()


@pytest.fixture
async def cluster(method: Method) -> AsyncIterator[Cluster]:
    c = Cluster(Network(), method, handoff_wait=10.0)
    yield c
    await c.close()


async def test_a_leaving_member_waits_for_a_late_new_owner_to_ask_for_its_shards(
    cluster: Cluster, method: Method
) -> None:
    three = membership(1, "a", "b", "c")
    nodes = {name: await cluster.start(name, three) for name in ("a", "b", "c")}
    await cluster.settled()
    leaving = membership(2, "a", "b", "c", terminating=["b"])
    # b's shards go to a and to c; c sees the change late.
    to_c = entity_owned_by(shard_map(leaving), "c", start=0)
    assert shard_map(three).owner_of("svc", to_c) == "b"
    await cluster.apply(nodes["b"], leaving)
    await cluster.apply(nodes["a"], leaving)
    handed_off = asyncio.create_task(nodes["b"].router.handed_off(8.0))
    await asyncio.sleep(0.3)
    # Released and claimed by a; c has not asked yet.
    assert nodes["b"].router.table.owned == 0
    assert not handed_off.done()
    await cluster.apply(nodes["c"], leaving)
    assert await asyncio.wait_for(handed_off, 2.0)
    await cluster.settled()
    # c took b's shards over on b's confirmation, not because b left.
    c = nodes["c"]
    assert c.sample("larder_handoffs_total", direction="in", ending="confirmed") >= 1
    assert c.sample("larder_handoffs_total", direction="in", ending="gone") == 0
    assert (await c.submit(method, to_c)).kind == "reply"


async def test_a_leaving_member_does_not_wait_long_for_an_owner_that_never_asks(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handoff_manager, "CLAIM_WAIT", 0.3)
    three = membership(1, "a", "b", "c")
    nodes = {name: await cluster.start(name, three) for name in ("a", "b", "c")}
    await cluster.settled()
    leaving = membership(2, "a", "b", "c", terminating=["b"])
    await cluster.apply(nodes["b"], leaving)
    await cluster.apply(nodes["a"], leaving)
    loop = asyncio.get_running_loop()
    started = loop.time()
    # c never sees the change: b stops waiting for it after CLAIM_WAIT.
    assert await nodes["b"].router.handed_off(8.0)
    assert 0.25 <= loop.time() - started < 2.0


async def test_a_leaving_member_does_not_wait_for_an_owner_that_left(cluster: Cluster) -> None:
    three = membership(1, "a", "b", "c")
    nodes = {name: await cluster.start(name, three) for name in ("a", "b", "c")}
    await cluster.settled()
    # b terminating and c gone in one change: b's shards all go to a, which asks.
    after = membership(2, "a", "b", terminating=["b"])
    await cluster.apply(nodes["b"], after)
    await cluster.apply(nodes["a"], after)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await nodes["b"].router.handed_off(8.0)
    assert loop.time() - started < 1.0
