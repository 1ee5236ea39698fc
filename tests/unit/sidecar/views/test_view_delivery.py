"""Delivery: committed changes become rows once, in order per entity, also after a crash
between the journal write and the view update (catch-up), and through update handlers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from larder_sidecar.invoke import InvokeError
from larder_sidecar.journal.base import PersistenceId, StoredPayload
from larder_sidecar.journal.memory import MemoryJournal
from larder_sidecar.journal.sqlite import SqliteJournal
from larder_sidecar.model import UserFunctionModel, build_model
from larder_sidecar.views.catchup import SqliteChangeSource
from larder_sidecar.views.delivery import BATCH, READS_IN_FLIGHT, ViewDelivery
from larder_sidecar.views.feed import EventsAppended, FeedingJournal, ValueChanged
from larder_sidecar.views.handle import Answer, HandleClient, HandleFailed
from larder_sidecar.views.metrics import ViewMetrics
from larder_sidecar.views.queries import ViewQueries
from larder_sidecar.views.sqlite_store import SqliteViewStore
from larder_sidecar.views.store import Applied, MemoryViewStore, RowChange, ViewStore
from prometheus_client import CollectorRegistry

from .shop import PACKAGE, compile_shop, shop_spec

ITEMS = f"{PACKAGE}.ItemsView"
BALANCES = f"{PACKAGE}.BalancesView"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, bytes]:
    return compile_shop(tmp_path_factory.mktemp("shop"))


@pytest.fixture(scope="module")
def model(shop: tuple[ModuleType, bytes]) -> UserFunctionModel:
    return build_model(shop_spec(shop[1]), {(0, 7)})


class SummingHandler(HandleClient):
    """The accounts' update handler, in process: adds each deposit to the previous row.
    Records what it was given; fails the first `failures` calls."""

    def __init__(self, pb: ModuleType, failures: int = 0) -> None:
        self.pb = pb
        self.failures = failures
        self.seen: list[tuple[str, int, int | None]] = []

    async def receive(self, event: Any, entity_id: str) -> Answer:
        if self.failures:
            self.failures -= 1
            raise HandleFailed("the user function is restarting")
        deposit = self.pb.Deposited.FromString(event.payload.value)
        lookup = event.by_subject_lookup_result
        previous = self.pb.Balance.FromString(lookup.value.value) if lookup.HasField(
            "value") else None
        self.seen.append((entity_id, deposit.amount, previous.total if previous else None))
        row = self.pb.Balance(account_id=entity_id, deposits=1, total=deposit.amount)
        if previous is not None:
            row.total += previous.total
            row.deposits += previous.deposits
        packed = any_pb2.Any()
        packed.Pack(row)
        return Answer(entity_id, row=packed)


def _delivery(model: UserFunctionModel, store: ViewStore, journal: Any, handler: Any,
              source: Any = None) -> tuple[ViewDelivery, ViewQueries]:
    metrics = ViewMetrics(CollectorRegistry())
    delivery = ViewDelivery(model.views, store, handler, metrics,
                            load_value=journal.load_value, source=source)
    return delivery, ViewQueries(model.views, delivery.tables, store, metrics)


def _item(pb: ModuleType, item_id: str, name: str, price: int, category: str) -> StoredPayload:
    msg = pb.Item(item_id=item_id, name=name, price=price, category=category)
    return StoredPayload(f"type.googleapis.com/{PACKAGE}.Item", msg.SerializeToString())


def _deposit(pb: ModuleType, amount: int) -> StoredPayload:
    return StoredPayload(f"type.googleapis.com/{PACKAGE}.Deposited",
                         pb.Deposited(amount=amount).SerializeToString())


async def _rows(queries: ViewQueries, path: str, request: Message, cls: Any) -> list[Any]:
    return [cls.FromString(r) async for r in queries.stream(path, request)]


@pytest.fixture
async def memory(model: UserFunctionModel, shop: tuple[ModuleType, bytes]
                 ) -> AsyncIterator[tuple[ViewDelivery, ViewQueries, FeedingJournal, Any]]:
    journal = MemoryJournal()
    handler = SummingHandler(shop[0])
    delivery, queries = _delivery(model, MemoryViewStore(), journal, handler)
    await delivery.start()
    yield delivery, queries, FeedingJournal(journal, delivery.publish), handler
    await delivery.close()


async def test_value_entity_states_become_rows_and_deletes_remove_them(
    memory: tuple[ViewDelivery, ViewQueries, FeedingJournal, Any], shop: tuple[ModuleType, bytes]
) -> None:
    delivery, queries, journal, _ = memory
    pb = shop[0]
    a, b = PersistenceId("items|a"), PersistenceId("items|b")
    assert await journal.put_value(a, 0, _item(pb, "a", "apple", 3, "fruit")) == 1
    await journal.put_value(b, 0, _item(pb, "b", "bean", 1, "veg"))
    await journal.put_value(a, 1, _item(pb, "a", "apple", 2, "fruit"))
    assert await delivery.idle(5)
    by_category = f"/{ITEMS}/ByCategoryQuery"
    fruit = await _rows(queries, by_category, pb.ByCategory(category="fruit"), pb.Item)
    assert [(i.item_id, i.price) for i in fruit] == [("a", 2)]
    # The same state feeds a second table.
    below = await _rows(queries, f"/{ITEMS}/PricesBelow", pb.PriceBelow(max_price=3), pb.Item)
    assert [(i.item_id, i.price) for i in below] == [("a", 2), ("b", 1)]
    await journal.put_value(a, 2, None)
    assert await delivery.idle(5)
    assert await _rows(queries, by_category, pb.ByCategory(category="fruit"), pb.Item) == []
    below = await _rows(queries, f"/{ITEMS}/PricesBelow", pb.PriceBelow(max_price=3), pb.Item)
    assert [i.item_id for i in below] == ["b"]
    assert len(await _rows(queries, by_category, pb.ByCategory(category="veg"), pb.Item)) == 1


async def test_a_change_delivered_twice_is_applied_once(
    memory: tuple[ViewDelivery, ViewQueries, FeedingJournal, Any], shop: tuple[ModuleType, bytes]
) -> None:
    delivery, queries, journal, handler = memory
    pb = shop[0]
    pid = PersistenceId("accounts|acc")
    await journal.append(pid, 0, [_deposit(pb, 5), _deposit(pb, 7)])
    assert await delivery.idle(5)
    # Published again (as catch-up after a crash would): the offsets skip it.
    delivery.publish(EventsAppended(pid, 1, (_deposit(pb, 5), _deposit(pb, 7))))
    delivery.publish(ValueChanged(PersistenceId("items|zzz"), 0, None))
    assert await delivery.idle(5)
    rows = await _rows(queries, f"/{BALANCES}/AtLeast", pb.MinTotal(min=0), pb.Balance)
    assert [(r.account_id, r.total, r.deposits) for r in rows] == [("acc", 12, 2)]
    # The handler saw each event once, with the row as it stood before it.
    assert handler.seen == [("acc", 5, None), ("acc", 7, 5)]


async def test_a_failing_update_handler_is_retried_and_nothing_is_skipped(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes]
) -> None:
    pb = shop[0]
    handler = SummingHandler(pb, failures=2)
    journal = MemoryJournal()
    delivery, queries = _delivery(model, MemoryViewStore(), journal, handler)
    await delivery.start()
    try:
        feed = FeedingJournal(journal, delivery.publish)
        await feed.append(PersistenceId("accounts|x"), 0, [_deposit(pb, 4)])
        await feed.append(PersistenceId("accounts|x"), 1, [_deposit(pb, 6)])
        assert await delivery.idle(10)
        rows = await _rows(queries, f"/{BALANCES}/AtLeast", pb.MinTotal(min=10), pb.Balance)
        assert [(r.total, r.deposits) for r in rows] == [(10, 2)]
        assert handler.failures == 0
    finally:
        await delivery.close()


async def test_catch_up_applies_what_was_committed_while_no_view_update_ran(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes], tmp_path: Path
) -> None:
    """The crash between the journal write and the view update: the journal holds writes
    the view never saw (written here without the feed); the next start applies them."""
    pb = shop[0]
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    await journal.start()
    try:
        handler = SummingHandler(pb)
        first, _ = _delivery(model, SqliteViewStore(tmp_path / "views.db"), journal, handler,
                             SqliteChangeSource(path))
        await first.start()
        feed = FeedingJournal(journal, first.publish)
        await feed.put_value(PersistenceId("items|a"), 0, _item(pb, "a", "apple", 3, "fruit"))
        await feed.append(PersistenceId("accounts|acc"), 0, [_deposit(pb, 1)])
        assert await first.idle(5)
        await first.close()
        # Committed, never published: the sidecar "crashed" after the journal write.
        await journal.put_value(PersistenceId("items|a"), 1, _item(pb, "a", "apricot", 3, "fruit"))
        await journal.put_value(PersistenceId("items|b"), 0, _item(pb, "b", "bean", 1, "veg"))
        await journal.append(PersistenceId("accounts|acc"), 1, [_deposit(pb, 2), _deposit(pb, 3)])
        second, queries = _delivery(model, SqliteViewStore(tmp_path / "views.db"), journal,
                                    handler, SqliteChangeSource(path))
        await second.start()
        try:
            assert await second.idle(5)
            items = await _rows(queries, f"/{ITEMS}/ByCategoryQuery",
                                pb.ByCategory(category="fruit"), pb.Item)
            assert [i.name for i in items] == ["apricot"]
            one = pb.Item.FromString(await queries.unary(f"/{ITEMS}/OneByName",
                                                         pb.ByName(name="bean")))
            assert one.item_id == "b"
            rows = await _rows(queries, f"/{BALANCES}/AtLeast", pb.MinTotal(), pb.Balance)
            assert [(r.total, r.deposits) for r in rows] == [(6, 3)]
            assert handler.seen == [("acc", 1, None), ("acc", 2, 1), ("acc", 3, 3)]
        finally:
            await second.close()
    finally:
        await journal.close()


async def test_an_event_after_a_gap_waits_for_the_events_before_it(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes], tmp_path: Path
) -> None:
    pb = shop[0]
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    await journal.start()
    handler = SummingHandler(pb)
    delivery, _ = _delivery(model, MemoryViewStore(), journal, handler, SqliteChangeSource(path))
    await delivery.start()
    try:
        pid = PersistenceId("accounts|g")
        await journal.append(pid, 0, [_deposit(pb, 1), _deposit(pb, 2)])  # never published
        await journal.append(pid, 2, [_deposit(pb, 3)])
        delivery.publish(EventsAppended(pid, 3, (_deposit(pb, 3),)))
        assert await delivery.idle(5)
        assert handler.seen == [("g", 1, None), ("g", 2, 1), ("g", 3, 3)]
    finally:
        await delivery.close()
        await journal.close()


async def test_queries_reply_as_their_selection_says(
    memory: tuple[ViewDelivery, ViewQueries, FeedingJournal, Any], shop: tuple[ModuleType, bytes]
) -> None:
    delivery, queries, journal, _ = memory
    pb = shop[0]
    for i, (name, price, category) in enumerate(
        [("apple", 3, "fruit"), ("bean", 1, "veg"), ("cherry", 5, "fruit"), ("date", 2, "")]
    ):
        await journal.put_value(PersistenceId(f"items|i{i}"), 0,
                                _item(pb, f"i{i}", name, price, category))
    assert await delivery.idle(5)
    cheaper = pb.ItemList.FromString(
        await queries.unary(f"/{ITEMS}/Cheaper", pb.PriceBelow(max_price=4)))
    assert [i.name for i in cheaper.items] == ["apple", "bean", "date"]
    with pytest.raises(InvokeError) as info:
        await queries.unary(f"/{ITEMS}/OneByName", pb.ByName(name="kiwi"))
    assert info.value.code is grpc.StatusCode.NOT_FOUND
    names = await _rows(queries, f"/{ITEMS}/Names", pb.ByCategory(category="fruit"),
                        pb.NameInCategory)
    assert [(n.name, n.category) for n in names] == [("apple", "fruit"), ("cherry", "fruit")]


def _remove(directory: Path, pattern: str) -> None:
    for path in directory.glob(pattern):
        path.unlink()


class GatedHandler(SummingHandler):
    """Holds every update until `gate` opens: the view falls behind its journal."""

    def __init__(self, pb: ModuleType) -> None:
        super().__init__(pb)
        self.gate = asyncio.Event()

    async def receive(self, event: Any, entity_id: str) -> Answer:
        await self.gate.wait()
        return await super().receive(event, entity_id)


async def test_a_view_far_behind_keeps_a_bounded_queue_and_reads_the_rest_back(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes], tmp_path: Path
) -> None:
    pb = shop[0]
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    await journal.start()
    handler = GatedHandler(pb)
    metrics = ViewMetrics(CollectorRegistry())
    store = MemoryViewStore()
    delivery = ViewDelivery(model.views, store, handler, metrics, load_value=journal.load_value,
                            source=SqliteChangeSource(path), max_pending=3)
    queries = ViewQueries(model.views, delivery.tables, store, metrics)
    await delivery.start()
    try:
        feed = FeedingJournal(journal, delivery.publish)
        for i in range(20):
            await feed.append(PersistenceId(f"accounts|a{i % 2}"), i // 2, [_deposit(pb, i)])
            await feed.put_value(PersistenceId(f"items|i{i}"), 0, _item(pb, f"i{i}", "n", i, "c"))
        assert max(len(s.pending) for s in delivery._views.values()) <= 3
        assert metrics.changes_deferred.labels(BALANCES)._value.get() > 0
        handler.gate.set()
        assert await delivery.idle(10)
        rows = await _rows(queries, f"/{BALANCES}/AtLeast", pb.MinTotal(), pb.Balance)
        assert [(r.account_id, r.total, r.deposits) for r in rows] == [
            ("a0", sum(range(0, 20, 2)), 10), ("a1", sum(range(1, 20, 2)), 10)
        ]
        # Each account's events reached the handler once each, in order.
        for account in ("a0", "a1"):
            amounts = [amount for who, amount, _ in handler.seen if who == account]
            assert amounts == list(range(0 if account == "a0" else 1, 20, 2))
        items = await _rows(queries, f"/{ITEMS}/ByCategoryQuery", pb.ByCategory(category="c"),
                            pb.Item)
        assert sorted(i.price for i in items) == list(range(20))
    finally:
        await delivery.close()
        await journal.close()


async def test_a_view_is_rebuilt_from_the_journal_from_scratch(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes], tmp_path: Path
) -> None:
    """The view's file gone (or its table emptied because its queries changed): the next
    start replays every entity from the journal."""
    pb = shop[0]
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    await journal.start()
    try:
        first, _ = _delivery(model, SqliteViewStore(tmp_path / "views.db"), journal,
                             SummingHandler(pb), SqliteChangeSource(path))
        await first.start()
        feed = FeedingJournal(journal, first.publish)
        await feed.put_value(PersistenceId("items|a"), 0, _item(pb, "a", "apple", 3, "fruit"))
        await feed.put_value(PersistenceId("items|a"), 1, _item(pb, "a", "apple", 4, "fruit"))
        await feed.append(PersistenceId("accounts|x"), 0, [_deposit(pb, 1), _deposit(pb, 2)])
        assert await first.idle(5)
        await first.close()
        await asyncio.to_thread(_remove, tmp_path, "views.db*")
        handler = SummingHandler(pb)
        second, queries = _delivery(model, SqliteViewStore(tmp_path / "views.db"), journal,
                                    handler, SqliteChangeSource(path))
        await second.start()
        try:
            assert await second.idle(5)
            items = await _rows(queries, f"/{ITEMS}/ByCategoryQuery",
                                pb.ByCategory(category="fruit"), pb.Item)
            assert [(i.item_id, i.price) for i in items] == [("a", 4)]
            rows = await _rows(queries, f"/{BALANCES}/AtLeast", pb.MinTotal(), pb.Balance)
            assert [(r.total, r.deposits) for r in rows] == [(3, 2)]
            assert handler.seen == [("x", 1, None), ("x", 2, 1)]
        finally:
            await second.close()
    finally:
        await journal.close()


class RacedStore(SqliteViewStore):
    """A store another sidecar shares: just before the first batch lands, the other one
    applies `raced` (view, pid, row change) at offset 1."""

    def __init__(self, path: Path, raced: tuple[str, str, RowChange]) -> None:
        super().__init__(path)
        self.raced: tuple[str, str, RowChange] | None = raced
        self.batches = 0
        self.items: list[tuple[str, int, int]] = []

    async def apply_batch(self, view: str, items: Sequence[Applied]) -> list[bool]:
        if self.raced is not None:
            raced_view, pid, change = self.raced
            self.raced = None
            other = Applied(pid, 0, 1, [change])
            assert await super().apply_batch(raced_view, [other]) == [True]
        self.batches += 1
        self.items += [(i.pid, i.expected, i.offset) for i in items]
        return await super().apply_batch(view, items)


async def test_queued_value_changes_are_applied_in_batches_in_order(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes], tmp_path: Path
) -> None:
    """Changes waiting when the worker starts go in one transaction, a value entity's
    revisions as its last one; one whose offset another sidecar moved meanwhile is left
    out, and applied again on its own."""
    pb = shop[0]
    other = _item(pb, "c", "cherry-by-other", 6, "fruit")
    journal = MemoryJournal()
    probe, _ = _delivery(model, MemoryViewStore(), journal, None)
    table = probe.tables[(ITEMS, "items")]
    change = RowChange(table, "c", other.value, table.values(pb.Item.FromString(other.value)))
    store = RacedStore(tmp_path / "views.db", (ITEMS, "items|c", change))
    delivery, queries = _delivery(model, store, journal, None)
    # Before start: queued, as changes published faster than the view applies them.
    feed = FeedingJournal(journal, delivery.publish)
    for revision, price in enumerate([1, 2, 3]):
        await feed.put_value(PersistenceId("items|a"), revision,
                             _item(pb, "a", "apple", price, "fruit"))
    await feed.put_value(PersistenceId("items|b"), 0, _item(pb, "b", "bean", 1, "fruit"))
    await feed.put_value(PersistenceId("items|b"), 1, None)
    await feed.put_value(PersistenceId("items|c"), 0, _item(pb, "c", "cherry", 5, "fruit"))
    await feed.put_value(PersistenceId("items|c"), 1, _item(pb, "c", "cherry", 7, "fruit"))
    await delivery.start()
    try:
        assert await delivery.idle(5)
        rows = await _rows(queries, f"/{ITEMS}/ByCategoryQuery", pb.ByCategory(category="fruit"),
                           pb.Item)
        assert [(r.item_id, r.price) for r in rows] == [("a", 3), ("c", 7)]
        assert await store.offsets(ITEMS) == {"items|a": 3, "items|b": 2, "items|c": 2}
        # Each entity's queued revisions went as its last one. c's revision 1 was the
        # other sidecar's: the batch's c (expecting 0) was refused and applied again alone.
        assert store.items == [
            ("items|a", 0, 3), ("items|b", 0, 2), ("items|c", 0, 2), ("items|c", 1, 2)
        ]
        assert store.batches == 2
    finally:
        await delivery.close()


async def test_a_unary_reply_of_all_rows_is_capped_with_a_clear_error(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    pb = shop[0]
    journal = MemoryJournal()
    metrics = ViewMetrics(CollectorRegistry())
    store = MemoryViewStore()
    delivery = ViewDelivery(model.views, store, None, metrics, load_value=journal.load_value)
    small = ViewQueries(model.views, delivery.tables, store, metrics, max_reply_bytes=100)
    roomy = ViewQueries(model.views, delivery.tables, store, metrics)
    await delivery.start()
    try:
        feed = FeedingJournal(journal, delivery.publish)
        for i in range(5):
            await feed.put_value(PersistenceId(f"items|i{i}"), 0,
                                 _item(pb, f"i{i}", "a-longish-name", i, "c"))
        assert await delivery.idle(5)
        cheaper = f"/{ITEMS}/Cheaper"
        with pytest.raises(InvokeError, match=r"rows of more than 100 bytes") as info:
            await small.unary(cheaper, pb.PriceBelow(max_price=10))
        assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        monkeypatch.setattr("larder_sidecar.views.queries.MAX_UNARY_ROWS", 3)
        with pytest.raises(InvokeError, match=r"more than 3 rows.*returns \(stream"):
            await roomy.unary(cheaper, pb.PriceBelow(max_price=10))
        reply = pb.ItemList.FromString(await roomy.unary(cheaper, pb.PriceBelow(max_price=2)))
        assert [i.item_id for i in reply.items] == ["i0", "i1"]
    finally:
        await delivery.close()


# --- batches: gathering, events and transformed changes --------------------------------


class CountingStore(MemoryViewStore):
    """The memory store, recording every store call as the (pid, expected, offset) of its
    items (`apply` as a call of one) and when it came."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[tuple[str, int, int]]]] = []
        self.times: list[float] = []
        self.refused: list[tuple[str, int, int]] = []
        self._inside = False

    async def apply(
        self, view: str, pid: str, expected: int, offset: int, changes: Sequence[RowChange]
    ) -> bool:
        if not self._inside:
            self.calls.append((view, [(pid, expected, offset)]))
            self.times.append(time.monotonic())
        return await super().apply(view, pid, expected, offset, changes)

    async def apply_batch(self, view: str, items: Sequence[Applied]) -> list[bool]:
        self.calls.append((view, [(i.pid, i.expected, i.offset) for i in items]))
        self.times.append(time.monotonic())
        self._inside = True
        try:
            results = await super().apply_batch(view, items)
        finally:
            self._inside = False
        self.refused += [(i.pid, i.expected, i.offset)
                         for i, ok in zip(items, results, strict=True) if not ok]
        return results

    def of(self, view: str) -> list[list[tuple[str, int, int]]]:
        return [items for v, items in self.calls if v == view]


