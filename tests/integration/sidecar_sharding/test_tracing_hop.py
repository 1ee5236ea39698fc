"""Tracing across pods: a command sent to a sidecar that does not own its entity is one
trace — the receiving sidecar's spans, a CLIENT span for the hop, and the owner's SERVER
span with the entity's spans below it (two sidecar processes, Cassandra, spans exported
over OTLP to a receiver in this test)."""

from __future__ import annotations

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
        spans = await receiver.wait_for(
            lambda s: any(x.name == "journal write" and x.service == "s1" for x in s)
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
    assert all(s.trace_id == CLIENT_TRACE for s in spans if s.service in ("s0", "s1"))
