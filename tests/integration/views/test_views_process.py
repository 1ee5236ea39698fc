"""Views end to end: a user function written with our SDK (value entities, an
event-sourced entity, two views) behind a real `larder-sidecar` process on the SQLite
journal, queried over gRPC and HTTP; a restart keeps the view and catches up what was
committed while no view update ran; a query outside the language is refused at discovery."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from larder_sdk import LarderService
from larder_sidecar.journal.base import PersistenceId, StoredPayload
from larder_sidecar.journal.sqlite import SqliteJournal

from ..sidecar.test_process import SIDECAR, _free_port, _http_get, _wait_ready
from .shop_function import Gate, bad_service, compile_bad, compile_shop, shop_service

PKG = "larder.viewshop"


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return compile_shop(tmp_path_factory.mktemp("view-shop"))


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def function(pb: ModuleType, gate: Gate) -> AsyncIterator[LarderService]:
    service = shop_service(pb, gate)
    await service.start()
    yield service
    await service.stop(0)


class Sidecar:
    """One `larder-sidecar` process on the journal file `journal`."""

    def __init__(self, function_port: int, journal: Path) -> None:
        self.function_port = function_port
        self.journal = journal
        self.port = self.admin = 0
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *, wait_ready: bool = True) -> None:
        self.port, self.admin = _free_port(), _free_port()
        env = {
            **os.environ,
            "USER_FUNCTION_PORT": str(self.function_port),
            "LARDER_HOST": "127.0.0.1",
            "LARDER_PORT": str(self.port),
            "LARDER_ADMIN_PORT": str(self.admin),
            "LARDER_INTERNAL_PORT": str(_free_port()),
            "LARDER_JOURNAL_TYPE": "sqlite",
            "LARDER_JOURNAL_SQLITE_PATH": str(self.journal),
        }
        self.proc = await asyncio.create_subprocess_exec(
            str(SIDECAR), env=env, stderr=asyncio.subprocess.PIPE
        )
        if wait_ready:
            await _wait_ready(self.proc, self.admin)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.proc.wait(), 30)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def sidecars(tmp_path: Path) -> AsyncIterator[Callable[[int], Awaitable[Sidecar]]]:
    started: list[Sidecar] = []

    async def start(function_port: int) -> Sidecar:
        sidecar = Sidecar(function_port, tmp_path / "journal.db")
        started.append(sidecar)
        await sidecar.start()
        return sidecar

    yield start
    for sidecar in started:
        await sidecar.kill()


class Client:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    async def unary(self, service: str, method: str, request: Message, reply: Any) -> Any:
        call = self.channel.unary_unary(
            f"/{PKG}.{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply.FromString,
        )
        return await call(request, timeout=10)

    async def stream(self, service: str, method: str, request: Message, reply: Any) -> list[Any]:
        call = self.channel.unary_stream(
            f"/{PKG}.{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply.FromString,
        )
        return [r async for r in call(request, timeout=10)]


async def _http_get_public(port: int, path: str) -> tuple[int, str]:
    """GET on the public port, asking it to close the connection after the reply (it keeps
    HTTP/1.1 connections open otherwise)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def _eventually(check: Callable[[], Awaitable[Any]], want: Any, within: float = 10) -> Any:
    """Views are updated after the write is acknowledged: poll until they show it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    got = None
    while loop.time() < deadline:
        got = await check()
        if got == want:
            return got
        await asyncio.sleep(0.05)
    pytest.fail(f"the view showed {got!r}, not {want!r}, within {within:g}s")


async def _put(client: Client, pb: ModuleType, item_id: str, name: str, price: int,
               category: str) -> None:
    item = pb.Item(item_id=item_id, name=name, price=price, category=category)
    await client.unary("Items", "Put", item, Empty)


async def test_rows_follow_value_entities_and_are_queried_over_grpc_and_http(
    pb: ModuleType, function: LarderService, sidecars: Callable[[int], Awaitable[Sidecar]]
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
            return [(r.item_id, r.price) for r in rows]

        await _eventually(fruit, [("a", 3), ("c", 5)])
        # Parameters from the path, a streamed query as a JSON array over HTTP.
        status, body = await _http_get_public(sidecar.port, "/items/by-category/fruit")
        assert status == 200, body
        assert [i["itemId"] for i in json.loads(body)] == ["a", "c"]
        status, body = await _http_get_public(sidecar.port, "/items/cheaper-than/4")
        assert status == 200, body
        assert [i["name"] for i in json.loads(body)["items"]] == ["apple", "bean"]
        one = await client.unary("ItemsView", "OneByName", pb.ByName(name="bean"), pb.Item)
        assert one.item_id == "b"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.unary("ItemsView", "OneByName", pb.ByName(name="kiwi"), pb.Item)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        # An update moves the row; a delete removes it.
        await _put(client, pb, "a", "apple", 3, "veg")
        await client.unary("Items", "Remove", pb.ItemId(item_id="c"),
                           Empty)
        await _eventually(fruit, [])
        names = await client.stream("ItemsView", "Names", pb.ByCategory(category="veg"),
                                    pb.NameInCategory)
        assert [(n.name, n.category) for n in names] == [("apple", "veg"), ("bean", "veg")]


async def test_events_reach_the_view_through_the_update_handler(
    pb: ModuleType, function: LarderService, sidecars: Callable[[int], Awaitable[Sidecar]]
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


async def test_a_restart_keeps_the_view_and_catches_up_a_write_it_never_applied(
    pb: ModuleType, function: LarderService, tmp_path: Path,
    sidecars: Callable[[int], Awaitable[Sidecar]],
) -> None:
    """The loss case: a write committed to the journal whose view update never ran (the
    sidecar died between the two) is applied when the sidecar starts again."""
    assert function.port is not None
    sidecar = await sidecars(function.port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        client = Client(channel)
        await _put(client, pb, "a", "apple", 3, "fruit")
        await client.unary("Accounts", "Add", pb.Deposit(account_id="x", amount=5), Empty)

        async def fruit() -> list[str]:
            rows = await client.stream("ItemsView", "ByCategoryQuery",
                                       pb.ByCategory(category="fruit"), pb.Item)
            return [r.name for r in rows]

        await _eventually(fruit, ["apple"])
    await sidecar.kill()  # kill -9: nothing is flushed or closed
    # Committed while no sidecar ran, so no view update ran for them.
    journal = SqliteJournal(sidecar.journal)
    await journal.start()
    item = pb.Item(item_id="a", name="apricot", price=3, category="fruit")
    await journal.put_value(PersistenceId("items|a"), 1, StoredPayload(
        f"type.googleapis.com/{PKG}.Item", item.SerializeToString()))
    deposit = pb.Deposited(amount=10)
    await journal.append(PersistenceId("accounts|x"), 1, [StoredPayload(
        f"type.googleapis.com/{PKG}.Deposited", deposit.SerializeToString())])
    await journal.close()
    await sidecar.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        client = Client(channel)

        async def fruit_again() -> list[str]:
            rows = await client.stream("ItemsView", "ByCategoryQuery",
                                       pb.ByCategory(category="fruit"), pb.Item)
            return [r.name for r in rows]

        async def balances() -> list[tuple[int, int]]:
            rows = await client.stream("BalancesView", "AtLeast", pb.MinTotal(), pb.Balance)
            return [(r.total, r.deposits) for r in rows]

        await _eventually(fruit_again, ["apricot"])
        await _eventually(balances, [(15, 2)])


async def test_a_sidecar_killed_while_a_view_update_is_in_flight_loses_nothing(
    pb: ModuleType, function: LarderService, gate: Gate,
    sidecars: Callable[[int], Awaitable[Sidecar]],
) -> None:
    """kill -9 between the journal write (acknowledged to the client) and the view update
    (held in the user function's update handler): the next start applies it."""
    assert function.port is not None
    sidecar = await sidecars(function.port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        client = Client(channel)
        gate.open.clear()
        await client.unary("Accounts", "Add", pb.Deposit(account_id="k", amount=9), Empty)
        await asyncio.wait_for(gate.entered.wait(), 10)
    await sidecar.kill()
    gate.open.set()
    await sidecar.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:
        client = Client(channel)

        async def balances() -> list[tuple[str, int, int]]:
            rows = await client.stream("BalancesView", "AtLeast", pb.MinTotal(), pb.Balance)
            return [(r.account_id, r.total, r.deposits) for r in rows]

        await _eventually(balances, [("k", 9, 1)])


async def test_a_query_outside_the_language_is_refused_at_discovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    pb = compile_bad(tmp_path / "bad")
    service = bad_service(pb)
    await service.start()
    assert service.port is not None
    sidecar = Sidecar(service.port, tmp_path / "journal.db")
    try:
        with caplog.at_level(logging.ERROR, logger="larder_sdk"):
            await sidecar.start(wait_ready=False)
            for _ in range(200):
                if any("reports an error" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
        (reported,) = [r.getMessage() for r in caplog.records
                       if "reports an error" in r.getMessage()]
        assert "larder.viewbad.ThingsView.Sorted: unexpected 'ORDER' at 1:41" in reported
        assert "in the WHERE clause" in reported
        # Never ready, and says why.
        status, why = await _http_get(sidecar.admin, "/readyz")
        assert status == 503
        assert "ORDER" in why
    finally:
        await sidecar.kill()
        await service.stop(0)