def _counting(model: UserFunctionModel, handler: Any, *, gather: float = 0.0,
              journal: Any = None, source: Any = None
              ) -> tuple[ViewDelivery, ViewQueries, CountingStore, ViewMetrics]:
    store = CountingStore()
    metrics = ViewMetrics(CollectorRegistry())
    journal = journal or MemoryJournal()
    delivery = ViewDelivery(model.views, store, handler, metrics,
                            load_value=journal.load_value, source=source, gather=gather)
    return delivery, ViewQueries(model.views, delivery.tables, store, metrics), store, metrics


def _put(pb: ModuleType, i: int, revision: int = 1) -> ValueChanged:
    return ValueChanged(PersistenceId(f"items|i{i}"), revision,
                        _item(pb, f"i{i}", f"n{i}", i, "c"))


def _applied(metrics: ViewMetrics, view: str) -> float:
    """`larder_view_changes_applied`: every change, also those merged into one item."""
    (sample, *_) = metrics.changes_applied.labels(view)._child_samples()
    return float(sample.value)


def _lag(metrics: ViewMetrics, view: str) -> float:
    (sample,) = metrics.lag_seconds.labels(view)._child_samples()
    return float(sample.value)


async def test_changes_published_within_the_gather_window_go_in_one_batch(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes]
) -> None:
    pb = shop[0]
    gather = 0.3
    delivery, _, store, metrics = _counting(model, None, gather=gather)
    await delivery.start()
    try:
        first = time.monotonic()
        for i in range(3):
            delivery.publish(_put(pb, i))
            await asyncio.sleep(0.02)  # published one after the other, not at once
        # Gathering: nothing applied yet, and the lag metric counts the time waiting.
        assert store.of(ITEMS) == []
        assert _lag(metrics, ITEMS) >= 0.05
        assert await delivery.idle(5)
        assert store.of(ITEMS) == [[(f"items|i{i}", 0, 1) for i in range(3)]]
        assert store.times[0] - first >= gather - 0.01
        assert _lag(metrics, ITEMS) == 0
    finally:
        await delivery.close()


