"""Idempotency keys through real sidecar processes on the real Cassandra (docs/http.md):
a retry with the key returns the first reply and stores nothing again — after the
sidecar restarted, over gRPC and HTTP, and after a write whose outcome was unknown
because Cassandra was frozen (SIGSTOP) — and a key reused for another request is
refused (gRPC FAILED_PRECONDITION, HTTP 422). The journal's tables are read directly."""

from __future__ import annotations

import asyncio
import json
import re
import time
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
import pytest

from tests.infra.cassandra import CassandraServer

from .conftest import JournalTables, Pod, PodFactory, counter_pid, http_get, register_pid

REQUEST_TIMEOUT = 1.5
_REPLAYS = re.compile(
    r'^larder_idempotent_replays_total\{entity_type="sc-counter"\} (\S+)$', re.MULTILINE
)
SETTLE_TIMEOUT = 30.0


async def add(pod: Pod, counter: str, tag: str, amount: int, key: str) -> Any:
    call = pod._call("Counter", "Add", pod.pb.CounterValue)
    request = pod.pb.AddRequest(counter_id=counter, tag=tag, amount=amount)
    return await call(request, timeout=REQUEST_TIMEOUT + 10, metadata=(("idempotency-key", key),))


async def http_post(port: int, path: str, body: dict[str, Any], key: str) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nIdempotency-Key: {key}\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


async def tags(tables: JournalTables, pb: ModuleType, pid: str) -> list[str]:
    stored = await tables.events(pid)
    assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1)), f"a gap: {stored}"
    return [pb.Added.FromString(payload).tag for _, payload in stored]


async def test_a_retry_after_a_restart_returns_the_first_reply_over_grpc(
    start_pod: PodFactory, tables: JournalTables, pb: ModuleType
) -> None:
    pod = await start_pod("grpc-a")
    first = await add(pod, "g1", "t1", 5, "key-1")
    assert (first.value, first.events) == (5, 1)
    await pod.stop()
    again_pod = await start_pod("grpc-b")
    again = await add(again_pod, "g1", "t1", 5, "key-1")
    assert again == first
    assert await tags(tables, pb, counter_pid("g1")) == ["t1"]
    assert await replays(again_pod) == 1

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await add(again_pod, "g1", "t1", 6, "key-1")
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "idempotency key reused for a different request" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await add(again_pod, "g1", "t1", 5, "k" * 257)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 256" in (caught.value.details() or "")
    assert await tags(tables, pb, counter_pid("g1")) == ["t1"]


async def replays(pod: Pod) -> float:
    status, body = await http_get(pod.admin, "/metrics")
    assert status == 200, body
    found = _REPLAYS.search(body)
    return float(found.group(1)) if found else 0.0


async def test_a_retry_after_a_restart_returns_the_first_reply_over_http(
    start_pod: PodFactory, tables: JournalTables, pb: ModuleType
) -> None:
    pod = await start_pod("http-a")
    body = {"counter_id": "h1", "tag": "t1", "amount": 7}
    status, first = await http_post(pod.port, "/larder_sctest.Counter/Add", body, "k-http")
    assert status == 200, first
    # The value entity too: its record lives on its state's row.
    reg = {"register_id": "r1", "text": "hello"}
    status, reg_first = await http_post(pod.port, "/larder_sctest.Register/Set", reg, "k-reg")
    assert status == 200, reg_first
    await pod.stop()

    pod = await start_pod("http-b")
    status, again = await http_post(pod.port, "/larder_sctest.Counter/Add", body, "k-http")
    assert (status, again) == (200, first)
    assert await tags(tables, pb, counter_pid("h1")) == ["t1"]
    status, reg_again = await http_post(pod.port, "/larder_sctest.Register/Set", reg, "k-reg")
    assert (status, reg_again) == (200, reg_first)
    row = await tables.value_state(register_pid("r1"))
    assert row.revision == 1

    other = {**body, "amount": 8}
    status, refused = await http_post(pod.port, "/larder_sctest.Counter/Add", other, "k-http")
    assert status == 422, refused
    assert refused["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "reused for a different request" in refused["message"]
    status, refused = await http_post(
        pod.port, "/larder_sctest.Counter/Add", body, "x" * 257
    )
    assert status == 400 and "at most 256" in refused["message"], refused
    assert await tags(tables, pb, counter_pid("h1")) == ["t1"]


async def test_a_retry_after_an_unknown_outcome_applies_the_command_once(
    cassandra: CassandraServer, start_pod: PodFactory, tables: JournalTables, pb: ModuleType
) -> None:
    pod = await start_pod("frozen", REQUEST_TIMEOUT=f"{REQUEST_TIMEOUT}s")
    counter, pid = "u1", counter_pid("u1")
    assert (await add(pod, counter, "t1", 1, "k1")).events == 1

    with cassandra.suspended():
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await add(pod, counter, "t2", 10, "k2")
        waited = time.monotonic() - started
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE, caught.value
    assert "may or may not be stored" in (caught.value.details() or "")
    assert waited < REQUEST_TIMEOUT + 1.5, waited

    # Retried at once, while the resumed node may still be applying the buffered
    # write: the retry either finds the record at activation, or runs, is refused by
    # that write and then finds the record. Either way the answer is the first one's.
    async with asyncio.timeout(SETTLE_TIMEOUT):
        while True:
            try:
                again = await add(pod, counter, "t2", 10, "k2")
                break
            except grpc.aio.AioRpcError as e:
                # The journal may still be reconnecting after the freeze.
                assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED), e
                await asyncio.sleep(0.2)
    assert (again.value, again.events) == (11, 2)
    assert await tags(tables, pb, pid) == ["t1", "t2"]
    # The frozen node ran the buffered write when it resumed, so the retry was answered
    # from its record, not run.
    assert await replays(pod) == 1
    # And again, for good measure, then a new command after it.
    assert await add(pod, counter, "t2", 10, "k2") == again
    assert (await add(pod, counter, "t3", 100, "k3")).value == 111
    assert await tags(tables, pb, pid) == ["t1", "t2", "t3"]
