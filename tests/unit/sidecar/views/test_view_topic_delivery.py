"""Views fed from topics: records become rows through the view's delivery, the Kafka
offset is committed only after the rows and the partition's offset are stored, a record
the store already has is skipped (redelivery after a crash), bad records are rejected and
counted. The Kafka client is eventing's fake (`eventing/fakes.py`); the store is real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import any_pb2
from larder_sidecar.eventing.processing import Backoff, Outbox
from larder_sidecar.eventing.settings import KafkaSettings
from larder_sidecar.model import UserFunctionModel, build_model
from larder_sidecar.views.delivery import ViewDelivery
from larder_sidecar.views.handle import Answer, HandleClient
from larder_sidecar.views.metrics import ViewMetrics
from larder_sidecar.views.sqlite_store import SqliteViewStore
from larder_sidecar.views.store import MemoryViewStore, ViewStore
from larder_sidecar.views.topic_source import (
    TopicRecordHandler,
    TopicSources,
    ViewTopicCounters,
    ViewTopicMetrics,
    topic_feeds,
)
from prometheus_client import CollectorRegistry

from ..eventing.fakes import FakeConsumer, FakePublisher, FakeRecord, Signal
from .quotes import QUOTES, VOLUMES, compile_quotes, quotes_spec

TRADES = "view-trades"
QUOTE_TOPIC = "view-quotes"


@pytest.fixture(scope="module")
def quotes(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, bytes]:
    return compile_quotes(tmp_path_factory.mktemp("quotes"))


@pytest.fixture(scope="module")
def model(quotes: tuple[ModuleType, bytes]) -> UserFunctionModel:
    return build_model(quotes_spec(quotes[1]), {(0, 7)})


class VolumeHandler(HandleClient):
    """The volumes' update handler, in process: adds a trade's quantity to the previous
    row (a cancellation subtracts). Records every call; waits for `gate` while closed."""

    def __init__(self, pb: ModuleType) -> None:
        self.pb = pb
        self.calls: list[tuple[str, str, int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.metadata: list[dict[str, str]] = []

    async def receive(self, event: Any, entity_id: str) -> Answer:
        await self.gate.wait()
        name = event.payload.type_url.rpartition("/")[2]
        change = (self.pb.Traded if name.endswith("Traded") else self.pb.Cancelled).FromString(
            event.payload.value
        )
        self.calls.append((entity_id, event.command_name, change.quantity))
        self.metadata.append({e.key: e.string_value for e in event.metadata.entries})
        row = self.pb.Volume(symbol=entity_id)
        if event.HasField("by_subject_lookup_result"):
            row.MergeFromString(event.by_subject_lookup_result.value.value)
        row.total += change.quantity if event.command_name == "OnTraded" else -change.quantity
        row.trades += 1
        packed = any_pb2.Any()
        packed.Pack(row)
        return Answer(entity_id, row=packed)


def ce(type_name: str, subject: str | None, content_type: str = "application/protobuf") -> list[
    tuple[str, bytes]
]:
    headers = [
        ("ce-specversion", b"1.0"),
        ("ce-type", type_name.encode()),
        ("ce-datacontenttype", content_type.encode()),
        ("ce-id", b"id"),
        ("ce-source", b"/tests"),
    ]
    if subject is not None:
        headers.append(("ce_subject", subject.encode()))  # the Kafka binding's spelling
    return headers


class Clients:
    """One fake Kafka consumer per consumer group (`make_client` for `TopicSources`)."""

    def __init__(self) -> None:
        self.by_group: dict[str, FakeConsumer] = {}

    def __call__(self, config: dict[str, Any]) -> FakeConsumer:
        client = self.by_group[config["group.id"]] = FakeConsumer(Signal())
        return client(config)


@dataclass
class Running:
    pb: ModuleType
    store: ViewStore
    delivery: ViewDelivery
    handler: VolumeHandler
    clients: Clients
    sources: TopicSources
    registry: CollectorRegistry
    records: list[FakeRecord] = field(default_factory=list)

    @property
    def client(self) -> FakeConsumer:
        """The volumes view's consumer."""
        return self.clients.by_group["volumes"]

    @property
    def quotes_client(self) -> FakeConsumer:
        return self.clients.by_group[QUOTES]

    def traded(self, symbol: str | None, quantity: int, offset: int, partition: int = 0,
               *, cancelled: bool = False) -> FakeRecord:
        message = (self.pb.Cancelled if cancelled else self.pb.Traded)(quantity=quantity)
        name = "larder.viewtopic." + ("Cancelled" if cancelled else "Traded")
        return FakeRecord(message.SerializeToString(), ce(name, symbol), symbol.encode()
                          if symbol else None, TRADES, partition, offset)

    async def committed(self, topic: str, partition: int, offset: int) -> None:
        client = self.quotes_client if topic == QUOTE_TOPIC else self.client
        await client.signal.until(lambda: (client.last_commit(topic, partition) or 0) >= offset)

    async def volume(self, symbol: str) -> tuple[int, int] | None:
        schema = self.delivery.tables[(VOLUMES, "volumes")]
        row = await self.store.row(schema, symbol)
        if row is None:
            return None
        v = self.pb.Volume.FromString(row)
        return v.total, v.trades

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