async def test_a_full_batch_does_not_wait_for_the_gather_and_close_ends_a_gathering(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes]
) -> None:
    pb = shop[0]
    delivery, _, store, _ = _counting(model, None, gather=60)
    await delivery.start()
    try:
        for i in range(BATCH):
            delivery.publish(_put(pb, i))
        assert await delivery.idle(5)
        assert [len(items) for items in store.of(ITEMS)] == [BATCH]
        delivery.publish(_put(pb, 0, 2))
        await asyncio.sleep(0.05)
        assert len(store.of(ITEMS)) == 1  # a lone change gathers...
    finally:
        # ... and the worker gathering is cancelled at once on close.
        await asyncio.wait_for(delivery.close(), 2)


async def test_without_gather_a_change_is_applied_at_once(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes]
) -> None:
    pb = shop[0]
    delivery, _, store, _ = _counting(model, None, gather=0)
    await delivery.start()
    try:
        for i in range(3):
            delivery.publish(_put(pb, i))
            assert await delivery.idle(5)
        assert store.of(ITEMS) == [[(f"items|i{i}", 0, 1)] for i in range(3)]
    finally:
        await delivery.close()


async def test_queued_events_go_in_one_batch_each_made_from_the_row_before_it(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes]
) -> None:
    """An account's events, queued, in one store call with other accounts' events: the
    update handler of each is given the row the batch's earlier events made, not the
    stored one (which the batch has not written yet)."""
    pb = shop[0]
    handler = SummingHandler(pb)
    delivery, queries, store, metrics = _counting(model, handler)
    acc, other = PersistenceId("accounts|acc"), PersistenceId("accounts|other")
    delivery.publish(EventsAppended(acc, 1, (_deposit(pb, 5), _deposit(pb, 7))))
    delivery.publish(EventsAppended(other, 1, (_deposit(pb, 2),)))
    delivery.publish(EventsAppended(acc, 3, (_deposit(pb, 1),)))
    for i in range(20):
        delivery.publish(EventsAppended(PersistenceId(f"accounts|a{i}"), 1,
                                        (_deposit(pb, i),)))
    await delivery.start()
    try:
        assert await delivery.idle(5)
        assert handler.seen[:4] == [("acc", 5, None), ("acc", 7, 5), ("other", 2, None),
                                    ("acc", 1, 12)]
        (batch,) = store.of(BALANCES)
        # One item per entity: acc's three events as one change from 0 to 3, its row
        # as the last event left it (a Cassandra wave per batch, not per event).
        assert batch[:2] == [(acc, 0, 3), (other, 0, 1)]
        assert len(batch) == 22
        assert _applied(metrics, BALANCES) == 24
        rows = await _rows(queries, f"/{BALANCES}/AtLeast", pb.MinTotal(min=3), pb.Balance)
        assert {r.account_id: (r.total, r.deposits) for r in rows}["acc"] == (13, 3)
    finally:
        await delivery.close()


