"""`larder inspect` on real SQLite journal files: listing, paging, payloads, bad input."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from pathlib import Path

import pytest
from larder_sidecar.journal.base import StoredPayload, persistence_id
from larder_sidecar.journal.sqlite import SqliteJournal

from .conftest import CART_PROTOS, CART_TYPE, DOMAIN, PREFIX, PROFILE_TYPE, Cart, inspect, write


def test_types_are_listed_with_their_kind_and_entity_count(big_journal: Path) -> None:
    shown = inspect("types", "--sqlite", str(big_journal), "--output", "jsonl")
    assert shown.code == 0, shown.err
    assert shown.records() == [
        {"entity_type": PROFILE_TYPE, "kind": "value", "entities": 2},
        {"entity_type": CART_TYPE, "kind": "event-sourced", "entities": 5},
    ]
    table = inspect("types", "--sqlite", str(big_journal)).out.splitlines()
    assert table[0].split() == ["ENTITY", "TYPE", "KIND", "ENTITIES"]
    assert table[2].split() == [CART_TYPE, "event-sourced", "5"]


def test_ids_page_through_every_entity_of_a_type_in_order(big_journal: Path) -> None:
    seen: list[str] = []
    after: list[str] = []
    for _ in range(10):
        page = inspect("ids", CART_TYPE, "--sqlite", str(big_journal), "--limit", "2",
                       "--output", "jsonl", *after).records()
        seen += [r["entity_id"] for r in page if "entity_id" in r]
        assert all(r.get("kind", "event-sourced") == "event-sourced" for r in page)
        if "next_after" not in page[-1]:
            break
        after = ["--after", page[-1]["next_after"]]
    # Ids with '|', spaces and non-ASCII survive the round trip through the pid.
    assert seen == sorted(["alice", "bob", "carol|with a bar", "dave smith", "émile"])


def test_ids_table_prints_the_command_for_the_next_page(big_journal: Path) -> None:
    shown = inspect("ids", CART_TYPE, "--sqlite", str(big_journal), "--limit", "1")
    assert shown.out.splitlines() == [
        "ENTITY ID  KIND", "alice      event-sourced",
        "more: the same command with --after alice",
    ]
    none = inspect("ids", "no.Such", "--sqlite", str(big_journal))
    assert (none.code, none.out) == (0, "(no entities of type no.Such)\n")


def test_ten_thousand_events_with_a_snapshot_page_in_order(
    big_journal: Path, cart_descriptors: Path
) -> None:
    seqs: list[int] = []
    start = "1"
    pages = 0
    while True:
        records = inspect("events", CART_TYPE, "alice", "--sqlite", str(big_journal),
                          "--descriptors", str(cart_descriptors), "--from-seq", start,
                          "--limit", "700", "--output", "jsonl").records()
        pages += 1
        for record in records:
            if "sequence_nr" in record:
                n = record["sequence_nr"]
                assert record["type_url"] == f"{PREFIX}{DOMAIN}.ItemAdded"
                assert record["payload"] == {
                    "item": {"productId": f"p{n}", "name": f"item {n}", "quantity": n}}
                seqs.append(n)
        if "next_from_seq" not in records[-1]:
            break
        start = str(records[-1]["next_from_seq"])
    assert seqs == list(range(1, 10_001))
    assert pages == 15  # 14 full pages of 700 and one of 200

    middle = inspect("events", CART_TYPE, "alice", "--sqlite", str(big_journal),
                     "--from-seq", "9999", "--output", "jsonl").records()
    assert [r.get("sequence_nr") for r in middle] == [9999, 10_000]

    snapshot = inspect("snapshot", CART_TYPE, "alice", "--sqlite", str(big_journal),
                       "--descriptors", str(cart_descriptors), "--output", "jsonl").records()
    assert snapshot == [{
        "entity_type": CART_TYPE, "entity_id": "alice", "last_sequence_nr": 10_000,
        "snapshot": {
            "sequence_nr": 9_000, "written_at": None, "type_url": f"{PREFIX}{DOMAIN}.Cart",
            "payload": {"items": [{"productId": "p", "name": "all", "quantity": 9000}]},
        },
    }]
    entity = inspect("entity", CART_TYPE, "alice", "--sqlite", str(big_journal),
                     "--output", "jsonl").records()
    assert entity == [{"entity_type": CART_TYPE, "entity_id": "alice", "kind": "event-sourced",
                       "last_sequence_nr": 10_000, "snapshot_sequence_nr": 9_000}]


def test_events_table_for_people(big_journal: Path, cart_descriptors: Path) -> None:
    shown = inspect("events", CART_TYPE, "alice", "--sqlite", str(big_journal),
                    "--proto-dir", str(CART_PROTOS), "--limit", "2")
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert lines[0] == f"# {CART_TYPE} 'alice': 10000 events, snapshot at 9000"
    assert lines[1].split() == ["SEQ", "TYPE", "PAYLOAD"]  # SQLite keeps no write time
    assert lines[2].split() == [
        "1", f"{PREFIX}{DOMAIN}.ItemAdded",
        '{"item":{"productId":"p1","name":"item', '1","quantity":1}}']
    assert lines[-1] == "more: the same command with --from-seq 3"
    past = inspect("events", CART_TYPE, "bob", "--sqlite", str(big_journal), "--from-seq", "5")
    assert past.out.splitlines()[-1] == "(no events from 5; the last is 1)"


def test_without_descriptors_payloads_are_base64_with_their_type_url(
    big_journal: Path, cart: Cart
) -> None:
    records = inspect("events", CART_TYPE, "bob", "--sqlite", str(big_journal),
                      "--output", "jsonl").records()
    assert records == [{
        "sequence_nr": 1, "written_at": None, "type_url": f"{PREFIX}{DOMAIN}.ItemAdded",
        "payload_base64": base64.b64encode(cart.item_added(1).value).decode(),
    }]


async def test_payloads_descriptors_do_not_fit_are_said(
    tmp_path: Path, cart: Cart, cart_descriptors: Path
) -> None:
    path = tmp_path / "journal.db"
    events = [StoredPayload(PREFIX + "other.Unknown", b"\x01"),
              StoredPayload(PREFIX + f"{DOMAIN}.ItemAdded", b"\xff\xff"),
              StoredPayload(PREFIX + "google.protobuf.Int32Value", b"\x08\x07")]
    await write(path, [(CART_TYPE, "x", events, None)])
    records = (await asyncio.to_thread(
        inspect, "events", CART_TYPE, "x", "--sqlite", str(path),
        "--descriptors", str(cart_descriptors), "--output", "jsonl")).records()
    assert records[0]["undecoded"] == "no message type other.Unknown in the descriptors"
    assert records[0]["payload_base64"] == "AQ=="
    assert records[1]["undecoded"].startswith(f"not a valid {DOMAIN}.ItemAdded")
    # Well-known types decode from protobuf's own descriptors.
    assert records[2]["payload"] == 7


def test_value_entity_state_and_revision(big_journal: Path) -> None:
    shown = inspect("value", PROFILE_TYPE, "bob", "--sqlite", str(big_journal),
                    "--output", "jsonl")
    assert shown.records() == [{
        "entity_type": PROFILE_TYPE, "entity_id": "bob", "revision": 2, "written_at": None,
        "state": {"type_url": f"{PREFIX}google.protobuf.StringValue", "payload": "bob"},
    }]
    deleted = inspect("value", PROFILE_TYPE, "gone", "--sqlite", str(big_journal))
    assert deleted.out.splitlines()[-1] == "state       none (deleted)"
    assert "revision    2" in deleted.out


@pytest.mark.parametrize("command", ["events", "snapshot", "value", "entity"])
def test_an_unknown_entity_is_said(big_journal: Path, command: str) -> None:
    shown = inspect(command, CART_TYPE, "nobody", "--sqlite", str(big_journal))
    assert shown.code == 2
    assert shown.out == ""
    assert shown.err == (
        f"larder inspect: no entity {CART_TYPE} 'nobody' in this journal: nothing is stored "
        f"under '{CART_TYPE}|nobody' (`larder inspect types` lists the types, "
        f"`larder inspect ids {CART_TYPE}` their ids)\n")


def test_asking_an_entity_for_what_its_kind_has_not_is_said(big_journal: Path) -> None:
    events = inspect("events", PROFILE_TYPE, "bob", "--sqlite", str(big_journal))
    assert events.code == 2
    assert "is a value entity, which has no events" in events.err
    assert f"`larder inspect value {PROFILE_TYPE} bob`" in events.err
    value = inspect("value", CART_TYPE, "alice", "--sqlite", str(big_journal))
    assert "is an event-sourced entity, which has no value state" in value.err


def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    shown = inspect("types", "--sqlite", str(tmp_path / "nope.db"))
    assert (shown.code, shown.out) == (2, "")
    assert "nope.db does not exist" in shown.err
    assert not (tmp_path / "nope.db").exists()


def test_a_file_that_is_not_a_database_is_said(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not SQLite at all\n" * 100)
    shown = inspect("types", "--sqlite", str(path))
    assert shown.code == 2
    assert "is not a Larder journal: it is not an SQLite database" in shown.err


def test_a_database_that_is_not_a_journal_is_said(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    conn.close()
    shown = inspect("types", "--sqlite", str(path))
    assert shown.code == 2
    assert shown.err.endswith(
        "is an SQLite database but not a Larder journal: it has none of the tables events, "
        "snapshots, value_state (its tables: users)\n")


def test_a_journal_of_another_schema_version_is_said(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE events (pid TEXT, seq INTEGER, payload BLOB);"
            "CREATE TABLE snapshots (pid TEXT, seq INTEGER, type_url TEXT, value BLOB);"
            "CREATE TABLE value_state (pid TEXT, revision INTEGER, type_url TEXT, value BLOB);")
    conn.close()
    shown = inspect("types", "--sqlite", str(path))
    assert shown.code == 2
    assert "has a table events but not the columns this Larder reads (type_url text, " \
        "value blob missing or of another type" in shown.err
    assert "another version of Larder's journal schema" in shown.err

    partial = tmp_path / "partial.db"
    with sqlite3.connect(partial) as conn:
        conn.execute("CREATE TABLE events (pid TEXT, seq INTEGER, type_url TEXT, value BLOB)")
    conn.close()
    shown = inspect("types", "--sqlite", str(partial))
    assert shown.code == 2
    assert "has some of a Larder journal's tables but not snapshots, value_state" in shown.err


async def test_reads_a_journal_the_sidecar_has_open_and_changes_nothing(
    tmp_path: Path, cart: Cart
) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    await journal.start()
    try:
        pid = persistence_id(CART_TYPE, "live")
        await journal.append(pid, 0, [cart.item_added(1), cart.item_added(2)])
        # The -shm file is SQLite's shared index of the WAL, where readers mark what
        # they read; the data is in the database file and the WAL.
        data = ("journal.db", "journal.db-wal")
        before = {name: (tmp_path / name).read_bytes() for name in data}
        shown = await asyncio.to_thread(
            inspect, "entity", CART_TYPE, "live", "--sqlite", str(path), "--output", "jsonl")
        assert shown.records()[0]["last_sequence_nr"] == 2
        assert {name: (tmp_path / name).read_bytes() for name in data} == before
        # The open journal still writes after the inspector has read.
        assert await journal.append(pid, 2, [cart.item_added(3)]) == 3
    finally:
        await journal.close()


def test_bad_options_are_said(big_journal: Path, tmp_path: Path) -> None:
    neither = inspect("types")
    assert (neither.code, neither.err) == (
        2,
        "larder inspect: give one journal: --sqlite PATH, --cassandra HOST[:PORT],... or "
        "--admin URL\n",
    )
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xff\xff\xff")
    shown = inspect("types", "--sqlite", str(big_journal), "--descriptors", str(garbage))
    assert shown.code == 2
    assert "is not a serialized FileDescriptorSet" in shown.err
    empty = tmp_path / "empty"
    empty.mkdir()
    shown = inspect("types", "--sqlite", str(big_journal), "--proto-dir", str(empty))
    assert (shown.code, shown.err) == (
        2, f"larder inspect: --proto-dir {empty} holds no .proto files\n")
    with pytest.raises(SystemExit) as exited:
        inspect("events", CART_TYPE, "alice", "--sqlite", str(big_journal), "--limit", "0")
    assert exited.value.code == 2
