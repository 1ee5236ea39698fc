"""The Cassandra view store on the real Cassandra 5: the store contract the memory and
SQLite stores keep (idempotent, ordered offsets; rows and filter columns; rebuilds), the
same rows as the evaluator for queries SAI answers whole, in part or not at all, paging,
a change claimed by a sidecar that died before writing its rows, and two stores racing
for one entity."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import pytest
from cassandra.cluster import Cluster
from google.protobuf.message import Message
from larder_sidecar.journal.base import PersistenceId, StoredPayload
from larder_sidecar.journal.cassandra import CassandraJournal
from larder_sidecar.journal.cassandra_settings import CassandraSettings
from larder_sidecar.views import cassandra_store
from larder_sidecar.views.cassandra_claims import BUCKETS, bucket_of
from larder_sidecar.views.cassandra_store import CassandraViewStore, view_key
from larder_sidecar.views.query import compile_filter
from larder_sidecar.views.store import Applied, RowChange, TableSchema

from tests.infra.cassandra import CassandraServer
from tests.unit.sidecar.views import conftest as view_types
from tests.unit.sidecar.views.conftest import ViewTypes
from tests.unit.sidecar.views.test_view_store import QUERIES, _row, _schema, _select

KEYSPACE = "larder_views_it"

StoreFactory = Callable[[], CassandraViewStore]
types = view_types.types  # the unit tests' messages, compiled once per session


@pytest.fixture
async def stores(cassandra: CassandraServer) -> AsyncIterator[Callable[[], CassandraViewStore]]:
    """New stores on one keyspace; each test uses a view name of its own."""
    settings = CassandraSettings(
        contact_points=tuple(cassandra.contact_points), port=cassandra.port, keyspace=KEYSPACE,
        read_consistency="ONE", write_consistency="ONE", request_timeout=10.0,
    )
    async with AsyncExitStack() as stack:
        cluster = Cluster(list(cassandra.contact_points), port=cassandra.port)
        session = cluster.connect()
        session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        cluster.shutdown()

        def make() -> CassandraViewStore:
            store = CassandraViewStore(settings)
            stack.push_async_callback(store.close)
            return store

        yield make


def _view_schema(types: ViewTypes, view: str, *queries: str) -> TableSchema:
    schema = _schema(types, *queries)
    return TableSchema(view, schema.table, schema.row_type, schema.columns)


def _view() -> str:
    return f"it.View{uuid.uuid4().hex[:8]}"


async def test_offsets_make_apply_idempotent_and_ordered(
    stores: StoreFactory, types: ViewTypes
) -> None:
    view = _view()
    q = "SELECT * FROM customers WHERE name = :customer_name"
    schema = _view_schema(types, view, q)
    store = stores()
    assert await store.open([schema]) == []
    ann = types.message("Customer", customer_id="c1", name="Ann")
    assert await store.apply(view, "cust|c1", 0, 1, [_row(schema, "c1", ann)])
    bob = types.message("Customer", customer_id="c1", name="Bob")
    assert not await store.apply(view, "cust|c1", 0, 1, [_row(schema, "c1", bob)])
    assert not await store.apply(view, "cust|c1", 5, 6, [_row(schema, "c1", bob)])
    assert await store.row(schema, "c1") == ann.SerializeToString()
    assert await store.offsets(view) == {"cust|c1": 1}
    ann_filter = types.message("Filter", customer_name="Ann")
    assert await _select(store, schema, types, q, ann_filter) == ["c1"]
    assert await store.apply(view, "cust|c1", 1, 2, [RowChange(schema, "c1", None)])
    assert await store.row(schema, "c1") is None
    assert await _select(store, schema, types, q, ann_filter) == []
    # A batch: one entity's items in order, another's beside them; a stale one refused.
    ann2, bob2, ann3 = (types.message("Customer", customer_id=i, name=n)
                        for i, n in [("c2", "Ann"), ("c2", "Bob"), ("c3", "Ann")])
    items = [
        Applied("cust|c2", 0, 1, [_row(schema, "c2", ann2)]),
        Applied("cust|c2", 1, 2, [_row(schema, "c2", bob2)]),
        Applied("cust|c3", 0, 1, [_row(schema, "c3", ann3)]),
        Applied("cust|c1", 0, 1, [_row(schema, "c1", ann)]),
    ]
    assert await store.apply_batch(view, items) == [True, True, True, False]
    assert await store.offsets(view) == {"cust|c1": 2, "cust|c2": 2, "cust|c3": 1}
    assert await _select(store, schema, types, q, ann_filter) == ["c3"]


async def test_a_changed_table_is_rebuilt_in_new_tables(
    stores: StoreFactory, types: ViewTypes
) -> None:
    view = _view()
    first = _view_schema(types, view, "SELECT * FROM customers WHERE name = :customer_name")
    store = stores()
    assert await store.open([first]) == []
    ann = types.message("Customer", customer_id="c1", name="Ann", age=30)
    assert await store.apply(view, "cust|c1", 0, 3, [_row(first, "c1", ann)])
    same = stores()
    assert await same.open([first]) == []  # unchanged: kept
    assert await same.offsets(view) == {"cust|c1": 3}
    changed = _view_schema(types, view, "SELECT * FROM customers WHERE age > :min_age")
    rebuilt = stores()
    assert await rebuilt.open([changed]) == [f"{view}/customers"]
    assert await rebuilt.offsets(view) == {}  # delivery replays the journal
    assert await rebuilt.row(changed, "c1") is None


async def test_selects_what_the_evaluator_selects(stores: StoreFactory, types: ViewTypes) -> None:
    """Every query of the SQLite test (pushed down whole, in part, not at all) plus
    ranges on numbers, timestamps and uint64, against the evaluator over random rows."""
    view = _view()
    queries = [
        *QUERIES,
        "SELECT * FROM customers WHERE age > :min_age AND name = :customer_name",
        "SELECT * FROM customers WHERE visits >= 3 AND visits < :min_age",
        "SELECT * FROM customers WHERE age < 2.5 AND score >= -1.5",
        "SELECT * FROM customers WHERE balance = 0 AND active = :active",
        "SELECT * FROM customers WHERE joined < :since AND status = 'SUSPENDED'",
        "SELECT * FROM customers WHERE age = 7.5",
        "SELECT * FROM customers WHERE name = :customer_name AND nickname = :nickname",
    ]
    schema = _view_schema(types, view, *queries)
    store = stores()
    await store.open([schema])
    rng = random.Random(16)
    names = ["Ann", "Bob", "", "Émile", "ann"]
    rows = []
    for i in range(300):
        fields: dict[str, object] = {
            "customer_id": f"c{i:03}", "name": rng.choice(names), "age": rng.randint(-5, 80),
            "active": rng.random() < 0.5, "balance": rng.choice([0.0, -0.0, 1.5, -2.25, 99.0]),
            "avatar": rng.choice([b"", b"\x00", b"ab"]), "visits": rng.choice([0, 3, 2**64 - 1]),
            "status": rng.choice([0, 1, 2]),
        }
        if rng.random() < 0.5:
            fields["score"] = rng.randint(-3, 3)
        row = types.message("Customer", **fields)
        if rng.random() < 0.5:
            row.nickname.value = rng.choice(names)  # type: ignore[attr-defined]
        if rng.random() < 0.5:
            row.joined.seconds = rng.randint(-2, 3)  # type: ignore[attr-defined]
            row.joined.nanos = rng.choice([0, 5])  # type: ignore[attr-defined]
        if rng.random() < 0.6:
            row.address.city = rng.choice(["Paris", "", "Oslo"])  # type: ignore[attr-defined]
        rows.append(row)
    items = [
        Applied(f"cust|c{i}", 0, 1, [_row(schema, f"c{i:03}", row)])
        for i, row in enumerate(rows)
    ]
    assert all(await store.apply_batch(view, items))
    for text in queries:
        checked = types.validate(text)
        matches = compile_filter(checked)
        for _ in range(6):
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
                request.since.seconds = rng.randint(-2, 3)  # type: ignore[attr-defined]
            expected = sorted(r.customer_id for r in rows  # type: ignore[attr-defined]
                              if matches(r, request))
            # Cassandra returns rows in token order, not key order.
            assert sorted(await _select(store, schema, types, text, request)) == expected, text


async def test_a_streamed_query_reads_page_after_page(
    stores: StoreFactory, types: ViewTypes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cassandra_store, "PAGE_ROWS", 7)
    view = _view()
    q = "SELECT * FROM customers WHERE age >= :min_age"
    schema = _view_schema(types, view, q)
    store = stores()
    await store.open([schema])
    items = [
        Applied(f"cust|c{i}", 0, 1, [
            _row(schema, f"c{i:02}", types.message("Customer", customer_id=f"c{i:02}", age=i))
        ])
        for i in range(40)
    ]
    assert all(await store.apply_batch(view, items))
    found = await _select(store, schema, types, q, types.message("Filter", min_age=5))
    assert sorted(found) == [f"c{i:02}" for i in range(5, 40)]
    assert len(found) == len(set(found))


async def test_a_change_claimed_by_a_store_that_died_is_completed_by_the_next(
    stores: StoreFactory, types: ViewTypes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's crash window: the claim (rows kept as the intent) is stored, the rows
    are not. The next store to open completes it from the intent; a store applying the
    entity's next change first completes it too."""
    view = _view()
    q = "SELECT * FROM customers WHERE name = :customer_name"
    schema = _view_schema(types, view, q)
    dying = stores()
    await dying.open([schema])

    async def die(*_args: object) -> None:
        raise RuntimeError("killed between the claim and the rows")

    ann = types.message("Customer", customer_id="c1", name="Ann")
    bob = types.message("Customer", customer_id="c2", name="Bob")
    with monkeypatch.context() as patch:
        patch.setattr(dying, "_write_rows", die)
        with pytest.raises(RuntimeError):
            await dying.apply(view, "cust|c1", 0, 1, [_row(schema, "c1", ann)])
        with pytest.raises(RuntimeError):
            await dying.apply(view, "cust|c2", 0, 1, [_row(schema, "c2", ann)])
    assert await dying.row(schema, "c1") is None
    assert await dying.offsets(view) == {}
    # At open: every pending change is completed.
    restarted = stores()
    await restarted.open([schema])
    assert await restarted.offsets(view) == {"cust|c1": 1, "cust|c2": 1}
    assert await restarted.row(schema, "c1") == ann.SerializeToString()
    # While running: a redelivery of the claimed change finds it pending and completes it
    # (the dying store's own retry).
    with monkeypatch.context() as patch:
        patch.setattr(dying, "_write_rows", die)
        with pytest.raises(RuntimeError):
            await dying.apply(view, "cust|c1", 1, 2, [RowChange(schema, "c1", None)])
    assert not await dying.apply(view, "cust|c1", 1, 2, [RowChange(schema, "c1", None)])
    assert await dying.offsets(view) == {"cust|c1": 2, "cust|c2": 1}
    assert await dying.row(schema, "c1") is None
    # A claim is refused while the change before it is unfinished, even by a caller that
    # expects the right offset: the offset row holds one change's intent, never two.
    with monkeypatch.context() as patch:
        patch.setattr(dying, "_write_rows", die)
        with pytest.raises(RuntimeError):
            await dying.apply(view, "cust|c2", 1, 2, [_row(schema, "c2", bob)])
    bea = types.message("Customer", customer_id="c9", name="Bea")
    assert not await restarted.apply(view, "cust|c2", 2, 3, [_row(schema, "c9", bea)])
    assert await restarted.row(schema, "c2") == bob.SerializeToString()
    assert await restarted.row(schema, "c9") is None
    assert await restarted.apply(view, "cust|c2", 2, 3, [_row(schema, "c9", bea)])
    assert await restarted.offsets(view) == {"cust|c1": 2, "cust|c2": 3}
    assert view_key(view, [schema]).startswith(view + "@")