async def test_a_gap_is_filled_from_the_journal_in_the_same_batch(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes], tmp_path: Path
) -> None:
    pb = shop[0]
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    await journal.start()
    handler = SummingHandler(pb)
    delivery, _, store, _ = _counting(model, handler, journal=journal,
                                      source=SqliteChangeSource(path))
    await delivery.start()
    try:
        g, h = PersistenceId("accounts|g"), PersistenceId("accounts|h")
        await journal.append(g, 0, [_deposit(pb, 1), _deposit(pb, 2)])  # never published
        await journal.append(g, 2, [_deposit(pb, 3)])
        await journal.append(h, 0, [_deposit(pb, 4)])
        # Queued together, before the worker runs: one batch.
        delivery.publish(EventsAppended(h, 1, (_deposit(pb, 4),)))
        delivery.publish(EventsAppended(g, 3, (_deposit(pb, 3),)))
        assert await delivery.idle(5)
        assert handler.seen == [("h", 4, None), ("g", 1, None), ("g", 2, 1), ("g", 3, 3)]
        # g's two missing events and the one published, one item from 0 to 3.
        assert store.of(BALANCES) == [[(h, 0, 1), (g, 0, 3)]]
    finally:
        await delivery.close()
        await journal.close()


class RacingStore(CountingStore):
    """Another sidecar on the same store applies `raced` (pid, its row) at offset 1 just
    before the first batch lands."""

    def __init__(self, view: str, pid: str, change: RowChange) -> None:
        super().__init__()
        self.raced: tuple[str, str, RowChange] | None = (view, pid, change)

    async def apply_batch(self, view: str, items: Sequence[Applied]) -> list[bool]:
        if self.raced is not None:
            raced_view, pid, change = self.raced
            self.raced = None
            assert await MemoryViewStore.apply(self, raced_view, pid, 0, 1, [change])
        return await super().apply_batch(view, items)


