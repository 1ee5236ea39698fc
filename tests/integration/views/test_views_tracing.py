"""Tracing of view updates: a `larder-sidecar` process in front of the view-shop function
(our SDK), exporting over OTLP to a receiver in this test. A change's update continues
the trace of the command whose journal write made it, with the update handler's round
trip (`Views/Handle`) below it; a plain update (no handler) is a span without one. A view
query, streamed or unary, over gRPC or HTTP, is a span below its call's SERVER span."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.empty_pb2 import Empty
from larder_sdk import LarderService

from tests.infra.otlp import OtlpReceiver, ReceivedSpan, tree

from .test_views_process import PKG, Sidecar, function, gate, pb, sidecars  # noqa: F401

TRACE = "6bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "20f067aa0ba902b7"


def _updates(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.name.startswith("view update ")]


async def test_a_view_update_continues_the_trace_of_the_write_that_made_it(
    pb: ModuleType,  # noqa: F811
    function: LarderService,  # noqa: F811
    sidecars: Callable[[int], Awaitable[Sidecar]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert function.port is not None
    async with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        sidecar = await sidecars(function.port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:

            def call(service: str, method: str) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
                return channel.unary_unary(
                    f"/{PKG}.{service}/{method}",
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=Empty.FromString,
                )

            await call("Accounts", "Add")(
                pb.Deposit(account_id="t", amount=3),
                timeout=10,
                metadata=(("traceparent", f"00-{TRACE}-{SPAN}-01"),),
            )
            await call("Items", "Put")(
                pb.Item(item_id="p", name="pear", price=2, category="fruit"), timeout=10
            )
        spans = await receiver.wait_for(lambda s: len(_updates(s)) >= 2, within=20)
    server = next(s for s in spans if s.kind == "SERVER" and s.trace_id == TRACE)
    assert server.parent_id == SPAN
    assert tree(spans, server) == [
        f"/{PKG}.Accounts/Add",
        f"  handle {PKG}.Accounts/Add",
        "    queue",
        "    activate",
        "    user function",
        "    journal write",
        f"      view update {PKG}.BalancesView",
        "        user function",
    ], "\n".join(tree(spans, server))
    (balances,) = [s for s in _updates(spans) if s.trace_id == TRACE]
    assert balances.attributes["larder.view.changes"] == 1
    assert balances.status == "UNSET"
    # The value entity's change: a plain update, no handler, under its own command.
    (items,) = [s for s in _updates(spans) if s.name == f"view update {PKG}.ItemsView"]
    put = next(s for s in spans if s.kind == "SERVER" and s.name == f"/{PKG}.Items/Put")
    assert items.trace_id == put.trace_id != TRACE
    assert tree(spans, items) == [f"view update {PKG}.ItemsView"]


async def test_view_queries_are_spans_under_their_calls(
    pb: ModuleType,  # noqa: F811
    function: LarderService,  # noqa: F811
    sidecars: Callable[[int], Awaitable[Sidecar]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert function.port is not None
    async with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        sidecar = await sidecars(function.port)
        traced = (("traceparent", f"00-{TRACE}-{SPAN}-01"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.port}") as channel:

            def stub(method: str, reply: Any, streamed: bool = False) -> Any:
                make = channel.unary_stream if streamed else channel.unary_unary
                return make(
                    f"/{PKG}.{method}",
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=reply.FromString,
                )

            put = stub("Items/Put", Empty)
            for item_id, price in (("a", 1), ("b", 2), ("c", 9)):
                item = pb.Item(item_id=item_id, name=item_id, price=price, category="fruit")
                await put(item, timeout=10)
            by_category = stub("ItemsView/ByCategoryQuery", pb.Item, streamed=True)
            for _ in range(100):  # the view follows the writes after they are acknowledged
                rows = [r async for r in by_category(pb.ByCategory(category="fruit"), timeout=10)]
                if len(rows) == 3:
                    break
                await asyncio.sleep(0.05)
            # Both traced, each in its own trace from the client's.
            rows = [
                r
                async for r in by_category(
                    pb.ByCategory(category="fruit"), timeout=10, metadata=traced
                )
            ]
            assert [r.item_id for r in rows] == ["a", "b", "c"]
            cheaper = await stub("ItemsView/Cheaper", pb.ItemList)(
                pb.PriceBelow(max_price=5),
                timeout=10,
                metadata=(("traceparent", f"00-{'7' * 32}-{SPAN}-01"),),
            )
            assert [i.item_id for i in cheaper.items] == ["a", "b"]
        # Over HTTP/1.1: a streamed query answered as a JSON array.
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
        writer.write(
            f"GET /items/by-category/fruit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"traceparent: 00-{'8' * 32}-{SPAN}-01\r\n\r\n".encode()
        )
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        traces = {TRACE, "7" * 32, "8" * 32}
        spans = await receiver.wait_for(
            lambda s: {x.trace_id for x in s if x.name.startswith("view query")} >= traces,
            within=20,
        )
    for trace_id, method, rows_sent in (
        (TRACE, "ByCategoryQuery", 3),
        ("7" * 32, "Cheaper", 2),
        ("8" * 32, "ByCategoryQuery", 3),
    ):
        server = next(s for s in spans if s.kind == "SERVER" and s.trace_id == trace_id)
        assert server.name == f"/{PKG}.ItemsView/{method}"
        assert server.parent_id == SPAN
        assert tree(spans, server) == [
            server.name,
            f"  view query {PKG}.ItemsView/{method}",
        ], "\n".join(tree(spans, server))
        (query,) = [s for s in spans if s.name.startswith("view query") and s.trace_id == trace_id]
        assert query.attributes["larder.view"] == f"{PKG}.ItemsView"
        assert query.attributes["larder.view.query"] == method
        assert query.attributes["larder.view.table"] == "items"
        assert query.attributes["larder.view.store"] == "sqlite"
        assert query.attributes["larder.view.rows"] == rows_sent
    for trace_id in (TRACE, "8" * 32):
        streamed = next(s for s in spans if s.kind == "SERVER" and s.trace_id == trace_id)
        assert streamed.attributes["larder.messages.sent"] == 3
