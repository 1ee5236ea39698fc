"""Forwarding between members (in-process, the real router and internal server
handlers): commands run at the owner only, stale senders are redirected without
running anything, loops stop, a peer that is gone fails fast, non-members are refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import wrappers_pb2
from larder_sidecar.cluster import wire
from larder_sidecar.cluster.internal import Refused
from larder_sidecar.cluster.sharded import MAX_PEER_HOPS, PeerOwner
from larder_sidecar.invoke import InvokeError
from larder_sidecar.model import Method
from larder_sidecar.outcome import protocol_metadata

from ..entities.fakes import es_method
from .fakes import (
    Cluster,
    Network,
    address,
    entity_owned_by,
    eventually,
    membership,
    shard_map,
)


@pytest.fixture
def method() -> Method:
    return es_method()


@pytest.fixture
async def cluster(method: Method) -> AsyncIterator[Cluster]:
    c = Cluster(Network(), method)
    yield c
    await c.close()


async def _two(cluster: Cluster) -> None:
    m = membership(1, "a", "b")
    await cluster.start("a", m)
    await cluster.start("b", m)
    await cluster.settled()


async def test_the_owner_runs_the_command_and_the_sender_gets_its_outcome(
    cluster: Cluster, method: Method
) -> None:
    await _two(cluster)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    at_a = entity_owned_by(shard_map(membership(1, "a", "b")), "a")
    assert isinstance(await a.router.owner("svc", at_b), PeerOwner)
    assert await a.router.owner("svc", at_a) is a.host
    outcome = await a.submit(method, at_b)
    assert outcome.kind == "reply" and outcome.message.payload.value
    await b.submit(method, at_b)
    # Both commands ran at b, none at a; the second through a's forward saw the first.
    assert b.ran() == [at_b, at_b] and a.ran() == []
    ((sent_to, request),) = cluster.network.forwards
    assert sent_to == address("b")
    assert request.method == method.model.path and request.payload == at_b.encode()
    assert request.hops == 0 and request.map_version == 1
    # a's view went to b once (with a's first call there, a forward or a Release).
    ((view_to, view),) = [(to, v) for to, v in cluster.network.views if v.sender == "a"]
    assert view_to == address("b") and view.version == 1
    assert [e.key for e in request.metadata.entries] == ["k"]
    assert a.sample("larder_forwarded_commands_out_total", result="ok") == 1
    assert b.sample("larder_forwarded_commands_in_total", result="ok") == 1


async def test_a_command_failure_at_the_owner_reaches_the_sender_as_that_error(
    cluster: Cluster, method: Method
) -> None:
    await _two(cluster)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    await b.host.shutdown()
    with pytest.raises(InvokeError) as info:
        await a.submit(method, at_b)
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in info.value.message
    assert a.sample("larder_forwarded_commands_out_total", result="error") == 1


async def test_a_sender_under_an_older_map_is_redirected_and_nothing_runs_twice(
    cluster: Cluster, method: Method
) -> None:
    cluster.handoff_wait = 0.3
    old, new = membership(1, "a", "b"), membership(2, "a", "b", "c")
    # An entity b owns under the old map and c under the new one.
    entity = next(
        f"e{n}"
        for n in range(10_000)
        if shard_map(old).owner_of("svc", f"e{n}") == "b"
        and shard_map(new).owner_of("svc", f"e{n}") == "c"
    )
    a = await cluster.start("a", old)
    b = await cluster.start("b", new)
    c = await cluster.start("c", new)
    await cluster.settled()
    outcome = await a.submit(method, entity)
    assert outcome.kind == "reply"
    assert b.ran() == [] and c.ran() == [entity] and a.ran() == []
    first, second = cluster.network.forwards
    assert first[0] == address("b") and first[1].hops == 0
    # a's map did not change, so it followed the redirect to the owner b named.
    assert second[0] == address("c") and second[1].hops == 1
    assert b.sample("larder_forwarded_commands_in_total", result="redirect") == 1


async def test_a_redirected_sender_retries_under_its_newer_map(
    cluster: Cluster, method: Method
) -> None:
    cluster.redirect_wait = 5.0
    # a and b disagree on a's first shards (their views differ): a's acquisitions wait.
    cluster.handoff_wait = 0.3
    old, new = membership(1, "a", "b"), membership(2, "a", "b", "c")
    entity = next(
        f"e{n}"
        for n in range(10_000)
        if shard_map(old).owner_of("svc", f"e{n}") == "b"
        and shard_map(new).owner_of("svc", f"e{n}") == "c"
    )
    a = await cluster.start("a", old)
    b = await cluster.start("b", new)
    c = await cluster.start("c", new)
    await cluster.settled()
    call = asyncio.create_task(a.submit(method, entity))
    await eventually(lambda: len(cluster.network.forwards) == 1)
    assert not call.done()
    await cluster.apply(a, new)
    assert (await asyncio.wait_for(call, 5)).kind == "reply"
    assert c.ran() == [entity] and b.ran() == []
    assert [f[1].map_version for f in cluster.network.forwards] == [1, 2]
    # The view went again only when it changed.
    assert [(to, v.version) for to, v in cluster.network.views if v.sender == "a"] == [
        (address("b"), 1),
        (address("c"), 2),
    ]


async def test_members_that_disagree_stop_bouncing_a_command_after_the_hop_limit(
    cluster: Cluster, method: Method
) -> None:
    # a believes b owns everything; b believes a does: each redirects to the other.
    a = await cluster.start("a", membership(1, "a", "b", terminating=["a"]))
    b = await cluster.start("b", membership(1, "a", "b", terminating=["b"]))
    await cluster.settled()
    with pytest.raises(InvokeError) as info:
        await asyncio.wait_for(a.submit(method, "x"), 5)
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert "redirected" in info.value.message
    assert len(cluster.network.forwards) == MAX_PEER_HOPS + 1
    assert a.ran() == [] and b.ran() == []


async def test_the_receiver_refuses_a_forward_past_the_hop_limit(
    cluster: Cluster, method: Method
) -> None:
    await _two(cluster)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    request = _request(a, method, at_b, hops=MAX_PEER_HOPS + 1)
    session = b.server.session("127.0.0.1")
    session.set_view(_view(a))
    reply = await session.forward(request, session.current)
    assert reply.WhichOneof("result") == "error"
    assert reply.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert b.ran() == []


async def test_a_peer_that_is_gone_fails_the_command_fast_with_unavailable(
    cluster: Cluster, method: Method
) -> None:
    await _two(cluster)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    cluster.network.down.add(b.address)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(InvokeError) as info:
        await a.submit(method, at_b)
    assert loop.time() - started < 1.0
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert "b at" in info.value.message and "did not answer" in info.value.message
    assert b.ran() == []
    assert a.sample("larder_forwarded_commands_out_total", result="unavailable") == 1


def _view(node: object) -> Any:
    router = node.router  # type: ignore[attr-defined]
    view = wire.MapView()
    view.CopyFrom(wire.view_of(router.me, router.map))
    return view


def _request(node: object, method: Method, entity_id: str, hops: int = 0) -> Any:
    router = node.router  # type: ignore[attr-defined]
    return wire.ForwardRequest(
        hops=hops,
        entity_type="svc",
        entity_id=entity_id,
        method=method.model.path,
        payload=b"",
        metadata=protocol_metadata([]),
        map_version=router.map.version,
    )


async def test_calls_without_a_view_from_strangers_or_other_shard_counts_are_refused(
    cluster: Cluster, method: Method
) -> None:
    await _two(cluster)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    good = _view(a)
    empty = wire.MapView()
    stranger = _view(a)
    stranger.sender = "mallory"
    other_count = _view(a)
    other_count.shard_count = 128
    cases = [
        (None, "127.0.0.1", grpc.StatusCode.INVALID_ARGUMENT),
        (empty, "127.0.0.1", grpc.StatusCode.INVALID_ARGUMENT),
        (stranger, "127.0.0.1", grpc.StatusCode.PERMISSION_DENIED),
        (other_count, "127.0.0.1", grpc.StatusCode.FAILED_PRECONDITION),
        # A member's id, from an address that is not the member's.
        (good, "10.9.8.7", grpc.StatusCode.PERMISSION_DENIED),
        (good, "", grpc.StatusCode.PERMISSION_DENIED),
    ]
    for view, peer, code in cases:
        session = b.server.session(peer)
        if view is not None:
            session.set_view(view)
        with pytest.raises(Refused) as info:
            await session.forward(_request(a, method, at_b), session.current)
        assert info.value.code is code, (peer, info.value.details)
    # A good view, but the call says it was routed under another map version.
    session = b.server.session("127.0.0.1")
    session.set_view(good)
    stale = _request(a, method, at_b)
    stale.map_version = 7
    with pytest.raises(Refused) as info:
        await session.forward(stale, session.current)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "version 7" in info.value.details
    assert b.ran() == []
    assert b.sample("larder_forwarded_commands_in_total", result="refused") == len(cases) + 1
    reply = await session.forward(_request(a, method, at_b), session.current)
    assert reply.WhichOneof("result") == "outcome" and b.ran() == [at_b]


async def test_a_view_is_judged_again_when_the_receivers_map_changes(
    cluster: Cluster, method: Method
) -> None:
    await _two(cluster)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    session = b.server.session("127.0.0.1")
    session.set_view(_view(a))
    assert (await session.forward(_request(a, method, at_b), session.current)).outcome
    assert not session.stale()
    # b's map drops a: the same view, on the same connection, is now a stranger's.
    await cluster.apply(b, membership(2, "b"))
    assert session.stale()
    with pytest.raises(Refused) as info:
        await session.forward(_request(a, method, at_b), session.current)
    assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert b.ran() == [at_b]


async def test_commands_to_one_entity_are_forwarded_in_order_one_at_a_time(
    cluster: Cluster, method: Method
) -> None:
    await _two(cluster)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    calls = [asyncio.create_task(a.submit(method, at_b)) for _ in range(5)]
    outcomes = await asyncio.gather(*calls)
    assert b.ran() == [at_b] * 5
    # The fake user function answers with the command's id on the entity's stream: the
    # n-th command submitted at a was the n-th to run at b.
    answered = []
    for outcome in outcomes:
        value = wrappers_pb2.Int64Value()
        outcome.message.payload.Unpack(value)
        answered.append(value.value)
    assert answered == [1, 2, 3, 4, 5]


async def test_a_command_never_sent_to_a_member_that_left_meanwhile_is_routed_again(
    cluster: Cluster, method: Method
) -> None:
    await _two(cluster)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    cluster.network.down.add(b.address)

    async def b_leaves() -> None:
        cluster.network.while_connecting = None
        await cluster.apply(a, membership(2, "a"))

    cluster.network.while_connecting = b_leaves
    # b is gone and a learns it while trying to connect: the command runs at a instead.
    assert (await a.submit(method, at_b)).kind == "reply"
    assert a.ran() == [at_b] and b.ran() == []
    assert a.sample("larder_forwarded_commands_out_total", result="rerouted") == 1
    assert a.sample("larder_forwarded_commands_out_total", result="unavailable") == 0


async def test_a_receiver_that_names_the_sender_as_owner_is_asked_again_soon(
    cluster: Cluster, method: Method
) -> None:
    # b is behind: its map still gives everything to a, a's gives this entity to b.
    cluster.redirect_wait = 5.0
    cluster.handoff_wait = 0.3
    current = membership(2, "a", "b")
    entity = entity_owned_by(shard_map(current), "b")
    a = await cluster.start("a", current)
    b = await cluster.start("b", membership(1, "a", "b", terminating=["b"]))
    await cluster.settled()
    loop = asyncio.get_running_loop()
    started = loop.time()
    call = asyncio.create_task(a.submit(method, entity))
    await eventually(lambda: len(cluster.network.forwards) == 1)
    await asyncio.sleep(0.1)
    await cluster.apply(b, current)  # b catches up; a's map never changes
    assert (await asyncio.wait_for(call, 5)).kind == "reply"
    # Not the 5 s a waits for its own map: b was asked again after 0.25 s, then 0.5 s.
    assert loop.time() - started < 2.0
    assert b.ran() == [entity] and a.ran() == []
    assert [to for to, _ in cluster.network.forwards][-1] == address("b")


async def test_a_receiver_behind_the_sender_is_asked_again_not_followed(
    cluster: Cluster, method: Method
) -> None:
    # c joins: a and b already list it, c itself is still on the earlier map, under which
    # the entity is b's. A redirect from c to b is c's old map talking: a asks c again
    # soon (not after its redirect wait), and never sends the command to b.
    cluster.redirect_wait = 5.0
    earlier, current = membership(1, "a", "b"), membership(2, "a", "b", "c")
    entity = entity_owned_by(shard_map(current), "c")
    while shard_map(earlier).owner_of("svc", entity) != "b":
        entity = entity_owned_by(shard_map(current), "c", int(entity[1:]) + 1)
    a = await cluster.start("a", earlier)
    b = await cluster.start("b", earlier)
    c = await cluster.start("c", earlier)
    await cluster.apply(a, current)
    await cluster.apply(b, current)
    await cluster.settled()
    loop = asyncio.get_running_loop()
    started = loop.time()
    call = asyncio.create_task(a.submit(method, entity))
    await eventually(lambda: len(cluster.network.forwards) >= 2)  # redirected, asked again
    await asyncio.sleep(0.2)
    await cluster.apply(c, current)  # c catches up; a's map does not change
    assert (await asyncio.wait_for(call, 5)).kind == "reply"
    assert loop.time() - started < 2.0  # not the 5 s redirect wait
    assert c.ran() == [entity] and b.ran() == [] and a.ran() == []
    assert {to for to, _ in cluster.network.forwards} == {address("c")}
    assert a.sample("larder_forwarded_commands_out_total", result="redirect") >= 2