async def test_a_refused_event_and_the_ones_made_from_it_go_again_one_by_one(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes]
) -> None:
    """The batch's first event of `acc` is refused (another sidecar applied it, with a
    row of its own): the event after it, made from this batch's answer, is refused too,
    and made again alone from the stored row; the other account's event is applied."""
    pb = shop[0]
    handler = SummingHandler(pb)
    probe = ViewDelivery(model.views, MemoryViewStore(), None, ViewMetrics(CollectorRegistry()),
                         load_value=MemoryJournal().load_value)
    schema = probe.tables[(BALANCES, "balances")]
    theirs = pb.Balance(account_id="acc", deposits=1, total=100).SerializeToString()
    store = RacingStore(BALANCES, "accounts|acc", RowChange(schema, "acc", theirs))
    metrics = ViewMetrics(CollectorRegistry())
    delivery = ViewDelivery(model.views, store, handler, metrics,
                            load_value=MemoryJournal().load_value)
    queries = ViewQueries(model.views, delivery.tables, store, metrics)
    acc, other = PersistenceId("accounts|acc"), PersistenceId("accounts|other")
    delivery.publish(EventsAppended(acc, 1, (_deposit(pb, 5), _deposit(pb, 7))))
    delivery.publish(EventsAppended(other, 1, (_deposit(pb, 2),)))
    await delivery.start()
    try:
        assert await delivery.idle(5)
        # acc's two events are one item, refused whole: its second event's row was made
        # from the first's answer here, not from the row the other sidecar stored.
        assert store.refused == [(acc, 0, 2)]
        assert store.of(BALANCES) == [[(acc, 0, 2), (other, 0, 1)], [(acc, 1, 2)]]
        assert handler.seen == [("acc", 5, None), ("acc", 7, 5), ("other", 2, None),
                                ("acc", 7, 100)]
        rows = await _rows(queries, f"/{BALANCES}/AtLeast", pb.MinTotal(min=0), pb.Balance)
        assert [(r.account_id, r.total) for r in rows] == [("acc", 107), ("other", 2)]
    finally:
        await delivery.close()


