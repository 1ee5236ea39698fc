"""Relaying HTTP to the owner (in-process, the real router and internal server handlers;
each member's HTTP front replaced by a fake that records what reached it): the request
reaches the owner as received and its answer comes back as is, and the internal port's
rules hold for relays as for forwards (map versions and redirects, the hop limit, a
peer that is gone, an owner that does not take relays, per-entity order)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from larder_sidecar.cluster import wire
from larder_sidecar.cluster.handoff import ShardState
from larder_sidecar.cluster.sharded import MAX_PEER_HOPS
from larder_sidecar.invoke import InvokeError
from larder_sidecar.model import Method

from ..entities.fakes import GatedJournal, es_method
from .fakes import (
    Cluster,
    Network,
    Node,
    address,
    entity_owned_by,
    eventually,
    membership,
    shard,
    shard_map,
)

HEADERS = [("content-type", "application/json"), ("idempotency-key", "k1")]


class Front:
    """An owner's HTTP front: records the relayed requests, answers each with a fixed
    answer (or waits for `gate` first)."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, http: Any) -> Any:
        self.requests.append(http)
        if self.gate is not None:
            await self.gate.wait()
        return wire.http_answer(
            201, "application/json", [("x-seen", http.path)], b'{"ok":' + http.body + b"}"
        )


@pytest.fixture
def method() -> Method:
    return es_method()


@pytest.fixture
async def cluster(method: Method) -> AsyncIterator[Cluster]:
    c = Cluster(Network(), method)
    yield c
    await c.close()


async def _two(cluster: Cluster) -> tuple[Node, Node, Front]:
    m = membership(1, "a", "b")
    a = await cluster.start("a", m)
    b = await cluster.start("b", m)
    await cluster.settled()
    front = Front()
    b.server.relayed_http = front
    a.server.relayed_http = Front()
    return a, b, front


async def _relay(node: Node, entity_id: str, http: Any) -> Any:
    """A relay that a peer answers (not None: not served here)."""
    reply = await node.router.relay("svc", entity_id, http)
    assert reply is not None
    return reply


def _http(body: bytes = b"1", path: str = "/svc/Method") -> Any:
    return ("POST", path, None, HEADERS, body)


async def test_the_owner_answers_a_relayed_request_and_the_answer_comes_back_as_is(
    cluster: Cluster,
) -> None:
    a, b, front = await _two(cluster)
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    reply = await _relay(a, at_b, _http(b"42"))
    assert reply.WhichOneof("result") == "http"
    assert reply.http.status == 201 and reply.http.body == b'{"ok":42}'
    assert reply.http.content_type == "application/json"
    assert [(h.name, h.value) for h in reply.http.headers] == [("x-seen", "/svc/Method")]
    ((request,),) = [front.requests]
    assert (request.method, request.path, request.query, request.body) == (
        "POST", "/svc/Method", "", b"42"
    )
    assert [(h.name, h.value) for h in request.headers] == HEADERS
    ((sent_to, forward),) = cluster.network.forwards
    # `method` empty: a receiver that does not know relays refuses it without running it.
    assert sent_to == address("b") and forward.method == "" and forward.HasField("http")
    assert forward.entity_id == at_b and forward.map_version == 1 and forward.hops == 0
    assert a.sample("larder_forwarded_commands_out_total", result="ok") == 1
    assert b.sample("larder_forwarded_commands_in_total", result="ok") == 1
    # Nothing reached an entity on either side: the owner's front runs the command.
    assert a.ran() == [] and b.ran() == []


async def test_an_entity_of_this_sidecar_is_not_relayed(cluster: Cluster) -> None:
    a, _, _ = await _two(cluster)
    at_a = entity_owned_by(shard_map(membership(1, "a", "b")), "a")
    assert await a.router.relay("svc", at_a, _http()) is None
    assert cluster.network.forwards == []


async def test_an_owner_that_does_not_take_relays_answers_unimplemented_unrun(
    cluster: Cluster,
) -> None:
    a, b, _ = await _two(cluster)
    b.server.relayed_http = None
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    reply = await _relay(a, at_b, _http())
    assert reply.WhichOneof("result") == "error"
    assert reply.error.code == grpc.StatusCode.UNIMPLEMENTED.value[0]


async def test_a_relay_under_an_older_map_is_redirected_and_served_once_by_the_owner(
    cluster: Cluster,
) -> None:
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
    fronts: dict[str, Front] = {node.name: Front() for node in (a, b, c)}
    for node in (a, b, c):
        node.server.relayed_http = fronts[node.name]
    reply = await _relay(a, entity, _http())
    assert reply.WhichOneof("result") == "http"
    assert fronts["b"].requests == [] and len(fronts["c"].requests) == 1
    first, second = cluster.network.forwards
    assert first[0] == address("b") and second[0] == address("c") and second[1].hops == 1
    assert b.sample("larder_forwarded_commands_in_total", result="redirect") == 1