async def _run(
    pb: ModuleType, model: UserFunctionModel, store: ViewStore, handler: VolumeHandler
) -> Running:
    registry = CollectorRegistry()
    delivery = ViewDelivery(
        model.views, store, handler, ViewMetrics(registry),
        load_value=lambda pid: None,  # type: ignore[arg-type,return-value]  # never called
    )
    await delivery.start()
    clients = Clients()
    sources = TopicSources(
        topic_feeds(model.views), delivery, KafkaSettings(bootstrap_servers="unused:1"),
        registry, make_client=clients,
    )
    await sources.start()
    return Running(pb, store, delivery, handler, clients, sources, registry)


@pytest.fixture
async def running(
    quotes: tuple[ModuleType, bytes], model: UserFunctionModel
) -> AsyncIterator[Running]:
    r = await _run(quotes[0], model, MemoryViewStore(), VolumeHandler(quotes[0]))
    yield r
    await r.sources.stop()
    await r.delivery.close()


async def test_records_become_rows_and_are_committed_only_once_stored(running: Running) -> None:
    r = running
    r.handler.gate.clear()
    r.client.feed([r.traded("ACME", 5, 0), r.traded("ACME", 3, 1), r.traded("INIT", 7, 2)])
    await asyncio.sleep(0.5)  # two commit rounds: nothing may be committed while held
    assert r.client.last_commit(TRADES, 0) is None
    assert await r.volume("ACME") is None
    r.handler.gate.set()
    await r.committed(TRADES, 0, 3)
    assert await r.volume("ACME") == (8, 2)
    assert await r.volume("INIT") == (7, 1)
    # The update handler got the previous row for the key, and the record's metadata
    # with ce-subject spelled as the protocol spells it.
    assert r.handler.calls == [("ACME", "OnTraded", 5), ("ACME", "OnTraded", 3),
                               ("INIT", "OnTraded", 7)]
    assert r.handler.metadata[0]["ce-subject"] == "ACME"
    assert r.handler.metadata[0]["ce-type"] == "larder.viewtopic.Traded"
    # Two message types of one topic, each to its update method.
    r.client.feed([r.traded("ACME", 2, 3, cancelled=True)])
    await r.committed(TRADES, 0, 4)
    assert await r.volume("ACME") == (6, 3)
    offsets = await r.store.offsets(VOLUMES)
    assert offsets == {f"topic/{TRADES}/0": 4}
    assert r.metric("larder_view_changes_applied_total", view=VOLUMES) == 4
    assert r.metric("larder_view_topic_records_consumed_total", view=VOLUMES,
                    topic=TRADES) == 4
    # The group's lag: the partition's end (6) minus the next offset to commit (4).
    r.client.highs[(TRADES, 0)] = 6

    def lag() -> float | None:
        return r.metric("larder_view_topic_lag", view=VOLUMES, topic=TRADES, partition="0")

    async with asyncio.timeout(5):
        # Read by the consumer thread every 0.5 s, reported every 0.2 s: nothing signals it.
        while lag() != 2:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_offsets_with_gaps_and_partitions_each_apply(running: Running) -> None:
    r = running
    # Kafka offsets have gaps (transaction markers, compaction): "above", not "next".
    r.client.feed([r.traded("A", 1, 3), r.traded("A", 1, 7, partition=1),
                   r.traded("A", 1, 20), r.traded("B", 1, 8, partition=1)])
    await r.committed(TRADES, 0, 21)
    await r.committed(TRADES, 1, 9)
    assert await r.volume("A") == (3, 3)
    assert await r.volume("B") == (1, 1)
    assert await r.store.offsets(VOLUMES) == {f"topic/{TRADES}/0": 21, f"topic/{TRADES}/1": 9}