class FailingOnCall(SummingHandler):
    """Fails its `nth` call (1-based), once."""

    def __init__(self, pb: ModuleType, nth: int) -> None:
        super().__init__(pb)
        self.calls = 0
        self.nth = nth

    async def receive(self, event: Any, entity_id: str) -> Answer:
        self.calls += 1
        if self.calls == self.nth:
            raise HandleFailed("the user function is restarting")
        return await super().receive(event, entity_id)


async def test_a_handler_failing_in_a_batch_retries_it_and_applies_nothing_twice(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes]
) -> None:
    pb = shop[0]
    handler = FailingOnCall(pb, nth=3)
    delivery, queries, store, metrics = _counting(model, handler)
    acc, other = PersistenceId("accounts|acc"), PersistenceId("accounts|other")
    delivery.publish(EventsAppended(acc, 1, (_deposit(pb, 5), _deposit(pb, 7))))
    delivery.publish(EventsAppended(other, 1, (_deposit(pb, 2), _deposit(pb, 3))))
    await delivery.start()
    try:
        assert await delivery.idle(10)
        assert metrics.update_failures.labels(BALANCES)._value.get() == 1
        # Nothing reached the store from the failed attempt; the retry made it all again.
        assert store.of(BALANCES) == [[(acc, 0, 2), (other, 0, 2)]]
        assert handler.seen == [("acc", 5, None), ("acc", 7, 5),
                                ("acc", 5, None), ("acc", 7, 5), ("other", 2, None),
                                ("other", 3, 2)]
        rows = await _rows(queries, f"/{BALANCES}/AtLeast", pb.MinTotal(min=0), pb.Balance)
        assert [(r.account_id, r.total) for r in rows] == [("acc", 12), ("other", 5)]
    finally:
        await delivery.close()