async def test_two_stores_racing_for_one_entity_apply_each_change_once(
    stores: StoreFactory, types: ViewTypes
) -> None:
    """Two sidecars (say, before and after a hand-off) deliver the same changes of one
    entity: every change is applied exactly once, in order, and the row is the last."""
    view = _view()
    schema = _view_schema(types, view, "SELECT * FROM customers WHERE age > :min_age")
    a, b = stores(), stores()
    await a.open([schema])
    await b.open([schema])

    def change(n: int) -> list[RowChange]:
        return [_row(schema, "c1", types.message("Customer", customer_id="c1", age=n))]

    async def deliver(store: CassandraViewStore) -> list[int]:
        won = []
        for n in range(1, 21):
            while True:
                applied = (await store.offsets(view)).get("cust|c1", 0)
                if applied >= n:
                    break
                if await store.apply(view, "cust|c1", applied, applied + 1, change(applied + 1)):
                    won.append(applied + 1)
                    break
        return won

    won_a, won_b = await asyncio.gather(deliver(a), deliver(b))
    assert sorted(won_a + won_b) == list(range(1, 21))
    assert await a.offsets(view) == {"cust|c1": 20}
    stored = await a.row(schema, "c1")
    assert stored is not None
    row: Message = types.message("Customer")
    row.ParseFromString(stored)
    assert row.age == 20  # type: ignore[attr-defined]


