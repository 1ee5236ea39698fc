"""The admin port's cluster answers: `/cluster` and `/cluster/owner` from each member's
own map (in-process members), and the admin server serving them over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping

import pytest
from larder_sidecar.admin import AdminServer
from larder_sidecar.cluster.membership import MemberId
from larder_sidecar.cluster.status import (
    ClusterView,
    cluster_routes,
    describe_cluster,
    describe_owner,
    journal_identity,
)
from larder_sidecar.journal.cassandra_settings import CassandraSettings
from larder_sidecar.metrics import Metrics
from larder_sidecar.model import Method
from larder_sidecar.settings import Settings

from ..entities.fakes import es_method
from .fakes import SHARDS, Cluster, Network, entity_owned_by, membership, shard, shard_map

TYPES = ("svc",)


@pytest.fixture
def method() -> Method:
    return es_method()


@pytest.fixture
async def cluster(method: Method) -> AsyncIterator[Cluster]:
    c = Cluster(Network(), method, handoff_wait=0.5)
    yield c
    await c.close()


async def test_every_member_names_the_same_owner_and_the_shares_add_up(
    cluster: Cluster, method: Method
) -> None:
    three = membership(1, "a", "b", "c")
    nodes = [await cluster.start(name, three) for name in ("a", "b", "c")]
    addresses = {str(m.id): m.address for m in three.members}
    await cluster.settled()
    for owner in ("a", "b", "c"):
        entity_id = entity_owned_by(shard_map(three), owner)
        answers = [
            describe_owner(ClusterView(True, n.router, TYPES), {"type": "svc", "id": entity_id})
            for n in nodes
        ]
        for node, (status, body) in zip(nodes, answers, strict=True):
            assert status == 200
            assert body == {
                "entity_type": "svc",
                "entity_id": entity_id,
                "shard": shard(entity_id),
                "owner": owner,
                "owner_address": addresses[owner],
                "answered_by": node.name,
                "state_here": "owned" if node.name == owner else "not owned",
                "map_version": 1,
                "fingerprint": three.fingerprint,
            }
    status, body = describe_cluster(ClusterView(True, nodes[1].router, TYPES, "memory"))
    assert status == 200
    members = body["members"]
    assert isinstance(members, list)
    assert [m["id"] for m in members] == ["a", "b", "c"]
    assert sum(m["shards"] for m in members) == SHARDS
    b_shards = next(m["shards"] for m in members if m["id"] == "b")
    assert body["shards_served_here"] == b_shards == len(shard_map(three).shards_of(MemberId("b")))
    assert (body["member"], body["shard_count"], body["entity_types"]) == ("b", SHARDS, ["svc"])
    assert body["journal"] == "memory"


def test_the_journal_is_named_by_its_place_without_credentials() -> None:
    cassandra = CassandraSettings(contact_points=("10.0.0.2", "10.0.0.1"), port=9142,
                                  keyspace="shop", username="u", password="secret")
    assert journal_identity(Settings(journal_type="cassandra", journal_cassandra=cassandra)) == (
        "cassandra:shop@10.0.0.1,10.0.0.2:9142"
    )
    assert journal_identity(Settings(journal_type="sqlite", journal_sqlite_path="/d/j.db")) == (
        "sqlite:/d/j.db"
    )
    assert journal_identity(Settings()) == "memory"


async def test_the_type_may_be_left_out_with_one_entity_type_and_mistakes_are_named(
    cluster: Cluster,
) -> None:
    node = await cluster.start("a", membership(1, "a", "b"))
    one = ClusterView(True, node.router, TYPES)
    status, body = describe_owner(one, {"id": "alice"})
    assert (status, body["entity_type"], body["shard"]) == (200, "svc", shard("alice"))
    assert describe_owner(one, {"type": "svc"}) == (
        400, {"error": "give the entity id: /cluster/owner?type=TYPE&id=ID"})
    assert describe_owner(one, {"type": "cart", "id": "alice"}) == (
        400, {"error": "this function has no entity type 'cart'; it has entity types svc"})
    two = ClusterView(True, node.router, ("cart", "svc"))
    assert describe_owner(two, {"id": "alice"}) == (
        400, {"error": "give the entity type too (type=TYPE): this function has entity types "
                       "cart, svc"})


def test_without_membership_or_before_the_first_map_it_says_so() -> None:
    alone = ClusterView(False, None, TYPES)
    for status, body in (describe_cluster(alone), describe_owner(alone, {"id": "x"})):
        assert status == 404
        assert "no cluster membership" in str(body["error"])
    starting = ClusterView(True, None, ())
    assert describe_cluster(starting) == (
        503, {"error": "starting: this sidecar has no shard map yet; retry"})


async def get(port: int, target: str) -> tuple[int, str, Mapping[str, object]]:
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        response = await reader.read()
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    content_type = next(h.split(": ", 1)[1] for h in lines if h.startswith("Content-Type"))
    return int(lines[0].split()[1]), content_type, json.loads(body)


async def test_the_admin_server_serves_them_as_json_with_the_query_decoded(
    cluster: Cluster,
) -> None:
    node = await cluster.start("a", membership(1, "a", "b"))
    views = [ClusterView(True, node.router, TYPES)]
    admin = AdminServer(Metrics(), _ready, cluster_routes(lambda: views[-1]))
    await admin.start("127.0.0.1", 0)
    try:
        target = "/cluster/owner?type=svc&id=b%C3%B6b%2F1"
        status, content_type, body = await get(admin.port, target)
        assert (status, content_type) == (200, "application/json")
        assert (body["entity_id"], body["shard"]) == ("böb/1", shard("böb/1"))
        status, _, body = await get(admin.port, "/cluster")
        assert (status, body["member"]) == (200, "a")
        # Each request reads the view anew.
        views.append(ClusterView(False, None, TYPES))
        status, _, body = await get(admin.port, "/cluster")
        assert status == 404
    finally:
        await admin.close()


async def test_a_failing_route_is_a_500_not_a_dropped_connection() -> None:
    def broken(query: Mapping[str, str]) -> tuple[int, object]:
        raise RuntimeError("bug")

    admin = AdminServer(Metrics(), _ready, {"/cluster": broken})
    await admin.start("127.0.0.1", 0)
    try:
        assert await get(admin.port, "/cluster") == (
            500, "application/json", {"error": "internal error; see the sidecar's log"})
    finally:
        await admin.close()


async def _ready() -> tuple[bool, str]:
    return True, "ok"