class SharedRowHandler(SummingHandler):
    """Answers every deposit as the row `all` (a row two entities write)."""

    async def receive(self, event: Any, entity_id: str) -> Answer:
        answer = await super().receive(event, entity_id)
        return Answer("all", row=answer.row)


async def test_a_row_written_by_two_entities_ends_the_batch_before_the_second(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes]
) -> None:
    """On Cassandra one wave holds one change per entity, with one timestamp: two
    entities' writes of one row in one batch could land in either order."""
    pb = shop[0]
    handler = SharedRowHandler(pb)
    delivery, _, store, _ = _counting(model, handler)
    a, b = PersistenceId("accounts|a"), PersistenceId("accounts|b")
    delivery.publish(EventsAppended(a, 1, (_deposit(pb, 1), _deposit(pb, 2))))
    delivery.publish(EventsAppended(b, 1, (_deposit(pb, 3),)))
    await delivery.start()
    try:
        assert await delivery.idle(5)
        assert store.of(BALANCES) == [[(a, 0, 2)], [(b, 0, 1)]]
        schema = delivery.tables[(BALANCES, "balances")]
        row = await store.row(schema, "all")
        assert row is not None
        assert pb.Balance.FromString(row).total == 3  # b's, the last one
    finally:
        await delivery.close()


