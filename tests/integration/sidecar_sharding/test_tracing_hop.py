"""Tracing across pods: a command sent to a sidecar that does not own its entity is one
trace — the receiving sidecar's spans, a CLIENT span for the hop, and the owner's SERVER
span with the entity's spans below it; a shard hand-off is a span on each member (two
sidecar processes, Cassandra, spans exported over OTLP to a receiver in this test)."""

from __future__ import annotations

from pathlib import Path

from larder_sidecar.cluster.membership import MemberId

from tests.infra.otlp import OtlpReceiver, tree

from ..sidecar_cassandra.function import COUNTER_TYPE
from .conftest import Launch, ShardedCluster, internal_port

CLIENT_TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "10f067aa0ba902b7"


async def test_a_forwarded_command_is_one_trace_across_both_sidecars(launch: Launch) -> None:
    async with OtlpReceiver() as receiver:
        internal = {name: internal_port() for name in ("s0", "s1")}
        members = tuple((name, f"127.0.0.1:{port}") for name, port in internal.items())
        listed = ",".join(f"{name}={address}" for name, address in members)
        pods = {}
        for name, port in internal.items():
            pods[name] = await launch(
                name,
                port,
                {
                    "LARDER_CLUSTER_MEMBERS": listed,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_BSP_SCHEDULE_DELAY": "50",
                    "OTEL_SERVICE_NAME": name,
                },
            )
        cluster = ShardedCluster(pods, members)
        entity = cluster.entity_of("s1", COUNTER_TYPE, "traced-")
        s0 = pods["s0"]
        add = s0.channel.unary_unary(
            "/larder_sctest.Counter/Add",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=s0.pb.CounterValue.FromString,
        )
        reply = await add(
            s0.pb.AddRequest(counter_id=entity, tag="t", amount=1),
            timeout=30,
            metadata=(("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),),
        )
        assert reply.value == 1
        # Each side's outermost span ends last, after its children (which may come in
        # earlier export batches): waiting for both means the whole tree is in.
        spans = await receiver.wait_for(
            lambda s: any(x.name.startswith("forwarded ") and x.service == "s1" for x in s)
            and any(x.kind == "SERVER" and x.service == "s0" for x in s)
        )
    server = next(s for s in spans if s.kind == "SERVER" and s.service == "s0")
    assert (server.trace_id, server.parent_id) == (CLIENT_TRACE, CLIENT_SPAN)
    names = tree(spans, server)
    assert names == [
        "/larder_sctest.Counter/Add",
        "  forward to s1",
        "    forwarded /larder_sctest.Counter/Add",
        "      handle larder_sctest.Counter/Add",
        "        queue",
        "        activate",
        "        user function",
        "        journal write",
    ], "\n".join(names)
    hop = next(s for s in spans if s.name == "forward to s1")
    owner = next(s for s in spans if s.name == "forwarded /larder_sctest.Counter/Add")
    assert (hop.kind, hop.service, hop.attributes["larder.peer"]) == ("CLIENT", "s0", "s1")
    assert (owner.kind, owner.service) == ("SERVER", "s1")
    # Every span of the command (the members' start-up hand-offs are traces of their own).
    commands = [s for s in spans if s.service in ("s0", "s1") and not s.name.startswith("hand")]
    assert all(s.trace_id == CLIENT_TRACE for s in commands)


async def test_a_shard_hand_off_is_a_span_on_each_member(launch: Launch, tmp_path: Path) -> None:
    address = {name: f"127.0.0.1:{internal_port()}" for name in ("s0", "s1")}
    members_file = tmp_path / "members"
    members_file.write_text(f"s0={address['s0']}\n")
    async with OtlpReceiver() as receiver:
        for name in ("s0", "s1"):  # s1 starts outside the list: it owns nothing yet
            await launch(
                name,
                int(address[name].rpartition(":")[2]),
                {
                    "LARDER_CLUSTER_MEMBERS_FILE": str(members_file),
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_BSP_SCHEDULE_DELAY": "50",
                    "OTEL_SERVICE_NAME": name,
                },
            )
        # s1 joins: s0 releases the shards the new map gives s1, which asks s0 for them.
        members_file.write_text("".join(f"{n}={a}\n" for n, a in address.items()))
        spans = await receiver.wait_for(
            lambda s: any(x.name == "hand-off in" and x.service == "s1" for x in s)
            and any(x.name == "hand-off out" and x.service == "s0" for x in s)
        )
    (gained,) = [s for s in spans if s.name == "hand-off in"]
    (released,) = [s for s in spans if s.name == "hand-off out"]
    moved = ShardedCluster({}, tuple(address.items())).map.shards_of(MemberId("s1"))
    assert (gained.service, gained.parent_id, gained.kind) == ("s1", "", "INTERNAL")
    assert gained.attributes == {
        "larder.peer": "s0",
        "larder.shards": len(moved),
        "larder.handoff.ending": "confirmed",
    }
    assert (released.service, released.parent_id) == ("s0", "")
    assert released.attributes["larder.peer"] == "s1"
    assert released.attributes["larder.shards"] == len(moved)
    assert released.attributes["larder.entities.passivated"] == 0
    # s1 asked while s0 was still releasing, or after: it got the shards after s0 let go.
    assert gained.end_ns >= released.end_ns
