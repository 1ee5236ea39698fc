"""The view stores: offsets make applying idempotent, rows and filter columns are kept,
a changed table is rebuilt, and SQLite selects exactly what the evaluator selects."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf.message import Message
from larder_sidecar.views.query import FilterColumn, compile_filter
from larder_sidecar.views.sqlite_store import SqliteViewStore
from larder_sidecar.views.store import (
    Applied,
    MemoryViewStore,
    RowChange,
    TableSchema,
    ViewStore,
)

from .conftest import ViewTypes


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ViewStore]:
    made: ViewStore = (
        MemoryViewStore() if request.param == "memory" else SqliteViewStore(tmp_path / "v.db")
    )
    yield made
    await made.close()


def _schema(types: ViewTypes, *queries: str) -> TableSchema:
    columns: dict[tuple[str, ...], FilterColumn] = {}
    for text in queries:
        for c in types.validate(text).filter_columns:
            columns.setdefault(c.path, c)
    return TableSchema("v.View", "customers", types.descriptor("Customer"),
                       tuple(columns[p] for p in sorted(columns)))


def _row(schema: TableSchema, key: str, message: Message) -> RowChange:
    return RowChange(schema, key, message.SerializeToString(), schema.values(message))


async def _select(store: ViewStore, schema: TableSchema, types: ViewTypes, text: str,
                  request: Message) -> list[str]:
    checked = types.validate(text)
    cls = type(types.message("Customer"))
    return [cls.FromString(r).customer_id  # type: ignore[attr-defined]
            async for r in store.select(schema, checked, request)]


async def test_offsets_make_apply_idempotent_and_ordered(
    store: ViewStore, types: ViewTypes
) -> None:
    q = "SELECT * FROM customers WHERE name = :customer_name"
    schema = _schema(types, q)
    await store.open([schema])
    ann = types.message("Customer", customer_id="c1", name="Ann")
    assert await store.apply("v.View", "cust|c1", 0, 1, [_row(schema, "c1", ann)])
    # A redelivery (expects 0 again) and a change out of order (expects 5) write nothing.
    bob = types.message("Customer", customer_id="c1", name="Bob")
    assert not await store.apply("v.View", "cust|c1", 0, 1, [_row(schema, "c1", bob)])
    assert not await store.apply("v.View", "cust|c1", 5, 6, [_row(schema, "c1", bob)])
    assert await store.row(schema, "c1") == ann.SerializeToString()
    assert await store.offsets("v.View") == {"cust|c1": 1}
    found = await _select(store, schema, types, q,
                          types.message("Filter", customer_name="Ann"))
    assert found == ["c1"]
    assert await store.apply("v.View", "cust|c1", 1, 2, [RowChange(schema, "c1", None)])
    assert await store.row(schema, "c1") is None
    assert await _select(store, schema, types, q,
                         types.message("Filter", customer_name="Ann")) == []


async def test_sqlite_rebuilds_a_table_whose_queries_changed(
    types: ViewTypes, tmp_path: Path
) -> None:
    path = tmp_path / "v.db"
    first = _schema(types, "SELECT * FROM customers WHERE name = :customer_name")
    store = SqliteViewStore(path)
    assert await store.open([first]) == []
    ann = types.message("Customer", customer_id="c1", name="Ann", age=30)
    assert await store.apply("v.View", "cust|c1", 0, 3, [_row(first, "c1", ann)])
    await store.close()
    same = SqliteViewStore(path)
    assert await same.open([first]) == []  # unchanged: kept
    assert await same.offsets("v.View") == {"cust|c1": 3}
    await same.close()
    changed = _schema(types, "SELECT * FROM customers WHERE age > :min_age")
    store = SqliteViewStore(path)
    assert await store.open([changed]) == ["v.View/customers"]
    assert await store.offsets("v.View") == {}  # delivery replays the journal
    assert await store.row(changed, "c1") is None
    await store.close()


QUERIES = [
    "SELECT * FROM customers WHERE name = :customer_name",
    "SELECT * FROM customers WHERE name != :customer_name OR age >= :min_age",
    "SELECT * FROM customers WHERE NOT (age < :min_age) AND active = :active",
    "SELECT * FROM customers WHERE score <= :max_score",
    "SELECT * FROM customers WHERE score IS NULL OR nickname IS NOT NULL",
    "SELECT * FROM customers WHERE nickname = :nickname",
    "SELECT * FROM customers WHERE joined >= :since",
    "SELECT * FROM customers WHERE address.city = :city AND address IS NOT NULL",
    "SELECT * FROM customers WHERE status = 'ACTIVE' OR balance > :balance",
    "SELECT * FROM customers WHERE avatar = :avatar OR visits > 3",
]


async def test_sqlite_selects_what_the_evaluator_selects(
    types: ViewTypes, tmp_path: Path
) -> None:
    rng = random.Random(16)
    schema = _schema(types, *QUERIES)
    store = SqliteViewStore(tmp_path / "v.db")
    await store.open([schema])
    names = ["Ann", "Bob", "", "Émile", "ann"]
    rows = []
    for i in range(300):
        fields: dict[str, object] = {
            "customer_id": f"c{i:03}", "name": rng.choice(names), "age": rng.randint(-5, 80),
            "active": rng.random() < 0.5, "balance": rng.choice([0.0, 1.5, -2.25, 99.0]),
            "avatar": rng.choice([b"", b"\x00", b"ab"]), "visits": rng.choice([0, 3, 2**64 - 1]),
            "status": rng.choice([0, 1, 2]),
        }
        if rng.random() < 0.5:
            fields["score"] = rng.randint(-3, 3)
        row = types.message("Customer", **fields)
        if rng.random() < 0.5:
            row.nickname.value = rng.choice(names)  # type: ignore[attr-defined]
        if rng.random() < 0.5:
            row.joined.seconds = rng.randint(0, 3)  # type: ignore[attr-defined]
            row.joined.nanos = rng.choice([0, 5])  # type: ignore[attr-defined]
        if rng.random() < 0.6:
            row.address.city = rng.choice(["Paris", "", "Oslo"])  # type: ignore[attr-defined]
        rows.append(row)
        assert await store.apply("v.View", f"cust|c{i}", 0, 1, [_row(schema, f"c{i:03}", row)])
    for text in QUERIES:
        checked = types.validate(text)
        matches = compile_filter(checked)
        for _ in range(8):
            request = types.message(
                "Filter", customer_name=rng.choice(names), min_age=rng.randint(0, 60),
                active=rng.random() < 0.5, city=rng.choice(["Paris", "", "Oslo"]),
                balance=rng.choice([0.0, 1.5]), avatar=rng.choice([b"", b"ab"]),
            )
            if rng.random() < 0.7:
                request.max_score = rng.randint(-3, 3)  # type: ignore[attr-defined]
            if rng.random() < 0.7:
                request.nickname.value = rng.choice(names)  # type: ignore[attr-defined]
            if rng.random() < 0.7:
                request.since.seconds = rng.randint(0, 3)  # type: ignore[attr-defined]
            expected = sorted(r.customer_id for r in rows  # type: ignore[attr-defined]
                              if matches(r, request))
            assert await _select(store, schema, types, text, request) == expected, text
    await store.close()


async def test_timestamps_far_from_the_epoch_are_stored_and_ordered(
    types: ViewTypes, tmp_path: Path
) -> None:
    q = "SELECT * FROM customers WHERE joined >= :since"
    schema = _schema(types, q)
    store = SqliteViewStore(tmp_path / "v.db")
    await store.open([schema])
    # Year 1, just before the epoch, the epoch, year 9999 (beyond int64 nanoseconds).
    for i, (seconds, nanos) in enumerate(
        [(-62_135_596_800, 0), (-1, 999_999_999), (0, 0), (253_402_300_799, 999_999_999)]
    ):
        row = types.message("Customer", customer_id=f"c{i}")
        row.joined.seconds = seconds  # type: ignore[attr-defined]
        row.joined.nanos = nanos  # type: ignore[attr-defined]
        assert await store.apply("v.View", f"cust|c{i}", 0, 1, [_row(schema, f"c{i}", row)])
    request = types.message("Filter")
    request.since.seconds = -1  # type: ignore[attr-defined]
    request.since.nanos = 999_999_999  # type: ignore[attr-defined]
    assert await _select(store, schema, types, q, request) == ["c1", "c2", "c3"]
    await store.close()


async def test_an_item_after_a_refused_one_of_its_entity_is_refused(
    store: ViewStore, types: ViewTypes
) -> None:
    """Delivery may make an item's rows from the item before it in the batch (an update
    handler's previous row): when that one is refused, so is the next, even though its
    expected offset is the stored one (another sidecar applied the refused change)."""
    schema = _schema(types, "SELECT * FROM customers WHERE name = :customer_name")
    await store.open([schema])

    def put(key: str, name: str) -> RowChange:
        return _row(schema, key, types.message("Customer", customer_id=key, name=name))

    assert await store.apply("v.View", "cust|a", 0, 1, [put("a", "theirs")])
    items = [
        Applied("cust|a", 0, 1, [put("a", "mine 1")]),
        Applied("cust|a", 1, 2, [put("a", "mine 2")]),
        Applied("cust|b", 0, 1, [put("b", "b")]),
    ]
    assert await store.apply_batch("v.View", items) == [False, False, True]
    assert await store.offsets("v.View") == {"cust|a": 1, "cust|b": 1}
    assert await store.row(schema, "a") == put("a", "theirs").row
