"""Idempotency keys across sidecars (docs/http.md): a command sent with a key through a
sidecar that forwards it to the entity's owner, retried through another sidecar after
the owner left the cluster (its shards handed over), is answered from the record the
first owner stored in the journal — not run again — and a key reused for another
request is refused however many sidecars the command crosses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
import pytest

from ..sidecar_cassandra.conftest import JournalTables, Pod, counter_pid
from ..sidecar_cassandra.function import COUNTER_TYPE
from .conftest import Launch, ShardedCluster, internal_port, metrics

WAIT = 30.0


async def add(pod: Pod, counter: str, tag: str, amount: int, key: str) -> Any:
    call = pod._call("Counter", "Add", pod.pb.CounterValue)
    request = pod.pb.AddRequest(counter_id=counter, tag=tag, amount=amount)
    return await call(request, timeout=WAIT, metadata=(("idempotency-key", key),))


async def http_add(pod: Pod, body: dict[str, Any], key: str) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", pod.port)
    writer.write(
        b"POST /larder_sctest.Counter/Add HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"Content-Type: application/json\r\nIdempotency-Key: {key}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


async def test_a_retry_through_another_sidecar_after_the_owner_left_is_not_run_again(
    launch: Launch, tables: JournalTables, pb: ModuleType, tmp_path: Path
) -> None:
    names = ("s0", "s1", "s2")
    address = {name: f"127.0.0.1:{internal_port()}" for name in names}
    members_file = tmp_path / "members"

    def listing(*lines: str) -> None:
        members_file.write_text("".join(f"{line}\n" for line in lines))

    listing(*(f"{n}={address[n]}" for n in names))
    cluster = {"LARDER_CLUSTER_MEMBERS_FILE": str(members_file)}
    pods = {}
    for name in names:
        pods[name] = await launch(name, int(address[name].rpartition(":")[2]), cluster)
    counter = ShardedCluster(pods, tuple(address.items())).entity_of("s1", COUNTER_TYPE, "idem-")

    # Through s0, which forwards it to the owner s1.
    first = await add(pods["s0"], counter, "t1", 3, "key-a")
    assert (first.value, first.events) == (3, 1)
    assert (await metrics(pods["s0"]))['larder_forwarded_commands_out_total{result="ok"}'] >= 1

    # s1 leaves: it hands its shards over, then stops.
    listing(*(f"{n}={address[n]}" + (" terminating" if n == "s1" else "") for n in names))
    for _ in range(int(WAIT / 0.1)):
        if (await metrics(pods["s1"]))["larder_shards_owned"] == 0:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"s1 kept its shards\n{pods['s1'].log()}")
    await pods["s1"].stop()
    listing(*(f"{n}={address[n]}" for n in names if n != "s1"))
    for _ in range(int(WAIT / 0.1)):
        owned = [(await metrics(pods[n]))["larder_shards_owned"] for n in ("s0", "s2")]
        if sum(owned) == 256:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("s1's shards were not taken over")

    # The retry, through s2: the new owner loads the record from the journal.
    again = await add(pods["s2"], counter, "t1", 3, "key-a")
    assert again == first
    replayed = f'larder_idempotent_replays_total{{entity_type="{COUNTER_TYPE}"}}'
    samples = [await metrics(pods[n]) for n in ("s0", "s2")]
    assert sum(s.get(replayed, 0.0) for s in samples) == 1

    # A reused key is refused wherever the request enters: over gRPC, and over HTTP
    # (422, also when the refusal came back from the owner over the internal port).
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await add(pods["s2"], counter, "t1", 4, "key-a")
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    body = {"counter_id": counter, "tag": "t1", "amount": 4}
    for pod in (pods["s0"], pods["s2"]):
        status, refused = await http_add(pod, body, "key-a")
        assert status == 422, refused
    status, reply = await http_add(pods["s0"], {**body, "amount": 3}, "key-a")
    assert (status, reply) == (200, {"value": "3", "events": "1"})

    stored = await tables.events(counter_pid(counter))
    assert [pb.Added.FromString(payload).tag for _, payload in stored] == ["t1"]
