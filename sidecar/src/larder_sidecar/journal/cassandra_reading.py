"""Read-only inspection of a Cassandra journal keyspace (the `JournalReader` of `reading.py`).

Blocking driver calls, for a command-line process; the sidecar never uses this.

Cost: reading one entity is a few single-partition queries. Listing entity types, or
the ids of one type, is a paged `SELECT DISTINCT` over the partition keys of
`events` and `value_states`: a scan of every node's token range, one row per
partition (not per event), filtered here by type. A page of ids stops scanning once
it has its ids plus one (to know whether there is more); listing types scans all.
The continuation token is the table and the token of the last partition shown.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import (
    ConstantReconnectionPolicy,
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    TokenAwarePolicy,
)
from cassandra.query import tuple_factory

from .base import JournalCorrupt, JournalUnavailable, PersistenceId, StoredPayload
from .cassandra_errors import DRIVER_ERRORS, translate
from .cassandra_schema import TABLES
from .reading import (
    BadContinuation,
    EntityInfo,
    EntityKind,
    EntityPage,
    EntityRef,
    EntityTypeCount,
    EventPage,
    NotAJournal,
    SchemaMismatch,
    SettingMismatch,
    StoredEvent,
    StoredSnapshot,
    StoredValue,
    check_columns,
    split_persistence_id,
)

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
# Murmur3 never gives a key this token, so `token(...) > _MIN_TOKEN` is every partition.
_MIN_TOKEN = -(2**63)
_SCAN_FETCH = 1000
# Partitions whose heads one query reads when looking below a partition.
_HEAD_SCAN_WIDTH = 32

# The columns `cassandra_schema.py` creates and this reader reads, and partition keys.
_COLUMNS: dict[str, dict[str, str]] = {
    "events": {
        "persistence_id": "text", "partition_nr": "bigint", "sequence_nr": "bigint",
        "head": "bigint", "type_url": "text", "payload": "blob", "written_at": "timestamp",
    },
    "snapshots": {
        "persistence_id": "text", "sequence_nr": "bigint", "type_url": "text",
        "payload": "blob", "written_at": "timestamp",
    },
    "value_states": {
        "persistence_id": "text", "revision": "bigint", "type_url": "text",
        "payload": "blob", "written_at": "timestamp",
    },
}
_PARTITION_KEYS = {
    "events": ["persistence_id", "partition_nr"],
    "snapshots": ["persistence_id"],
    "value_states": ["persistence_id"],
}


def _statements(ks: str) -> dict[str, str]:
    return {
        "scan_events": (
            "SELECT DISTINCT persistence_id, partition_nr, token(persistence_id, partition_nr) "
            f"FROM {ks}.events WHERE token(persistence_id, partition_nr) > ?"
        ),
        "scan_values": (
            "SELECT DISTINCT persistence_id, token(persistence_id) "
            f"FROM {ks}.value_states WHERE token(persistence_id) > ?"
        ),
        # Catch-up of views (views/catchup.py): a scan, one row per partition or value.
        "scan_heads": f"SELECT DISTINCT persistence_id, partition_nr, head FROM {ks}.events",
        "scan_revisions": f"SELECT persistence_id, revision FROM {ks}.value_states",
        "head": (
            f"SELECT head FROM {ks}.events WHERE persistence_id = ? AND partition_nr = ? LIMIT 1"
        ),
        "heads": (
            f"SELECT partition_nr, head FROM {ks}.events "
            "WHERE persistence_id = ? AND partition_nr IN ? PER PARTITION LIMIT 1"
        ),
        "has_event": (
            f"SELECT sequence_nr FROM {ks}.events "
            "WHERE persistence_id = ? AND partition_nr = ? AND sequence_nr = ?"
        ),
        "events": (
            f"SELECT sequence_nr, type_url, payload, written_at FROM {ks}.events "
            "WHERE persistence_id = ? AND partition_nr = ? AND sequence_nr >= ?"
        ),
        "snapshot": (
            f"SELECT sequence_nr, type_url, payload, written_at FROM {ks}.snapshots "
            "WHERE persistence_id = ?"
        ),
        "value": (
            f"SELECT revision, type_url, payload, written_at FROM {ks}.value_states "
            "WHERE persistence_id = ?"
        ),
    }


class CassandraReader:
    """Implements `JournalReader` on one keyspace of a Cassandra cluster."""

    def __init__(
        self,
        contact_points: Sequence[str],
        port: int,
        keyspace: str,
        *,
        username: str | None = None,
        password: str | None = None,
        partition_size: int = 10_000,
        timeout: float = 10.0,
        consistency: str = "LOCAL_QUORUM",
        reconnect: bool = False,
    ) -> None:
        if not _IDENTIFIER.fullmatch(keyspace):
            raise NotAJournal(
                f"{keyspace!r} is not a Cassandra keyspace name (a letter, then letters, "
                "digits or _; at most 48)"
            )
        if consistency not in ConsistencyLevel.name_to_value:
            raise ValueError(f"{consistency!r} is not a Cassandra consistency level")
        if partition_size < 1:
            raise ValueError(f"partition size {partition_size} is not positive")
        # Unquoted CQL names are case-insensitive and stored in lower case.
        self._keyspace = keyspace.lower()
        self._size = partition_size
        self._where = f"{','.join(contact_points)}:{port}"
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=ConsistencyLevel.name_to_value[consistency],
            request_timeout=timeout,
            row_factory=tuple_factory,
        )
        auth = (
            PlainTextAuthProvider(username=username, password=password)
            if username is not None
            else None
        )
        self._cluster = Cluster(
            contact_points=list(contact_points),
            port=port,
            auth_provider=auth,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=timeout,
            control_connection_timeout=timeout,
            # One attempt is the answer for a command-line tool: no reconnection loop. A
            # sidecar (view catch-up) keeps reconnecting, like the journal.
            reconnection_policy=(
                ExponentialReconnectionPolicy(base_delay=0.5, max_delay=5.0)
                if reconnect
                else ConstantReconnectionPolicy(delay=timeout, max_attempts=1)
            ),
        )
        try:
            self._session: Session = self._cluster.connect()
        except DRIVER_ERRORS as e:
            self._cluster.shutdown()
            raise JournalUnavailable(
                f"cannot reach Cassandra at {self._where} (waited up to {timeout:g}s): {e}; "
                "check the contact points and port, and that the cluster is up"
            ) from e
        try:
            self._check_schema()
            self._prepared = {
                name: self._session.prepare(cql)
                for name, cql in _statements(self._keyspace).items()
            }
        except DRIVER_ERRORS as e:
            self._cluster.shutdown()
            raise translate(e, writing=False, what="prepare the inspector's queries") from e
        except BaseException:
            self._cluster.shutdown()
            raise

    def _check_schema(self) -> None:
        ks = self._keyspace
        keyspaces = self._cluster.metadata.keyspaces
        keyspace = keyspaces.get(ks)
        if keyspace is None:
            others = sorted(k for k in keyspaces if not k.startswith("system"))
            raise NotAJournal(
                f"keyspace {ks!r} does not exist on Cassandra at {self._where} (its keyspaces: "
                f"{', '.join(others) or 'none but the system ones'}); check --keyspace "
                "(the sidecar's LARDER_JOURNAL_CASSANDRA_KEYSPACE, default larder)"
            )
        ours = [t for t in TABLES if t in keyspace.tables]
        if not ours:
            tables = ", ".join(sorted(keyspace.tables)) or "no tables"
            raise NotAJournal(
                f"keyspace {ks!r} has no Larder tables (events, snapshots, value_states; it "
                f"has {tables}); check --keyspace"
            )
        missing = [t for t in TABLES if t not in keyspace.tables]
        if missing:
            raise SchemaMismatch(
                f"keyspace {ks!r} has some of the Larder journal's tables but not "
                f"{', '.join(missing)}; it was written by another version of Larder's "
                "journal schema"
            )
        where = f"keyspace {ks!r}"
        for table, wanted in _COLUMNS.items():
            meta = keyspace.tables[table]
            found = {name: str(column.cql_type) for name, column in meta.columns.items()}
            mismatch = check_columns(where, table, found, wanted)
            if mismatch is not None:
                raise mismatch
            keys = [column.name for column in meta.partition_key]
            if keys != _PARTITION_KEYS[table]:
                raise SchemaMismatch(
                    f"{where}: table {table} has partition key ({', '.join(keys)}) where this "
                    f"Larder reads ({', '.join(_PARTITION_KEYS[table])}); it was written by "
                    "another version of Larder's journal schema"
                )

    def close(self) -> None:
        self._cluster.shutdown()

    # -- plumbing --------------------------------------------------------------------

    def _rows(
        self, name: str, values: Sequence[Any], *, what: str, fetch_size: int | None = None
    ) -> Iterator[Any]:
        """The rows of a prepared statement, fetching further pages as they are consumed."""
        bound = self._prepared[name].bind(values)
        if fetch_size is not None:
            bound.fetch_size = fetch_size
        try:
            yield from self._session.execute(bound)
        except DRIVER_ERRORS as e:
            raise translate(e, writing=False, what=what) from e

    def _first(self, name: str, values: Sequence[Any], *, what: str) -> Any:
        return next(self._rows(name, values, what=what), None)

    @property
    def _first_partition(self) -> int:
        # Every event-sourced entity has this partition: it holds event 1.
        return 1 // self._size

    # -- listing ---------------------------------------------------------------------

    def _scan(self, table: str, after: int) -> Iterator[tuple[str, EntityKind, int]]:
        """(persistence id, kind, token) of every entity in `table` after a token."""
        what = f"list the entities in {self._keyspace}.{table}"
        if table == "events":
            first = self._first_partition
            for pid, partition, token in self._rows(
                "scan_events", (after,), what=what, fetch_size=_SCAN_FETCH
            ):
                if partition == first:
                    yield pid, "event-sourced", token
        else:
            for pid, token in self._rows(
                "scan_values", (after,), what=what, fetch_size=_SCAN_FETCH
            ):
                yield pid, "value", token

    def entity_types(self) -> Sequence[EntityTypeCount]:
        counts: dict[tuple[str, EntityKind], int] = {}
        for table in ("events", "value_states"):
            for pid, kind, _ in self._scan(table, _MIN_TOKEN):
                key = (split_persistence_id(pid)[0], kind)
                counts[key] = counts.get(key, 0) + 1
        return [EntityTypeCount(t, kind, n) for (t, kind), n in sorted(counts.items())]

    def entity_ids(self, entity_type: str, *, limit: int, after: str | None) -> EntityPage:
        tables = ["events", "value_states"]
        start = _MIN_TOKEN
        if after is not None:
            table, _, token_text = after.partition(":")
            if table not in tables or not re.fullmatch(r"-?\d+", token_text):
                raise BadContinuation(
                    f"{after!r} is not a continuation token of a Cassandra journal; give the "
                    "one the previous page printed (`events:<token>` or `value_states:<token>`)"
                )
            tables = tables[tables.index(table):]
            start = int(token_text)
        found: list[tuple[EntityRef, str]] = []
        for table in tables:
            for pid, kind, token in self._scan(table, start):
                pid_type, entity_id = split_persistence_id(pid)
                if pid_type == entity_type:
                    found.append((EntityRef(entity_type, entity_id, kind), f"{table}:{token}"))
                    if len(found) > limit:
                        break
            if len(found) > limit:
                break
            start = _MIN_TOKEN
        page = found[:limit]
        more = len(found) > limit
        return EntityPage([ref for ref, _ in page], page[-1][1] if more and page else None)

    # -- catch-up of views ------------------------------------------------------------

    def value_revisions(self, entity_type: str) -> dict[PersistenceId, int]:
        """Current revision of each value entity of the type (deleted ones included).
        Scans every value state of the keyspace."""
        prefix = entity_type + "|"
        return {
            PersistenceId(pid): int(revision)
            for pid, revision in self._rows(
                "scan_revisions", (), what="list the value entities' revisions",
                fetch_size=_SCAN_FETCH,
            )
            if pid.startswith(prefix) and revision is not None
        }

    def event_heads(self, entity_type: str) -> dict[PersistenceId, int]:
        """Last sequence number of each event-sourced entity of the type: the head of its
        highest partition. Scans every event partition's static head (one row per
        partition, not per event)."""
        prefix = entity_type + "|"
        top: dict[PersistenceId, tuple[int, int]] = {}
        for pid, partition, head in self._rows(
            "scan_heads", (), what="list the event-sourced entities' heads",
            fetch_size=_SCAN_FETCH,
        ):
            if not pid.startswith(prefix) or head is None:
                continue
            known = top.get(pid)
            if known is None or partition > known[0]:
                top[PersistenceId(pid)] = (partition, int(head))
        return {pid: head for pid, (_, head) in top.items()}

    # -- one entity ------------------------------------------------------------------

    def _head(self, pid: PersistenceId, partition: int) -> int | None:
        row = self._first("head", (pid, partition), what=f"read the last event of {pid}")
        return None if row is None else row[0]

    def _last_sequence_nr(self, pid: PersistenceId, after: int) -> int:
        """The entity's last event number, following partition heads from the partition
        of event `after + 1` (the first event of an append, or event 1)."""
        last = after
        partition = (after + 1) // self._size
        while True:
            head = self._head(pid, partition)
            if head is None or head <= last:
                break
            last = head
            following = (last + 1) // self._size
            if following == partition:
                break
            partition = following
        # With the sidecar's partition size the partition above the last one reached is
        # empty: an event there would have to follow `last`, and that event would be in
        # a partition already read. With another size, events hide there (or further),
        # and the history shown would silently end early.
        beyond = self._head(pid, partition + 1)
        if beyond is not None:
            raise SettingMismatch(
                f"{pid}: events are stored in partition {partition + 1}, which partition "
                f"size {self._size} does not reach after event {last}; --partition-size "
                "must be the sidecar's (LARDER_JOURNAL_CASSANDRA_PARTITION_SIZE)"
            )
        return last

    def entity(self, pid: PersistenceId) -> EntityInfo | None:
        value = self._first("value", (pid,), what=f"read the state of {pid}")
        if value is not None:
            return EntityInfo(pid, "value", 0, None, int(value[0]))
        snapshot = self.snapshot(pid)
        after = snapshot.sequence_nr if snapshot is not None else 0
        last = self._last_sequence_nr(pid, after)
        if snapshot is None and last == 0:
            return None
        return EntityInfo(
            pid, "event-sourced", last, snapshot.sequence_nr if snapshot else None, None
        )

    def _partition_of(self, pid: PersistenceId, seq: int) -> int | None:
        """The partition holding event `seq`, None if there is no such event.

        An event is in the partition of the first event of its append, so at or below
        `seq // size`; each partition holds one run of consecutive numbers.
        """
        what = f"find event {seq} of {pid}"
        partition = seq // self._size
        if self._first("has_event", (pid, partition, seq), what=what) is not None:
            return partition
        top = partition
        while top > 0:
            low = max(0, top - _HEAD_SCAN_WIDTH)
            heads = {
                nr: head
                for nr, head in self._rows("heads", (pid, list(range(low, top))), what=what)
                if head is not None
            }
            if heads:
                below = max(heads)
                return below if heads[below] >= seq else None
            top = low
        return None

    def events(self, pid: PersistenceId, *, from_seq: int, limit: int) -> EventPage:
        seq = max(1, from_seq)
        events: list[StoredEvent] = []
        what = f"read the events of {pid}"
        # Event `seq` is nearly always in partition seq // size (an append that crosses a
        # partition boundary keeps all its events in its first event's partition): read
        # there first, and look for its partition only when it is not there. A request
        # less per entity when catch-up reads thousands of them back.
        partition: int | None = seq // self._size
        probe = self._rows(
            "events", (pid, partition, seq), what=what, fetch_size=min(limit + 1, 5000)
        )
        first = next(probe, None)
        rows: Iterator[Any] | None = None
        if first is not None and first[0] == seq:
            rows = itertools.chain((first,), probe)
        else:
            partition = self._partition_of(pid, seq)
        while partition is not None and len(events) <= limit:
            before = len(events)
            if rows is None:
                rows = self._rows(
                    "events", (pid, partition, seq), what=what,
                    fetch_size=min(limit + 1 - len(events), 5000),
                )
            for number, type_url, payload, written_at in rows:
                if number != seq:
                    raise JournalCorrupt(
                        f"{pid}: event {number} follows event {seq - 1} in partition "
                        f"{partition}; the journal has a gap, or --partition-size is not "
                        f"the sidecar's ({self._size} given)"
                    )
                events.append(
                    StoredEvent(seq, _payload(pid, f"event {seq}", type_url, payload),
                                _utc(written_at))
                )
                seq += 1
                if len(events) > limit:
                    break
            rows = None
            following = seq // self._size
            if len(events) == before or following == partition:
                break
            partition = following
        more = len(events) > limit
        return EventPage(events[:limit], events[limit].sequence_nr if more else None)

    def snapshot(self, pid: PersistenceId) -> StoredSnapshot | None:
        row = self._first("snapshot", (pid,), what=f"read the snapshot of {pid}")
        if row is None:
            return None
        seq, type_url, payload, written_at = row
        return StoredSnapshot(
            seq, _payload(pid, f"snapshot {seq}", type_url, payload), _utc(written_at)
        )

    def value(self, pid: PersistenceId) -> StoredValue | None:
        row = self._first("value", (pid,), what=f"read the state of {pid}")
        if row is None:
            return None
        revision, type_url, payload, written_at = row
        stored = (
            None
            if type_url is None and payload is None
            else _payload(pid, "value state", type_url, payload)
        )
        return StoredValue(int(revision), stored, _utc(written_at))


def _utc(value: datetime | None) -> datetime | None:
    # The driver returns timestamps as naive datetimes in UTC.
    return None if value is None else value.replace(tzinfo=UTC)


def _payload(pid: PersistenceId, what: str, type_url: Any, value: Any) -> StoredPayload:
    if not isinstance(type_url, str) or not isinstance(value, bytes):
        raise JournalCorrupt(
            f"{pid}: {what} has type URL {type_url!r} and a payload of type "
            f"{type(value).__name__}; expected text and bytes"
        )
    return StoredPayload(type_url, value)