async def test_a_record_redelivered_after_a_crash_is_applied_once(
    quotes: tuple[ModuleType, bytes], model: UserFunctionModel, tmp_path: Path
) -> None:
    """The store has the rows and the offset, Kafka never got the commit (the sidecar
    died in between): the restarted consumer gets the records again and skips them."""
    pb = quotes[0]
    store = SqliteViewStore(tmp_path / "views.db")
    first = await _run(pb, model, store, VolumeHandler(pb))
    first.client.feed([first.traded("ACME", 5, 10), first.traded("ACME", 3, 11)])
    await first.client.signal.until(lambda: len(first.handler.calls) == 2)
    await first.delivery.idle(5)
    # The crash: no final commit reaches Kafka.
    await first.delivery.close()
    await first.sources.stop()

    handler = VolumeHandler(pb)
    second = await _run(pb, model, SqliteViewStore(tmp_path / "views.db"), handler)
    try:
        second.client.feed([second.traded("ACME", 5, 10), second.traded("ACME", 3, 11),
                            second.traded("ACME", 1, 12)])
        await second.committed(TRADES, 0, 13)
        assert await second.volume("ACME") == (9, 3)
        # Only the new record reached the update handler.
        assert handler.calls == [("ACME", "OnTraded", 1)]
    finally:
        await second.sources.stop()
        await second.delivery.close()


async def test_bad_records_are_skipped_counted_and_the_view_goes_on(running: Running) -> None:
    r = running
    quote = r.pb.Quote(symbol="ACME", price=12)
    r.client.feed([
        r.traded(None, 5, 0),  # no ce-subject
        FakeRecord(b"\xff\xff", ce("larder.viewtopic.Traded", "X"), None, TRADES, 0, 1),
        FakeRecord(b"", ce("larder.viewtopic.Nope", "X"), None, TRADES, 0, 2),
        FakeRecord(quote.SerializeToString(), ce("larder.viewtopic.Quote", "ACME"), None,
                   TRADES, 0, 3),  # a type that does not belong to this topic's view
        r.traded("ACME", 4, 4),
    ])
    await r.committed(TRADES, 0, 5)
    assert await r.volume("ACME") == (4, 1)
    assert await r.volume("X") is None
    assert r.metric("larder_view_topic_records_skipped_total", view=VOLUMES,
                    topic=TRADES) == 4


async def test_a_message_of_the_row_type_is_stored_as_the_row_json_too(running: Running) -> None:
    r = running
    schema = r.delivery.tables[(QUOTES, "quotes")]
    r.quotes_client.feed([
        FakeRecord(r.pb.Quote(symbol="ACME", price=12).SerializeToString(),
                   ce("larder.viewtopic.Quote", "ACME"), b"ACME", QUOTE_TOPIC, 0, 0),
        FakeRecord(b'{"symbol": "INIT", "price": 99}',
                   [("ce-datacontenttype", b"application/json"), ("ce-subject", b"INIT")],
                   b"INIT", QUOTE_TOPIC, 0, 1),
    ])
    await r.committed(QUOTE_TOPIC, 0, 2)
    acme = await r.store.row(schema, "ACME")
    init = await r.store.row(schema, "INIT")
    assert acme is not None and r.pb.Quote.FromString(acme).price == 12
    assert init is not None and r.pb.Quote.FromString(init) == r.pb.Quote(symbol="INIT", price=99)
    assert r.handler.calls == []  # no transform_updates: the update handler is not called