async def test_offset_rows_of_the_two_transaction_scheme_are_taken_over_at_open(
    stores: StoreFactory, types: ViewTypes, cassandra: CassandraServer
) -> None:
    """Offset rows the schemes before buckets left in `view_offsets`: of the two-LWT
    scheme (claim, then complete; no `done`) a completed change counts as done, a
    claimed one is completed from its intent; of the one-LWT scheme a done change counts
    as done, an unfinished one is finished. All move into `view_claims`, and claims go
    on from them."""
    view = _view()
    schema = _view_schema(types, view, "SELECT * FROM customers WHERE name = :customer_name")
    first = stores()
    await first.open([schema])  # creates the tables
    ann = types.message("Customer", customer_id="c2", name="Ann")
    bob = types.message("Customer", customer_id="c4", name="Bob")
    key = view_key(view, [schema])
    cluster = Cluster(list(cassandra.contact_points), port=cassandra.port)
    try:
        session = cluster.connect()
        two_lwt = session.prepare(
            f"INSERT INTO {KEYSPACE}.view_offsets (view_key, pid, applied, pending, ts, intent) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        session.execute(two_lwt, (key, "cust|c1", 3, 0, 10, None))
        session.execute(
            two_lwt, (key, "cust|c2", 1, 2, 20, [(schema.id, "c2", ann.SerializeToString())])
        )
        # As that scheme wrote them: `done` with the write timestamp of its change's
        # claim (c4's claim of change 7 at 40 is unfinished: `done` is change 6's, at 35).
        one_lwt = session.prepare(
            f"INSERT INTO {KEYSPACE}.view_offsets (view_key, pid, applied, done, ts, intent) "
            "VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        )
        session.execute(one_lwt, (key, "cust|c3", 5, 5, 30, None, 30))
        session.execute(
            one_lwt, (key, "cust|c4", 7, 6, 40, [(schema.id, "c4", bob.SerializeToString())], 35)
        )
        # c5: an old row, and a claim row this scheme made meanwhile (a newer change,
        # done): that one stands.
        session.execute(one_lwt, (key, "cust|c5", 2, 2, 50, None, 50))
        session.execute(
            f"INSERT INTO {KEYSPACE}.view_claims (view_key, bucket, pid, applied, done, ts) "
            "VALUES (%s, %s, %s, 4, 4, 60) USING TIMESTAMP 60",
            (key, bucket_of("cust|c5"), "cust|c5"),
        )
    finally:
        cluster.shutdown()
    assert await first.offsets(view) == {"cust|c5": 4}  # only what this scheme claimed
    store = stores()
    await store.open([schema])
    taken = {"cust|c1": 3, "cust|c2": 2, "cust|c3": 5, "cust|c4": 7, "cust|c5": 4}
    assert await store.offsets(view) == taken
    assert await store.row(schema, "c2") == ann.SerializeToString()
    assert await store.row(schema, "c4") == bob.SerializeToString()
    assert await store.apply(view, "cust|c2", 2, 3, [RowChange(schema, "c2", None)])
    assert await store.row(schema, "c2") is None
    # A taken-over offset is the only one: a claim expecting another is refused.
    assert not await store.apply(view, "cust|c3", 4, 5, [RowChange(schema, "c3", None)])
    assert await store.apply(view, "cust|c3", 5, 6, [RowChange(schema, "c3", None)])
    # Taken over once: view_offsets holds none of the view's rows any more.
    again = stores()
    await again.open([schema])
    assert await again.offsets(view) == {**taken, "cust|c2": 3, "cust|c3": 6}


async def test_a_refused_claim_does_not_hold_back_its_bucket(
    stores: StoreFactory, types: ViewTypes
) -> None:
    """One conditional batch claims a wave's changes of one bucket; Cassandra refuses it
    whole when one condition fails. The store sends it again without the refused claims:
    the others are applied, the refused ones are not, and a refused one whose stored
    change is unfinished has it finished."""
    view = _view()
    schema = _view_schema(types, view, "SELECT * FROM customers WHERE name = :customer_name")
    store = stores()
    await store.open([schema])
    # Many entities of one bucket, so one batch carries them all.
    pids = [p for p in (f"cust|{i}" for i in range(400)) if bucket_of(p) == 3][:12]
    assert len(pids) == 12

    def put(pid: str, name: str) -> RowChange:
        return _row(schema, pid, types.message("Customer", customer_id=pid, name=name))

    assert all(await store.apply_batch(view, [Applied(p, 0, 1, [put(p, "a")]) for p in pids]))
    # pids[0]'s offset moved on (another sidecar applied 2 already).
    assert await store.apply(view, pids[0], 1, 2, [put(pids[0], "other")])
    items = [Applied(p, 1, 2, [put(p, "b")]) for p in pids]
    results = await store.apply_batch(view, items)
    assert results == [False] + [True] * 11
    assert await store.row(schema, pids[0]) == put(pids[0], "other").row
    assert await store.row(schema, pids[5]) == put(pids[5], "b").row
    offsets = await store.offsets(view)
    assert {p: offsets[p] for p in pids} == dict.fromkeys(pids, 2)


async def test_a_batch_claimed_by_a_store_that_died_is_finished_at_open(
    stores: StoreFactory, types: ViewTypes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery batch over every bucket, claimed, then the store dies before its rows:
    the next store to open writes every claimed change's rows and marks it done."""
    view = _view()
    schema = _view_schema(types, view, "SELECT * FROM customers WHERE name = :customer_name")
    dying = stores()
    await dying.open([schema])

    async def die(*_args: object) -> None:
        raise RuntimeError("killed between the claims and the rows")

    pids = [f"cust|{i}" for i in range(100)]
    assert {bucket_of(p) for p in pids} == set(range(BUCKETS))

    def put(pid: str) -> RowChange:
        return _row(schema, pid, types.message("Customer", customer_id=pid, name=pid))

    with monkeypatch.context() as patch:
        patch.setattr(dying, "_write_rows", die)
        with pytest.raises(RuntimeError):
            await dying.apply_batch(view, [Applied(p, 0, 1, [put(p)]) for p in pids])
    assert await dying.offsets(view) == {}
    restarted = stores()
    await restarted.open([schema])
    assert await restarted.offsets(view) == dict.fromkeys(pids, 1)
    for p in pids[::7]:
        assert await restarted.row(schema, p) == put(p).row


async def test_a_store_given_the_journal_shares_its_session(
    cassandra: CassandraServer, types: ViewTypes
) -> None:
    """In a sidecar the view store runs on the journal's session (one connection pool to
    Cassandra, not two); closing the store leaves the journal's session open."""
    settings = CassandraSettings(
        contact_points=tuple(cassandra.contact_points), port=cassandra.port, keyspace=KEYSPACE,
        read_consistency="ONE", write_consistency="ONE", request_timeout=10.0,
    )
    journal = CassandraJournal(settings)
    await journal.start()
    try:
        view = _view()
        schema = _view_schema(types, view, "SELECT * FROM customers WHERE name = :customer_name")
        store = CassandraViewStore(settings, journal)
        await store.open([schema])
        assert store._session is journal.connection()[1]
        ann = types.message("Customer", customer_id="c1", name="Ann")
        assert await store.apply(view, "cust|c1", 0, 1, [_row(schema, "c1", ann)])
        assert await store.row(schema, "c1") == ann.SerializeToString()
        await store.close()
        pid = PersistenceId(f"items|{uuid.uuid4().hex}")
        assert await journal.put_value(pid, 0, StoredPayload("type.googleapis.com/x", b"v")) == 1
    finally:
        await journal.close()


async def test_a_claim_after_a_refused_one_of_its_entity_is_not_sent(
    stores: StoreFactory, types: ViewTypes
) -> None:
    """The store contract: an item after a refused one of the same entity is refused,
    though its expected offset is the stored one (delivery may have made its rows from
    the refused one's); the other entities' items are applied."""
    view = _view()
    schema = _view_schema(types, view, "SELECT * FROM customers WHERE name = :customer_name")
    store = stores()
    await store.open([schema])

    def put(key: str, name: str) -> RowChange:
        return _row(schema, key, types.message("Customer", customer_id=key, name=name))

    assert await store.apply(view, "cust|a", 0, 1, [put("a", "theirs")])
    items = [
        Applied("cust|a", 0, 1, [put("a", "mine 1")]),
        Applied("cust|a", 1, 2, [put("a", "mine 2")]),
        Applied("cust|b", 0, 1, [put("b", "b")]),
        Applied("cust|b", 1, 2, [put("b", "b2")]),
    ]
    assert await store.apply_batch(view, items) == [False, False, True, True]
    assert await store.offsets(view) == {"cust|a": 1, "cust|b": 2}
    assert await store.row(schema, "a") == put("a", "theirs").row
    assert await store.row(schema, "b") == put("b", "b2").row