class OverlappingSource(SqliteChangeSource):
    """The SQLite journal's source, counting the event reads in flight at once."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.in_flight = 0
        self.most = 0
        self.reads = 0

    async def events(self, pid: PersistenceId, first: int, last: int) -> Sequence[StoredPayload]:
        self.in_flight += 1
        self.reads += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.005)  # a round trip to a remote journal
            return await super().events(pid, first, last)
        finally:
            self.in_flight -= 1


async def test_catch_up_reads_entities_side_by_side_and_applies_each_once_per_batch(
    model: UserFunctionModel, shop: tuple[ModuleType, bytes], tmp_path: Path
) -> None:
    """Rebuilding a view from the journal: the entities' events are read READS_IN_FLIGHT
    at a time, not one entity after the other, and each entity's events in a batch are
    one store item (on Cassandra one claim, not one wave per event)."""
    pb = shop[0]
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    await journal.start()
    accounts = [PersistenceId(f"accounts|a{i:02}") for i in range(40)]
    for i, pid in enumerate(accounts):
        await journal.append(pid, 0, [_deposit(pb, 1), _deposit(pb, 2), _deposit(pb, i)])
    source = OverlappingSource(path)
    delivery, queries, store, metrics = _counting(model, SummingHandler(pb), journal=journal,
                                                  source=source)
    try:
        await delivery.start()
        assert await delivery.idle(5)
        assert source.reads == 40
        assert source.most == READS_IN_FLIGHT
        (batch,) = store.of(BALANCES)
        assert batch == [(pid, 0, 3) for pid in accounts]
        assert _applied(metrics, BALANCES) == 120
        rows = await _rows(queries, f"/{BALANCES}/AtLeast", pb.MinTotal(min=0), pb.Balance)
        assert {r.account_id: (r.total, r.deposits) for r in rows} == {
            f"a{i:02}": (3 + i, 3) for i in range(40)
        }
    finally:
        await delivery.close()
        await journal.close()