async def test_rejected_records_go_to_the_dead_letter_topic(
    quotes: tuple[ModuleType, bytes], model: UserFunctionModel
) -> None:
    registry = CollectorRegistry()
    delivery = ViewDelivery(
        model.views, MemoryViewStore(), VolumeHandler(quotes[0]), ViewMetrics(registry),
        load_value=lambda pid: None,  # type: ignore[arg-type,return-value]  # never called
    )
    counters = ViewTopicCounters(ViewTopicMetrics(registry), VOLUMES)
    publisher = FakePublisher()
    handler = TopicRecordHandler(
        delivery, Outbox(publisher, "dlq", backoff=Backoff(0, 0), counters=counters), counters
    )
    feed = next(f for f in topic_feeds(model.views) if f.view == VOLUMES)
    record = FakeRecord(b"\xff\xff", ce("larder.viewtopic.Traded", "X"), b"X", TRADES, 0, 9)
    rest = await handler.run(handler.prepare(feed, record))
    assert rest is not None
    await rest
    ((topic, value, key, headers),) = publisher.published
    assert (topic, value, key) == ("dlq", b"\xff\xff", b"X")
    assert headers["larder-error-method"] == f"/{VOLUMES}/OnTraded".encode()
    assert headers["larder-error-source"] == f"{TRADES}[0]@9".encode()
    assert registry.get_sample_value(
        "larder_view_topic_records_dead_lettered_total", {"view": VOLUMES, "topic": TRADES}
    ) == 1


async def test_a_store_in_this_process_reads_the_topics_in_a_group_of_its_own(
    quotes: tuple[ModuleType, bytes], model: UserFunctionModel
) -> None:
    """The memory store holds what this process applied, so each process reads the whole
    topic; shared stores share the view's group across pods and restarts."""
    groups = []
    for per_process in (False, True, True):
        delivery = ViewDelivery(
            model.views, MemoryViewStore(), None, ViewMetrics(CollectorRegistry()),
            load_value=lambda pid: None,  # type: ignore[arg-type,return-value]  # never called
        )
        clients = Clients()
        sources = TopicSources(
            topic_feeds(model.views), delivery, KafkaSettings(bootstrap_servers="unused:1"),
            CollectorRegistry(), per_process=per_process, make_client=clients,
        )
        await sources.start()
        await sources.stop()
        groups.append(sorted(clients.by_group))
    assert groups[0] == [QUOTES, "volumes"]
    assert groups[1] != groups[2]
    for own in groups[1:]:
        assert [g.rpartition("-")[0] for g in own] == [QUOTES, "volumes"]


class CountingStore(MemoryViewStore):
    def __init__(self) -> None:
        super().__init__()
        self.transactions = 0

    async def apply(self, *args: Any, **kwargs: Any) -> bool:
        self.transactions += 1
        return await super().apply(*args, **kwargs)

    async def apply_batch(self, view: str, items: Any) -> list[bool]:
        self.transactions += 1
        return [await MemoryViewStore.apply(self, view, i.pid, i.expected, i.offset, i.changes)
                for i in items]


async def test_records_stored_as_they_come_share_store_transactions(
    quotes: tuple[ModuleType, bytes], model: UserFunctionModel
) -> None:
    """A partition's records are queued to the delivery without waiting for each other
    (their offsets are committed as each is applied), so records that need no update
    handler are stored in batches, in offset order."""
    pb = quotes[0]
    store = CountingStore()
    r = await _run(pb, model, store, VolumeHandler(pb))
    try:
        r.quotes_client.feed([
            FakeRecord(pb.Quote(symbol=f"S{i % 7}", price=i).SerializeToString(),
                       ce("larder.viewtopic.Quote", f"S{i % 7}"), None, QUOTE_TOPIC, 0, i)
            for i in range(200)
        ])
        await r.committed(QUOTE_TOPIC, 0, 200)
        schema = r.delivery.tables[(QUOTES, "quotes")]
        last = await store.row(schema, "S3")
        assert last is not None and pb.Quote.FromString(last).price == max(range(3, 200, 7))
        assert await store.offsets(QUOTES) == {f"topic/{QUOTE_TOPIC}/0": 200}
        assert store.transactions < 200
    finally:
        await r.sources.stop()
        await r.delivery.close()
