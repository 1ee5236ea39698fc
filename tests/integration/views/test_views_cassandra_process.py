"""Views end to end on the real Cassandra 5: the view shop's user function (our SDK) behind
a real `larder-sidecar` process on the Cassandra journal; rows follow value entities and
events (through the update handler), queried over gRPC and HTTP; a sidecar killed between
the journal write and the view update loses nothing; a write committed to the journal
while no sidecar ran is caught up at the next start."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType

import grpc.aio
import pytest
from google.protobuf.empty_pb2 import Empty
from larder_sdk import LarderService
from larder_sidecar.journal.base import PersistenceId, StoredPayload
from larder_sidecar.journal.cassandra import CassandraJournal
from larder_sidecar.journal.cassandra_settings import CassandraSettings

from tests.infra.cassandra import CassandraServer
from tests.infra.process import free_port

from .shop_function import Gate, compile_shop, shop_service
from .test_views_process import PKG, Client, _eventually, _http_get_public, _put

SIDECAR = Path(sys.executable).parent / "larder-sidecar"
START_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return compile_shop(tmp_path_factory.mktemp("view-shop-cassandra"))


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def function(pb: ModuleType, gate: Gate) -> AsyncIterator[LarderService]:
    service = shop_service(pb, gate)
    await service.start()
    yield service
    await service.stop(0)


@pytest.fixture
def keyspace() -> str:
    """A keyspace per test: the views' tables and offsets start empty."""
    return f"views_{uuid.uuid4().hex[:12]}"


