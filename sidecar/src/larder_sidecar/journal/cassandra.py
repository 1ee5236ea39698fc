"""The Cassandra journal: events, snapshots and value state, fenced by lightweight transactions.

Data model and the fencing argument: docs/journal.md. In short, the events of one
`append` all go to the partition of their first sequence number, whose static `head`
column (the last sequence number stored there) is compared and set by one
conditional batch; a batch never spans partitions, so the transaction covers it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, Session
from cassandra.query import (
    BatchStatement,
    BatchType,
    PreparedStatement,
    dict_factory,
    tuple_factory,
)

from . import cassandra_aio as aio
from .base import (
    ConcurrentWriteError,
    IdempotencyRecord,
    IdempotencyWrite,
    JournalCorrupt,
    JournalError,
    JournalUnavailable,
    PersistenceId,
    Recovery,
    Snapshot,
    StoredPayload,
    ValueState,
)
from .cassandra_errors import DRIVER_ERRORS, translate
from .cassandra_loop import LoopConnection
from .cassandra_schema import ADDED_COLUMNS, TABLES, Statements, add_column_cql, schema_cql
from .cassandra_session import connect
from .cassandra_settings import PREFIX, CassandraSettings

log = logging.getLogger(__name__)

_WRITES = "larder-writes"
# Schema changes wait for every node to agree; that takes longer than a request.
_DDL_TIMEOUT = 60.0
# Partitions whose heads one query reads when looking for the entity's last batch.
_HEAD_SCAN_WIDTH = 32
_LOAD_ATTEMPTS = 3
"""Reads of an entity when writes keep landing between its events and its records."""
_READY_PID = "__larder_readiness_probe__"


class SchemaMissing(JournalUnavailable):
    """Schema creation is off and the keyspace or a table does not exist."""


class CassandraJournal:
    """Implements `Journal` on Apache Cassandra (3.11 and later; tested on 5.0)."""

    def __init__(self, settings: CassandraSettings) -> None:
        self._settings = settings
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._prepared: dict[str, PreparedStatement] = {}
        self._fenced = settings.fencing == "fenced"

    @property
    def settings(self) -> CassandraSettings:
        return self._settings

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        s = self._settings
        where = f"{','.join(s.contact_points)}:{s.port}"
        try:
            # Connecting resolves names and opens sockets synchronously: off the loop.
            # The connections then do their I/O on this loop (cassandra_loop).
            connection_class = LoopConnection.for_running_loop()
            self._cluster, self._session = await asyncio.to_thread(
                self._connect, connection_class
            )
        except DRIVER_ERRORS as e:
            raise JournalUnavailable(
                f"cannot connect to Cassandra at {where}: {e}; check "
                f"{PREFIX}CONTACT_POINTS/PORT and that the cluster is up"
            ) from e
        try:
            if s.create_schema:
                for cql in schema_cql(s.keyspace, s.replication):
                    await self._run(cql, None, what="create the journal schema", ddl=True)
                await self._add_columns()
            else:
                self._check_schema()
            self._prepared = await asyncio.to_thread(self._prepare_all)
        except BaseException:
            await self.close()
            raise

    def _connect(self, connection_class: type[LoopConnection]) -> tuple[Cluster, Session]:
        s = self._settings
        return connect(
            s,
            connection_class,
            {
                EXEC_PROFILE_DEFAULT: (s.read_consistency, tuple_factory),
                # Conditional writes answer `[applied]` plus the current values by name.
                _WRITES: (s.write_consistency, dict_factory),
            },
        )

    def connection(self) -> tuple[Cluster, Session]:
        """The started journal's cluster and session, for the view store to share (it
        adds its profiles; the journal still owns them and shuts them down)."""
        if self._cluster is None or self._session is None:
            raise JournalUnavailable("the Cassandra journal is not started (or was closed)")
        return self._cluster, self._session

    def _check_schema(self) -> None:
        assert self._cluster is not None
        ks = self._settings.keyspace
        keyspace = self._cluster.metadata.keyspaces.get(ks)
        hint = (
            f"{PREFIX}CREATE_SCHEMA is off: create the schema (docs/journal.md, or "
            "`python -m larder_sidecar.journal.cassandra_schema`) or turn schema creation on"
        )
        if keyspace is None:
            raise SchemaMissing(f"keyspace {ks!r} does not exist and {hint}")
        missing = [t for t in TABLES if t not in keyspace.tables]
        if missing:
            raise SchemaMissing(f"keyspace {ks!r} has no table {', '.join(missing)} and {hint}")
        columns = [
            f"{table}.{column}"
            for table, column, _ in ADDED_COLUMNS
            if column not in keyspace.tables[table].columns
        ]
        if columns:
            raise SchemaMissing(
                f"keyspace {ks!r} has no column {', '.join(columns)} (added by this version "
                f"of Larder) and {hint}"
            )

    async def _add_columns(self) -> None:
        """Add the columns a keyspace created by an older version lacks."""
        assert self._cluster is not None
        ks = self._settings.keyspace
        keyspace = self._cluster.metadata.keyspaces.get(ks)
        for table, column, kind in ADDED_COLUMNS:
            known = keyspace.tables.get(table) if keyspace is not None else None
            if known is not None and column in known.columns:
                continue
            try:
                await self._run(
                    add_column_cql(ks, table, column, kind),
                    None,
                    what=f"add the column {column} to {ks}.{table}",
                    ddl=True,
                )
            except JournalUnavailable as e:
                # Another sidecar starting at the same moment added it first, or the
                # driver's schema metadata was older than the table.
                text = str(e)
                if "already exists" not in text and "conflicts with an existing" not in text:
                    raise
            else:
                log.info("added the column %s to %s.%s", column, ks, table)

    def _prepare_all(self) -> dict[str, PreparedStatement]:
        assert self._session is not None
        texts = Statements.for_keyspace(self._settings.keyspace)
        prepared: dict[str, PreparedStatement] = {}
        for spec in fields(Statements):
            name = spec.name
            statement = self._session.prepare(getattr(texts, name))
            # Reads may be re-sent to another node; writes never are (JournalRetryPolicy).
            statement.is_idempotent = name.startswith("select")
            prepared[name] = statement
        return prepared

    async def close(self) -> None:
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            await asyncio.to_thread(cluster.shutdown)

    async def ready(self) -> bool:
        if self._session is None or not self._prepared:
            return False
        try:
            await self._run(self._stmt("select_value"), (_READY_PID,), what="answer a probe")
        except JournalError:
            return False
        return True

    # -- plumbing --------------------------------------------------------------------

    def _stmt(self, name: str) -> PreparedStatement:
        if not self._prepared:
            raise JournalUnavailable("the Cassandra journal is not started (or was closed)")
        return self._prepared[name]

    async def _run(
        self,
        statement: Any,
        values: Sequence[Any] | None,
        *,
        what: str,
        write: bool = False,
        ddl: bool = False,
    ) -> Any:
        session = self._session
        if session is None:
            raise JournalUnavailable("the Cassandra journal is not started (or was closed)")
        try:
            response = session.execute_async(
                statement,
                values,
                timeout=_DDL_TIMEOUT if ddl else self._settings.request_timeout,
                execution_profile=_WRITES if write or ddl else EXEC_PROFILE_DEFAULT,
            )
            return await aio.result(response)
        except DRIVER_ERRORS as e:
            raise translate(e, writing=write, what=what) from e

    async def _conditional(self, statement: Any, values: Any, *, what: str) -> dict[str, Any]:
        rows = await self._run(statement, values, what=what, write=True)
        if not rows:
            raise JournalCorrupt(f"Cassandra answered no [applied] row to {what}")
        row: dict[str, Any] = rows[0]
        return row

    # -- event-sourced entities ------------------------------------------------------

    async def load(self, pid: PersistenceId) -> Recovery:
        # The events and the records are two reads: a write that lands between them
        # (another sidecar's, or this entity's own write whose outcome was unknown)
        # leaves records newer than the events. The records' row carries the head its
        # partition had when they were read; behind it, the events are read again, so an
        # entity never starts from a state older than the records it answers retries by.
        for _ in range(_LOAD_ATTEMPTS - 1):
            recovery, head = await self._load_once(pid)
            if head is None or head <= recovery.last_sequence_nr:
                return recovery
            log.info("%s: a write landed while it was being loaded; reading it again", pid)
        recovery, _ = await self._load_once(pid)
        return recovery

    async def _load_once(self, pid: PersistenceId) -> tuple[Recovery, int | None]:
        """The entity as read, and the head of the partition its records were read
        from (None if no records were read)."""
        snapshot = await self._load_snapshot(pid)
        last = snapshot.sequence_nr if snapshot else 0
        events: list[StoredPayload] = []
        size = self._settings.partition_size
        partition = (last + 1) // size
        # The partition of the entity's last append: its static column holds the
        # entity's idempotency records.
        last_written: int | None = None
        while True:
            before = last
            last = await self._read_partition(pid, partition, last, events)
            if last != before:
                last_written = partition
            after_next = (last + 1) // size
            # An append stores its events in the partition of its first number, so
            # the event after `last`, if any, is in partition (last + 1) // size.
            if last == before or after_next == partition:
                break
            partition = after_next
        records: tuple[IdempotencyRecord, ...] = ()
        row: tuple[Any, ...] | None = None
        if last_written is not None:
            row = await self._highest_below(pid, last_written + 1, "select_records", width=1)
            records = _records(pid, row[2] if row else None)
        elif last > 0:
            # The snapshot covers every event: the last append's partition is the
            # highest non-empty one up to the snapshot's.
            row = await self._highest_below(pid, last // size + 1, "select_records")
            records = _records(pid, row[2] if row else None)
        recovery = Recovery(
            snapshot=snapshot, events=tuple(events), last_sequence_nr=last, idempotency=records
        )
        return recovery, (int(row[1]) if row and row[1] is not None else None)

    async def _read_partition(
        self, pid: PersistenceId, partition: int, last: int, into: list[StoredPayload]
    ) -> int:
        what = f"read the events of {pid}"
        session = self._session
        if session is None:
            raise JournalUnavailable("the Cassandra journal is not started (or was closed)")
        bound = self._stmt("select_events").bind((pid, partition, last + 1))
        bound.fetch_size = self._settings.fetch_size
        try:
            response = session.execute_async(bound, timeout=self._settings.request_timeout)
            async for page in aio.pages(response):
                for row in page:
                    into.append(_event(pid, row, last))
                    last += 1
        except DRIVER_ERRORS as e:
            raise translate(e, writing=False, what=what) from e
        return last

    async def _load_snapshot(self, pid: PersistenceId) -> Snapshot | None:
        rows = await self._run(
            self._stmt("select_snapshot"), (pid,), what=f"read the snapshot of {pid}"
        )
        if not rows:
            return None
        seq, type_url, payload = rows[0]
        if not isinstance(seq, int) or seq < 1:
            raise JournalCorrupt(f"{pid}: snapshot has sequence number {seq!r}")
        return Snapshot(
            sequence_nr=seq, payload=_payload(pid, f"snapshot {seq}", type_url, payload)
        )

    async def append(
        self,
        pid: PersistenceId,
        expected_sequence_nr: int,
        events: Sequence[StoredPayload],
        snapshot: StoredPayload | None = None,
        idempotency: IdempotencyWrite | None = None,
    ) -> int:
        expected = expected_sequence_nr
        if expected < 0:
            raise ValueError(f"expected_sequence_nr must not be negative, got {expected}")
        if not events:
            if snapshot is not None and expected > 0:
                await self._snapshot_only(pid, expected, snapshot)
            return expected
        last = expected + len(events)
        partition = (expected + 1) // self._settings.partition_size
        if self._fenced:
            await self._append_fenced(pid, expected, partition, events, idempotency)
        elif idempotency is None and len(events) == 1:
            await self._run(
                self._stmt("append_one"),
                self._one_event(pid, expected, partition, events[0]),
                what=f"append event {last} to {pid}",
                write=True,
            )
        else:
            batch = self._event_batch(pid, expected, partition, events)
            batch.add(self._stmt("set_head"), (last, pid, partition))
            if idempotency is not None:
                # Unfenced, the partition of the entity's last append is not checked:
                # an append after one that straddled a partition boundary is taken
                # for one in the same partition, and does not copy the records.
                new = expected == 0 or expected // self._settings.partition_size != partition
                self._add_records(batch, idempotency, (pid, partition), new_partition=new)
            await self._run(batch, None, what=f"append events to {pid}", write=True)
        if snapshot is not None:
            await self._store_snapshot(pid, last, snapshot)
        return last

    async def _append_fenced(
        self,
        pid: PersistenceId,
        expected: int,
        partition: int,
        events: Sequence[StoredPayload],
        idempotency: IdempotencyWrite | None,
    ) -> None:
        what = f"append events {expected + 1}..{expected + len(events)} to {pid}"
        # Usually the partition already holds the entity's last event; it is empty
        # (head null) when this append is the first of the entity or of a partition.
        likely_new = expected == 0 or expected // self._settings.partition_size != partition
        if not likely_new:
            row = await self._fenced_batch(
                pid, expected, partition, events, idempotency, condition=expected, what=what
            )
            if row["[applied]"]:
                return
            if row.get("head") is not None:
                raise _conflict(pid, expected, row["head"])
        # An empty partition: appending there is right only if `expected` is the
        # entity's last number, i.e. the head of the closest non-empty partition below.
        head = await self._head_below(pid, partition) if expected > 0 else 0
        if head != expected:
            raise _conflict(pid, expected, head)
        row = await self._fenced_batch(
            pid, expected, partition, events, idempotency, condition=None, what=what
        )
        if not row["[applied]"]:
            raise _conflict(pid, expected, row.get("head"))

    async def _fenced_batch(
        self,
        pid: PersistenceId,
        expected: int,
        partition: int,
        events: Sequence[StoredPayload],
        idempotency: IdempotencyWrite | None,
        *,
        condition: int | None,
        what: str,
    ) -> dict[str, Any]:
        # A null condition means the partition is new to the entity: the records the
        # entity keeps move into it, so the partition of the last append has them all.
        new_partition = condition is None
        with_records = idempotency is not None and bool(
            idempotency.put or idempotency.drop or (new_partition and idempotency.live)
        )
        if len(events) == 1 and not with_records:
            values = (*self._one_event(pid, expected, partition, events[0]), condition)
            return await self._conditional(self._stmt("append_one_fenced"), values, what=what)
        batch = self._event_batch(pid, expected, partition, events)
        last = expected + len(events)
        batch.add(self._stmt("fence_head"), (last, pid, partition, condition))
        if idempotency is not None:
            self._add_records(batch, idempotency, (pid, partition), new_partition=new_partition)
        return await self._conditional(batch, None, what=what)

    def _add_records(
        self,
        batch: BatchStatement,
        change: IdempotencyWrite,
        where: tuple[Any, ...],
        *,
        new_partition: bool,
        value_row: bool = False,
    ) -> None:
        """Add the statements that change the records (in the row `where` names)."""
        put = self._stmt("put_value_record" if value_row else "put_record")
        drop = self._stmt("drop_value_record" if value_row else "drop_record")
        now = time.time()
        records = change.live if new_partition else change.put
        keys = {r.key for r in records}
        for record in records:
            # Each record expires by itself when its window ends.
            ttl = int(record.stored_at + change.window - now) + 1
            if ttl > 0:
                batch.add(put, (ttl, record.key, _record_blob(record), *where))
        if not new_partition:
            for key in change.drop:
                if key not in keys:
                    batch.add(drop, (key, *where))

    @staticmethod
    def _one_event(
        pid: PersistenceId, expected: int, partition: int, event: StoredPayload
    ) -> tuple[Any, ...]:
        # The values of `append_one` (and of `append_one_fenced` before its condition):
        # the event is `expected + 1` and becomes the partition's head.
        seq = expected + 1
        return (seq, event.type_url, event.value, datetime.now(UTC), pid, partition, seq)

    def _event_batch(
        self,
        pid: PersistenceId,
        expected: int,
        partition: int,
        events: Sequence[StoredPayload],
    ) -> BatchStatement:
        # One partition, so UNLOGGED is atomic and isolated; a batch log would add a
        # write for nothing.
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        insert = self._stmt("insert_event")
        now = datetime.now(UTC)
        for offset, event in enumerate(events, start=1):
            seq = expected + offset
            batch.add(insert, (pid, partition, seq, event.type_url, event.value, now))
        return batch

    async def _head_below(self, pid: PersistenceId, partition: int) -> int | None:
        """The head of the highest non-empty partition below `partition`, None if none."""
        row = await self._highest_below(pid, partition, "select_heads")
        if row is None:
            return None
        head: int = row[1]
        return head

    async def _highest_below(
        self, pid: PersistenceId, partition: int, statement: str, width: int = _HEAD_SCAN_WIDTH
    ) -> tuple[Any, ...] | None:
        """The row (partition_nr, head, ...) of the highest non-empty partition below
        `partition`, None if none."""
        top = partition
        while top > 0:
            low = max(0, top - width)
            rows = await self._run(
                self._stmt(statement),
                (pid, list(range(low, top))),
                what=f"find the last event of {pid}",
            )
            found: list[tuple[Any, ...]] = [tuple(row) for row in rows if row[1] is not None]
            if found:
                return max(found, key=lambda row: row[0])
            top = low
        return None

    async def _snapshot_only(
        self, pid: PersistenceId, expected: int, snapshot: StoredPayload
    ) -> None:
        if self._fenced:
            # `expected` must be the entity's last number: the head of the highest
            # non-empty partition up to the one the next event would go to.
            partition = (expected + 1) // self._settings.partition_size
            head = await self._head_below(pid, partition + 1)
            if head != expected:
                raise _conflict(pid, expected, head)
        await self._store_snapshot(pid, expected, snapshot)

    async def _store_snapshot(self, pid: PersistenceId, seq: int, snapshot: StoredPayload) -> None:
        values = (pid, seq, snapshot.type_url, snapshot.value, datetime.now(UTC), seq)
        try:
            await self._run(
                self._stmt("insert_snapshot"), values, what=f"store a snapshot of {pid}", write=True
            )
        except JournalUnavailable as e:
            # The events are stored and are the truth; the snapshot only shortens the
            # next recovery, so failing the command for it would report a stored
            # command as failed.
            log.warning("%s: events up to %d stored, snapshot not: %s", pid, seq, e)

    # -- value entities --------------------------------------------------------------

    async def load_value(self, pid: PersistenceId) -> ValueState:
        rows = await self._run(self._stmt("select_value"), (pid,), what=f"read the state of {pid}")
        if not rows:
            return ValueState(payload=None, revision=0)
        revision, type_url, payload, stored_records = rows[0]
        records = _records(pid, stored_records)
        if revision is None and type_url is None and payload is None:
            # Only records left of a row whose state cells were never written: cannot
            # happen (a record is written with the state), but reads as no state.
            return ValueState(payload=None, revision=0, idempotency=records)
        if not isinstance(revision, int) or revision < 1:
            raise JournalCorrupt(f"{pid}: value state has revision {revision!r}")
        if type_url is None and payload is None:
            return ValueState(payload=None, revision=revision, idempotency=records)
        return ValueState(
            payload=_payload(pid, "value state", type_url, payload),
            revision=revision,
            idempotency=records,
        )

    async def put_value(
        self,
        pid: PersistenceId,
        expected_revision: int,
        payload: StoredPayload | None,
        idempotency: IdempotencyWrite | None = None,
    ) -> int:
        if expected_revision < 0:
            raise ValueError(f"expected_revision must not be negative, got {expected_revision}")
        revision = expected_revision + 1
        type_url = payload.type_url if payload is not None else None
        value = payload.value if payload is not None else None
        now = datetime.now(UTC)
        what = f"store revision {revision} of {pid}"
        with_records = idempotency is not None and bool(idempotency.put or idempotency.drop)
        if not self._fenced:
            statement: Any = self._stmt("write_value")
            values: Any = (revision, type_url, value, now, pid)
        elif expected_revision == 0:
            statement = self._stmt("insert_value_if_absent")
            values = (pid, revision, type_url, value, now)
        else:
            statement = self._stmt("update_value_if_revision")
            values = (revision, type_url, value, now, pid, expected_revision)
        if with_records:
            assert idempotency is not None
            # One row: the batch is as atomic (and as conditional) as the update alone.
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            batch.add(statement, values)
            self._add_records(batch, idempotency, (pid,), new_partition=False, value_row=True)
            statement, values = batch, None
        if not self._fenced:
            await self._run(statement, values, what=what, write=True)
            return revision
        row = await self._conditional(statement, values, what=what)
        if not row["[applied]"]:
            current = row.get("revision") or 0
            raise ConcurrentWriteError(
                f"{pid}: expected revision {expected_revision} but the journal holds "
                f"{current}; another writer owns this entity"
            )
        return revision


def _conflict(pid: PersistenceId, expected: int, found: int | None) -> ConcurrentWriteError:
    seen = "no events" if not found else f"events up to {found}"
    return ConcurrentWriteError(
        f"{pid}: expected to append after sequence number {expected} but the journal has "
        f"{seen} there; another writer appended first (or the entity was loaded from "
        "stale data)"
    )


_STORED_AT = struct.Struct(">d")


def _record_blob(record: IdempotencyRecord) -> bytes:
    return _STORED_AT.pack(record.stored_at) + record.data


def _records(pid: PersistenceId, stored: Any) -> tuple[IdempotencyRecord, ...]:
    """The records of an `idempotency` map as read (None when empty)."""
    if not stored:
        return ()
    records = []
    for key, blob in stored.items():
        if not isinstance(key, str) or not isinstance(blob, bytes) or len(blob) < 8:
            raise JournalCorrupt(
                f"{pid}: idempotency record {key!r} is not text -> 8 bytes of time and the "
                "record"
            )
        (stored_at,) = _STORED_AT.unpack_from(blob)
        records.append(IdempotencyRecord(key, stored_at, blob[_STORED_AT.size :]))
    return tuple(records)


def _event(pid: PersistenceId, row: Any, last: int) -> StoredPayload:
    seq, type_url, value = row
    if seq != last + 1:
        raise JournalCorrupt(
            f"{pid}: event {seq!r} follows event {last}; the journal has a gap or was "
            "written by something other than Larder"
        )
    return _payload(pid, f"event {seq}", type_url, value)


def _payload(pid: PersistenceId, what: str, type_url: Any, value: Any) -> StoredPayload:
    if not isinstance(type_url, str) or not isinstance(value, bytes):
        raise JournalCorrupt(
            f"{pid}: {what} has type URL {type_url!r} and a payload of type "
            f"{type(value).__name__}; expected text and bytes"
        )
    return StoredPayload(type_url, value)