async def test_a_relay_with_a_stale_map_version_is_refused_unrun(cluster: Cluster) -> None:
    a, b, front = await _two(cluster)
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    session = b.server.session("127.0.0.1")
    view = wire.MapView()
    assert a.router.map is not None
    view.CopyFrom(wire.view_of(a.router.me, a.router.map))
    session.set_view(view)
    request = wire.relay_request(
        hops=0, entity_type="svc", entity_id=at_b,
        http=wire.http_request(*_http()), map_version=7,
    )
    with pytest.raises(Exception, match="map version 7"):
        await session.forward(request, session.current)
    over = wire.relay_request(
        hops=MAX_PEER_HOPS + 1, entity_type="svc", entity_id=at_b,
        http=wire.http_request(*_http()), map_version=1,
    )
    reply = await session.forward(over, session.current)
    assert reply.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert front.requests == []


async def test_a_relay_to_a_peer_that_is_gone_fails_fast_with_unavailable(
    cluster: Cluster,
) -> None:
    a, b, front = await _two(cluster)
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    cluster.network.down.add(b.address)
    with pytest.raises(InvokeError) as info:
        await asyncio.wait_for(a.router.relay("svc", at_b, _http()), 1.0)
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert a.sample("larder_forwarded_commands_out_total", result="unavailable") == 1
    assert front.requests == []


async def test_relays_and_forwards_to_one_entity_keep_their_order(
    cluster: Cluster, method: Method
) -> None:
    a, b, front = await _two(cluster)
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    front.gate = asyncio.Event()
    first = asyncio.create_task(a.router.relay("svc", at_b, _http(b"1")))
    await asyncio.sleep(0.05)
    # A transcoded forward and a second relay behind it: neither leaves before the first
    # relay's answer.
    second = asyncio.create_task(a.submit(method, at_b))
    third = asyncio.create_task(a.router.relay("svc", at_b, _http(b"3")))
    await asyncio.sleep(0.05)
    assert len(cluster.network.forwards) == 1 and b.ran() == []
    front.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second, third), 5)
    kinds = [f.HasField("http") for _, f in cluster.network.forwards]
    assert kinds == [True, False, True]
    assert [r.body for r in front.requests] == [b"1", b"3"]


async def test_a_caller_that_gives_up_in_the_queue_passes_the_turn_on(
    cluster: Cluster,
) -> None:
    a, _, front = await _two(cluster)
    at_b = entity_owned_by(shard_map(membership(1, "a", "b")), "b")
    front.gate = asyncio.Event()
    first = asyncio.create_task(a.router.relay("svc", at_b, _http(b"1")))
    await asyncio.sleep(0.05)
    gone = asyncio.create_task(a.router.relay("svc", at_b, _http(b"2")))
    last = asyncio.create_task(a.router.relay("svc", at_b, _http(b"3")))
    await asyncio.sleep(0.05)
    gone.cancel()
    front.gate.set()
    await asyncio.wait_for(asyncio.gather(first, last), 5)
    assert [r.body for r in front.requests] == [b"1", b"3"]


async def test_a_relay_to_a_member_acquiring_the_shard_waits_for_the_hand_off(
    method: Method,
) -> None:
    journal = GatedJournal()
    journal.gate.set()
    cluster = Cluster(Network(), method, journal, handoff_wait=10.0)
    try:
        alone, both = membership(1, "a"), membership(2, "a", "b")
        moving = entity_owned_by(shard_map(both), "b")
        a = await cluster.start("a", alone)
        await a.submit(method, moving)
        # A command's journal write is held at a when the shard moves to b.
        journal.gate.clear()
        journal.waiting.clear()
        in_flight = asyncio.create_task(a.submit(method, moving))
        await journal.waiting.wait()
        b = await cluster.start("b", both)
        front = Front()
        b.server.relayed_http = front
        await cluster.apply(a, both)
        relayed = asyncio.create_task(_relay(a, moving, _http(b"7")))
        # b holds the relay until a has written and released the shard: not served yet.
        await eventually(lambda: b.sample("larder_commands_waiting_on_handoff") == 1)
        assert front.requests == [] and not relayed.done()
        journal.gate.set()
        assert (await asyncio.wait_for(in_flight, 5)).kind == "reply"
        reply = await asyncio.wait_for(relayed, 5)
        assert reply.WhichOneof("result") == "http" and len(front.requests) == 1
        assert b.router.table.state(shard(moving)) is ShardState.OWNED
    finally:
        await cluster.close()