class Sidecar:
    """One `larder-sidecar` process on the Cassandra journal (keyspace `keyspace`)."""

    def __init__(
        self, function_port: int, cassandra: CassandraServer, keyspace: str, log: Path
    ) -> None:
        self.function_port = function_port
        self.cassandra = cassandra
        self.keyspace = keyspace
        self.log = log
        self.port = self.admin = 0
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.port, self.admin = free_port(), free_port()
        env = {
            **os.environ,
            "USER_FUNCTION_PORT": str(self.function_port),
            "LARDER_HOST": "127.0.0.1",
            "LARDER_PORT": str(self.port),
            "LARDER_ADMIN_PORT": str(self.admin),
            "LARDER_INTERNAL_PORT": str(free_port()),
            "LARDER_JOURNAL_TYPE": "cassandra",
            "LARDER_JOURNAL_CASSANDRA_CONTACT_POINTS": ",".join(self.cassandra.contact_points),
            "LARDER_JOURNAL_CASSANDRA_PORT": str(self.cassandra.port),
            "LARDER_JOURNAL_CASSANDRA_KEYSPACE": self.keyspace,
            "LARDER_JOURNAL_CASSANDRA_READ_CONSISTENCY": "ONE",
            "LARDER_JOURNAL_CASSANDRA_WRITE_CONSISTENCY": "ONE",
        }
        self.proc = await asyncio.create_subprocess_exec(
            str(SIDECAR), env=env, stderr=self.log.open("ab")
        )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        assert self.proc is not None
        while loop.time() < deadline:
            assert self.proc.returncode is None, f"the sidecar exited:\n{self.tail()}"
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.admin)
                writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                await writer.drain()
                data = await reader.read()
                writer.close()
                if data.startswith(b"HTTP/1.1 200"):
                    return
            except OSError:
                pass
            # Polling is the only way to observe another process's readiness probe.
            await asyncio.sleep(0.1)
        pytest.fail(f"the sidecar did not become ready in {START_TIMEOUT:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


SidecarFactory = Callable[[int], Awaitable[Sidecar]]


@pytest.fixture
async def sidecars(
    cassandra: CassandraServer, keyspace: str, tmp_path: Path
) -> AsyncIterator[SidecarFactory]:
    started: list[Sidecar] = []

    async def start(function_port: int) -> Sidecar:
        sidecar = Sidecar(function_port, cassandra, keyspace, tmp_path / "sidecar.log")
        started.append(sidecar)
        await sidecar.start()
        return sidecar

    yield start
    for sidecar in started:
        await sidecar.kill()


def journal_settings(cassandra: CassandraServer, keyspace: str) -> CassandraSettings:
    return CassandraSettings(
        contact_points=tuple(cassandra.contact_points), port=cassandra.port, keyspace=keyspace,
        read_consistency="ONE", write_consistency="ONE",
    )


async def test_rows_follow_value_entities_and_are_queried_over_grpc_and_http(
    pb: ModuleType, function: LarderService, sidecars: SidecarFactory
) -> None:
    assert function.port is not None
    sidecar = await sidecars(function.port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        client = Client(channel)
        await _put(client, pb, "a", "apple", 3, "fruit")
        await _put(client, pb, "b", "bean", 1, "veg")
        await _put(client, pb, "c", "cherry", 5, "fruit")

        async def fruit() -> list[tuple[str, int]]:
            rows = await client.stream("ItemsView", "ByCategoryQuery",
                                       pb.ByCategory(category="fruit"), pb.Item)
            # Cassandra answers in the order of the keys' tokens, not of the keys.
            return sorted((r.item_id, r.price) for r in rows)

        await _eventually(fruit, [("a", 3), ("c", 5)])
        status, body = await _http_get_public(sidecar.port, "/items/by-category/fruit")
        assert status == 200, body
        assert sorted(i["itemId"] for i in json.loads(body)) == ["a", "c"]
        status, body = await _http_get_public(sidecar.port, "/items/cheaper-than/4")
        assert status == 200, body
        assert sorted(i["name"] for i in json.loads(body)["items"]) == ["apple", "bean"]
        one = await client.unary("ItemsView", "OneByName", pb.ByName(name="bean"), pb.Item)
        assert one.item_id == "b"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.unary("ItemsView", "OneByName", pb.ByName(name="kiwi"), pb.Item)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        await _put(client, pb, "a", "apple", 3, "veg")
        await client.unary("Items", "Remove", pb.ItemId(item_id="c"), Empty)
        await _eventually(fruit, [])
        names = await client.stream("ItemsView", "Names", pb.ByCategory(category="veg"),
                                    pb.NameInCategory)
        assert sorted((n.name, n.category) for n in names) == [("apple", "veg"), ("bean", "veg")]


async def test_events_reach_the_view_through_the_update_handler(
    pb: ModuleType, function: LarderService, sidecars: SidecarFactory
) -> None:
    assert function.port is not None
    sidecar = await sidecars(function.port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        client = Client(channel)
        for account, amount in [("x", 5), ("y", 1), ("x", 7)]:
            await client.unary("Accounts", "Add", pb.Deposit(account_id=account, amount=amount),
                               Empty)

        async def rich() -> list[tuple[str, int, int]]:
            rows = await client.stream("BalancesView", "AtLeast", pb.MinTotal(min=2),
                                       pb.Balance)
            return [(r.account_id, r.total, r.deposits) for r in rows]

        await _eventually(rich, [("x", 12, 2)])


async def test_a_sidecar_killed_while_a_view_update_is_in_flight_loses_nothing(
    pb: ModuleType, function: LarderService, gate: Gate, sidecars: SidecarFactory
) -> None:
    """kill -9 between the journal write (acknowledged to the client) and the view update
    (held in the user function's update handler): the next start applies it, once."""
    assert function.port is not None
    sidecar = await sidecars(function.port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        client = Client(channel)
        await client.unary("Accounts", "Add", pb.Deposit(account_id="k", amount=4), Empty)

        async def balances() -> list[tuple[str, int, int]]:
            rows = await client.stream("BalancesView", "AtLeast", pb.MinTotal(), pb.Balance)
            return [(r.account_id, r.total, r.deposits) for r in rows]

        await _eventually(balances, [("k", 4, 1)])
        gate.open.clear()
        gate.entered.clear()
        await client.unary("Accounts", "Add", pb.Deposit(account_id="k", amount=9), Empty)
        await asyncio.wait_for(gate.entered.wait(), 10)
    await sidecar.kill()
    gate.open.set()
    await sidecar.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        client = Client(channel)
        # Applied once: the handler adds to the stored row, a second application would
        # show 22 and 3 deposits.
        await _eventually(balances_of(client, pb), [("k", 13, 2)])


def balances_of(client: Client, pb: ModuleType) -> Callable[[], Awaitable[object]]:
    async def balances() -> list[tuple[str, int, int]]:
        rows = await client.stream("BalancesView", "AtLeast", pb.MinTotal(), pb.Balance)
        return [(r.account_id, r.total, r.deposits) for r in rows]

    return balances


async def test_a_restart_catches_up_writes_the_view_never_saw(
    pb: ModuleType, function: LarderService, cassandra: CassandraServer, keyspace: str,
    sidecars: SidecarFactory,
) -> None:
    """Writes committed to the Cassandra journal while no sidecar ran (so no view update
    ran for them) are found by catch-up at the next start."""
    assert function.port is not None
    sidecar = await sidecars(function.port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        client = Client(channel)
        await _put(client, pb, "a", "apple", 3, "fruit")
        await client.unary("Accounts", "Add", pb.Deposit(account_id="x", amount=5), Empty)
        await _eventually(balances_of(client, pb), [("x", 5, 1)])
    await sidecar.kill()
    journal = CassandraJournal(journal_settings(cassandra, keyspace))
    await journal.start()
    try:
        item = pb.Item(item_id="a", name="apricot", price=3, category="fruit")
        await journal.put_value(PersistenceId("items|a"), 1, StoredPayload(
            f"type.googleapis.com/{PKG}.Item", item.SerializeToString()))
        fresh = pb.Item(item_id="d", name="date", price=2, category="fruit")
        await journal.put_value(PersistenceId("items|d"), 0, StoredPayload(
            f"type.googleapis.com/{PKG}.Item", fresh.SerializeToString()))
        deposit = pb.Deposited(amount=10)
        await journal.append(PersistenceId("accounts|x"), 1, [StoredPayload(
            f"type.googleapis.com/{PKG}.Deposited", deposit.SerializeToString())])
    finally:
        await journal.close()
    await sidecar.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        client = Client(channel)

        async def fruit() -> list[str]:
            rows = await client.stream("ItemsView", "ByCategoryQuery",
                                       pb.ByCategory(category="fruit"), pb.Item)
            return sorted(r.name for r in rows)

        await _eventually(fruit, ["apricot", "date"])
        await _eventually(balances_of(client, pb), [("x", 15, 2)])
