"""Through real sidecar processes on Cassandra: events, snapshots and value state are
stored, and a new sidecar process (a restarted pod) carries on from them."""

from __future__ import annotations

from types import ModuleType

from .conftest import JournalTables, PodFactory, counter_pid, register_pid


async def test_events_survive_a_restart(
    start_pod: PodFactory, tables: JournalTables, pb: ModuleType
) -> None:
    pod = await start_pod("first")
    for n in range(1, 6):
        reply = await pod.add("replayed", f"t{n}", n)
        assert (reply.value, reply.events) == (sum(range(1, n + 1)), n)
    await pod.stop()

    stored = await tables.events(counter_pid("replayed"))
    assert [seq for seq, _ in stored] == [1, 2, 3, 4, 5]
    assert [pb.Added.FromString(p).tag for _, p in stored] == ["t1", "t2", "t3", "t4", "t5"]
    assert await tables.snapshot(counter_pid("replayed")) is None

    again = await start_pod("second")
    reply = await again.get("replayed")
    assert (reply.value, reply.events) == (15, 5)
    assert (await again.add("replayed", "t6", 6)).value == 21
    assert [seq for seq, _ in await tables.events(counter_pid("replayed"))] == list(range(1, 7))


async def test_snapshots_are_stored_and_replay_starts_from_them(
    start_pod: PodFactory, tables: JournalTables, pb: ModuleType
) -> None:
    # Partitions of 4 events: the eight events span three partitions.
    pod = await start_pod("snap", snapshot_every=3, PARTITION_SIZE=4)
    for n in range(1, 9):
        await pod.add("snapped", f"s{n}", 10)
    await pod.stop()

    pid = counter_pid("snapped")
    assert [seq for seq, _ in await tables.events(pid)] == list(range(1, 9))
    snapshot = await tables.snapshot(pid)
    assert snapshot.sequence_nr == 6
    assert pb.CounterState.FromString(snapshot.payload) == pb.CounterState(value=60, events=6)

    # Replace the stored snapshot by one no event sequence could produce: a new sidecar
    # that starts from the snapshot (and replays only events 7 and 8) shows it.
    marked = pb.CounterState(value=1000, events=6).SerializeToString()
    await tables.execute(
        "UPDATE snapshots SET payload = %s WHERE persistence_id = %s", (marked, pid)
    )
    again = await start_pod("snap-again", snapshot_every=3, PARTITION_SIZE=4)
    reply = await again.get("snapped")
    assert (reply.value, reply.events) == (1020, 8)


async def test_value_entity_state_survives_a_restart_and_deletes(
    start_pod: PodFactory, tables: JournalTables, pb: ModuleType
) -> None:
    pod = await start_pod("value")
    await pod.set_text("reg", "hello")
    assert (await pod.set_text("reg", "world")).writes == 2
    await pod.stop()

    row = await tables.value_state(register_pid("reg"))
    assert row.revision == 2
    assert pb.RegisterState.FromString(row.payload) == pb.RegisterState(text="world", writes=2)

    again = await start_pod("value-again")
    assert await again.get_text("reg") == pb.RegisterState(text="world", writes=2)
    assert await again.clear("reg") == pb.RegisterState()
    await again.stop()

    row = await tables.value_state(register_pid("reg"))
    assert (row.revision, row.payload) == (3, None)
    third = await start_pod("value-third")
    assert await third.get_text("reg") == pb.RegisterState()
    assert (await third.set_text("reg", "back")).writes == 1
    assert (await tables.value_state(register_pid("reg"))).revision == 4
