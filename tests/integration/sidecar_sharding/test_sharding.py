"""Three sidecars with a static member list on one Cassandra: every entity lives in
exactly one of them, any of them serves any entity (forwarding to the owner), and a
stopped member's entities fail fast with UNAVAILABLE."""

from __future__ import annotations

import asyncio
import re

import grpc
import grpc.aio
import pytest

from ..sidecar_cassandra.conftest import JournalTables, counter_pid
from ..sidecar_cassandra.function import COUNTER_TYPE, REGISTER_TYPE
from .conftest import ShardedCluster, metrics

ENTITIES = 12


def _activated(log: str, entity_type: str) -> list[str]:
    return re.findall(rf"activated {re.escape(entity_type)}/(\S+)", log)


async def test_each_entity_lives_in_one_sidecar_and_every_sidecar_reads_its_writes(
    sharded: ShardedCluster, tables: JournalTables
) -> None:
    pods = list(sharded.pods.values())
    entities = [f"cart-{n}" for n in range(ENTITIES)]
    # Each command through another sidecar than the one before: every reply sees every
    # earlier write, wherever the entity lives.
    for round_ in range(3):
        for n, entity in enumerate(entities):
            pod = pods[(n + round_) % len(pods)]
            reply = await pod.add(entity, f"{entity}-{round_}", 1)
            assert (reply.value, reply.events) == (round_ + 1, round_ + 1)
            reader = pods[(n + round_ + 1) % len(pods)]
            assert (await reader.get(entity)).value == round_ + 1
    for register in ("r-a", "r-b", "r-c"):
        await pods[0].set_text(register, f"text of {register}")
        for pod in pods:
            assert (await pod.get_text(register)).text == f"text of {register}"

    # Each entity was activated in its owner only, once.
    for name, pod in sharded.pods.items():
        log = pod.sidecar_log.read_text(errors="replace")
        counters = _activated(log, COUNTER_TYPE)
        assert sorted(counters) == sorted(
            e for e in entities if sharded.owner(COUNTER_TYPE, e) == name
        ), name
        assert sorted(_activated(log, REGISTER_TYPE)) == sorted(
            r for r in ("r-a", "r-b", "r-c") if sharded.owner(REGISTER_TYPE, r) == name
        )
    for entity in entities:
        assert len(await tables.events(counter_pid(entity))) == 3

    samples = {name: await metrics(pod) for name, pod in sharded.pods.items()}
    assert sum(s["larder_active_entities"] for s in samples.values()) == ENTITIES + 3
    assert sum(s["larder_shards_owned"] for s in samples.values()) == 256
    forwarded_out = sum(
        s['larder_forwarded_commands_out_total{result="ok"}'] for s in samples.values()
    )
    forwarded_in = sum(
        s['larder_forwarded_commands_in_total{result="ok"}'] for s in samples.values()
    )
    assert forwarded_out == forwarded_in > 0
    for s in samples.values():
        assert not any(k.startswith("larder_fencing_rejections_total") and v for k, v in s.items())


async def test_a_stopped_member_fails_its_entities_fast_with_unavailable(
    sharded: ShardedCluster,
) -> None:
    s0, s2 = sharded.pods["s0"], sharded.pods["s2"]
    gone = sharded.entity_of("s2", COUNTER_TYPE, "gone-")
    kept = sharded.entity_of("s1", COUNTER_TYPE, "kept-")
    assert (await s0.add(gone, "before")).events == 1
    await s2.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await s0.add(gone, "after")
    assert loop.time() - started < 2.0
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "s2 at 127.0.0.1" in (info.value.details() or "")
    # The other members' entities are unaffected.
    assert (await s0.add(kept, "still")).events == 1
    samples = await metrics(s0)
    assert samples['larder_forwarded_commands_out_total{result="unavailable"}'] == 1


async def test_readiness_waits_for_nothing_but_the_first_map(sharded: ShardedCluster) -> None:
    for pod in sharded.pods.values():
        status, body = await pod.readyz()
        assert status == 200, body
        assert (await metrics(pod))["larder_shard_map_version"] == 1
