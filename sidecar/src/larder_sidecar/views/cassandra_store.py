"""The view store on Cassandra: the journal's keyspace and connection (in a sidecar, the
journal's session, `journal/cassandra_session.py`), tables of its own.

- `view_tables` (registry): per view table its CQL table name and fingerprint.
- one table per view table: `key` (partition key), `row` (protobuf bytes), `c0`, `c1`, …
  one per filter column in the CQL type of `cql.py`, each with a storage-attached index
  (SAI) when Cassandra 5.0 can index it. Its name hashes the view's *generation* (the
  fingerprints of all its tables): a changed row type or query makes new tables, the old
  ones are dropped and the view is rebuilt from the journal.
- `view_claims`: per view generation the entities' offset rows in `BUCKETS` partitions
  ((view generation, bucket), persistence id; `cassandra_claims.py`): the offset claimed
  (`applied`), the change's rows (`intent`) and write timestamp (`ts`), and `done`, the
  offset whose rows are all written.
- `view_offsets`: the same per (view generation, persistence id), one partition per
  entity, from the schemes before buckets; taken over into `view_claims` at open.

Applying a delivery batch (the argument is in docs/views.md, "Delivery on Cassandra"), in
waves (each entity's next change):

1. claim: per bucket one conditional batch (one Paxos round) sets, for each of the
   wave's entities in that bucket, `applied` to the change's offset, `intent` to its rows
   and `ts` to a write timestamp above the previous one, if `applied` and `done` are both
   the expected offset (the previous change is claimed and finished). Cassandra applies
   the batch whole or not at all: a refused batch is sorted by the stored rows it answers
   and sent again without the claims that were refused;
2. write the rows `USING TIMESTAMP ts`, so a late write of an older change never
   overwrites a newer one;
3. done: plain writes set `done` to the offset `USING TIMESTAMP ts` (an older change's
   late marker never overwrites a newer one's).

Anyone who finds `done` behind `applied` (a crashed sidecar's claim, at start or on a
refused claim) writes the intent's rows and the marker: the update handler is never
called twice for one stored result. `offsets` reports `done`. Rows and markers go in
unlogged batches: a request per few KiB, not per row. Rows are read back in token order
of their key (Cassandra has no key order across partitions), in pages.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, Session
from cassandra.query import (
    BatchStatement,
    BatchType,
    PreparedStatement,
    dict_factory,
    tuple_factory,
)
from google.protobuf.message import Message
from larder_protocol import message_class

from ..journal import cassandra_aio as aio
from ..journal.cassandra import CassandraJournal
from ..journal.cassandra_errors import DRIVER_ERRORS, describe
from ..journal.cassandra_loop import LoopConnection
from ..journal.cassandra_session import Profiles, add_profiles, connect
from ..journal.cassandra_settings import PREFIX, CassandraSettings
from .cassandra_claims import BUCKETS, Claim, bucket_of, by_bucket, sort_answer
from .columns import StoredValue
from .cql import CqlCondition, CqlValue, cql_column, translate
from .query import RowFilter, ValidatedQuery, compile_filter
from .store import Applied, RowChange, TableSchema, ViewStoreError

log = logging.getLogger("larder_sidecar.views")

PAGE_ROWS = 256
"""Rows fetched per statement while a query streams: memory stays bounded."""
_LWT = "larder-views-lwt"
_SERIAL = "larder-views-serial"
_DDL_TIMEOUT = 60.0
_MIN_TOKEN = -(2**63)

_WRITES = "larder-views-writes"
BATCH_BYTES = 4096
"""Plain writes (rows, done markers) go to Cassandra in unlogged batches of about this
many bytes: a request per batch, not per row, and under Cassandra's default batch size
warning (5 KiB)."""
BATCH_WRITES = 32


def _registry_cql(ks: str) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {ks}.view_tables "
        "(id text PRIMARY KEY, name text, fingerprint text, view_key text)",
        f"""CREATE TABLE IF NOT EXISTS {ks}.view_offsets (
    view_key text, pid text, applied bigint, pending bigint, ts bigint,
    intent list<frozen<tuple<text, text, blob>>>, done bigint,
    PRIMARY KEY ((view_key, pid)))""",
        # The view's offsets are read by this index at start (the start's check compares
        # `applied` and `done` of each: CQL cannot compare two columns).
        f"CREATE CUSTOM INDEX IF NOT EXISTS view_offsets_view_key ON {ks}.view_offsets "
        "(view_key) USING 'StorageAttachedIndex'",
        f"""CREATE TABLE IF NOT EXISTS {ks}.view_claims (
    view_key text, bucket int, pid text, applied bigint, done bigint, ts bigint,
    intent list<frozen<tuple<text, text, blob>>>,
    PRIMARY KEY ((view_key, bucket), pid))""",
    ]


def view_key(view: str, tables: Sequence[TableSchema]) -> str:
    """The view and its generation: changes when any of its tables' fingerprints does."""
    text = "|".join(sorted(f"{t.table}={t.fingerprint}" for t in tables))
    return f"{view}@{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def table_name(key: str, table: str) -> str:
    """A fixed CQL name for a table of one generation of a view (names are free text)."""
    return "v_" + hashlib.sha256(f"{key}/{table}".encode()).hexdigest()[:24]


class _Table:
    """One view table as created: its CQL name and the statements on it."""

    def __init__(self, schema: TableSchema, key: str, ks: str) -> None:
        self.schema = schema
        self.view_key = key
        self.name = table_name(key, schema.table)
        self.full = f"{ks}.{self.name}"
        self.columns = tuple(cql_column(c) for c in schema.columns)
        marks = ", ?" * len(schema.columns)
        names = "".join(f", c{i}" for i in range(len(schema.columns)))
        self.upsert = (
            f"INSERT INTO {self.full} (key, row{names}) VALUES (?, ?{marks}) USING TIMESTAMP ?"
        )
        self.delete = f"DELETE FROM {self.full} USING TIMESTAMP ? WHERE key = ?"
        self.select_row = f"SELECT row FROM {self.full} WHERE key = ?"

    def create(self) -> list[str]:
        columns = "".join(f", c{i} {c.cql_type}" for i, c in enumerate(self.columns))
        out = [f"CREATE TABLE IF NOT EXISTS {self.full} (key text PRIMARY KEY, row blob{columns})"]
        for i, c in enumerate(self.columns):
            if c.indexed:
                out.append(
                    f"CREATE CUSTOM INDEX IF NOT EXISTS {self.name}_c{i} ON {self.full} (c{i}) "
                    "USING 'StorageAttachedIndex'"
                )
        return out

    def values(self, row: bytes, values: Sequence[StoredValue] | None) -> tuple[CqlValue, ...]:
        """The stored columns of `row`; `values` when extracted already (`RowChange`)."""
        if values is None:
            values = self.schema.values(message_class(self.schema.row_type).FromString(row))
        return tuple(c.store(v) for c, v in zip(self.columns, values, strict=True))


_RowWrite = tuple[_Table, str, bytes | None, Sequence[StoredValue] | None, int]
"""A row to write (None: delete), its filter values when extracted already, its ts."""
_Write = tuple[PreparedStatement, Sequence[Any], int]
"""A plain write: statement, values, about how many bytes it carries."""


class CassandraViewStore:
    """Implements `ViewStore` on Cassandra 5 (SAI is needed: 5.0 or later). With
    `journal` (started before `open`), on the journal's connection; else on its own."""

    kind = "cassandra"

    def __init__(
        self, settings: CassandraSettings, journal: CassandraJournal | None = None
    ) -> None:
        self._settings = settings
        self._journal = journal
        self._ks = settings.keyspace
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._prepared: dict[str, PreparedStatement] = {}
        self._tables: dict[str, _Table] = {}  # by TableSchema.id
        self._keys: dict[str, str] = {}  # view -> view key (its current generation)
        self._plans: dict[int, tuple[ValidatedQuery, CqlCondition, RowFilter]] = {}

    # -- plumbing --------------------------------------------------------------------

    def _profiles(self) -> Profiles:
        s = self._settings
        return {
            # Rows and offsets are read at the read consistency and written at the write
            # consistency; the offsets' transactions at the serial one. The default
            # profile is the journal's (the same settings) when the connection is shared.
            EXEC_PROFILE_DEFAULT: (s.read_consistency, tuple_factory),
            _WRITES: (s.write_consistency, tuple_factory),
            _LWT: (s.write_consistency, dict_factory),
            # An offset row read to finish its change: what the last claim stored.
            _SERIAL: (s.serial_consistency, dict_factory),
        }

    async def _open_connection(self) -> None:
        if self._journal is not None:
            cluster, session = self._journal.connection()
            await asyncio.to_thread(add_profiles, cluster, self._settings, self._profiles())
            self._session = session  # the journal's: it shuts the cluster down
            return
        self._cluster, self._session = await asyncio.to_thread(
            connect, self._settings, LoopConnection.for_running_loop(), self._profiles()
        )

    async def _prepare(self, cql: str) -> PreparedStatement:
        found: PreparedStatement | None = self._prepared.get(cql)
        if found is None:
            session = self._need_session()
            try:
                found = cast(PreparedStatement, await asyncio.to_thread(session.prepare, cql))
            except DRIVER_ERRORS as e:
                raise ViewStoreError(
                    f"Cassandra view store: cannot prepare {cql!r}: {describe(e)}"
                ) from e
            # Reads and the rows' writes (timestamped) may be re-sent; transactions never.
            found.is_idempotent = " IF " not in cql
            self._prepared[cql] = found
        return found

    def _need_session(self) -> Session:
        if self._session is None:
            raise ViewStoreError("the Cassandra view store is not open (or was closed)")
        return self._session

    async def _run(
        self,
        cql: str,
        values: Sequence[Any] | None = None,
        *,
        what: str,
        lwt: bool = False,
        write: bool = False,
        ddl: bool = False,
        serial: bool = False,
    ) -> Any:
        session = self._need_session()
        statement: Any = cql if ddl else await self._prepare(cql)
        try:
            response = session.execute_async(
                statement,
                values,
                timeout=_DDL_TIMEOUT if ddl else self._settings.request_timeout,
                execution_profile=_LWT
                if lwt
                else _SERIAL
                if serial
                else _WRITES
                if write or ddl
                else (EXEC_PROFILE_DEFAULT),
            )
            return await aio.result(response)
        except DRIVER_ERRORS as e:
            raise ViewStoreError(
                f"Cassandra view store could not {what}: {describe(e)}; the view retries"
            ) from e

    async def _rows(self, cql: str, values: Sequence[Any], *, what: str) -> AsyncIterator[Any]:
        """Every row of a read, page by page (the driver's paging)."""
        session = self._need_session()
        bound = (await self._prepare(cql)).bind(values)
        bound.fetch_size = 1000
        try:
            response = session.execute_async(bound, timeout=self._settings.request_timeout)
            async for page in aio.pages(response):
                for row in page:
                    yield row
        except DRIVER_ERRORS as e:
            raise ViewStoreError(f"Cassandra view store could not {what}: {describe(e)}") from e

    async def _transaction(self, cql: str, values: Sequence[Any], *, what: str) -> dict[str, Any]:
        rows = await self._run(cql, values, what=what, lwt=True)
        if not rows:
            raise ViewStoreError(f"Cassandra answered no [applied] row to {what}")
        row: dict[str, Any] = rows[0]
        return row

    # -- life cycle ------------------------------------------------------------------

    async def open(self, tables: Sequence[TableSchema]) -> list[str]:
        s = self._settings
        if self._session is None:
            try:
                await self._open_connection()
            except DRIVER_ERRORS as e:
                raise ViewStoreError(
                    f"cannot connect the view store to Cassandra at "
                    f"{','.join(s.contact_points)}:{s.port}: {e}; check "
                    f"{PREFIX}CONTACT_POINTS/PORT and that the cluster is up"
                ) from e
        # The keyspace is the journal's (it creates it, or the operator does); the view
        # tables follow the user function's queries, so the store always creates them.
        for cql in _registry_cql(self._ks):
            await self._run(cql, what="create the view registry", ddl=True)
        await self._add_done_column()
        by_view: dict[str, list[TableSchema]] = {}
        for t in tables:
            by_view.setdefault(t.view, []).append(t)
        rebuilt: list[str] = []
        for view, schemas in sorted(by_view.items()):
            key = view_key(view, schemas)
            self._keys[view] = key
            stale: set[str] = set()
            for schema in schemas:
                table = _Table(schema, key, self._ks)
                self._tables[schema.id] = table
                known = await self._run(
                    f"SELECT name, view_key FROM {self._ks}.view_tables WHERE id = ?",
                    (schema.id,),
                    what="read the view registry",
                )
                if known and known[0][1] != key:
                    stale.add(known[0][1])
                    await self._run(
                        f"DROP TABLE IF EXISTS {self._ks}.{known[0][0]}",
                        what=f"drop the old table of {schema.id}",
                        ddl=True,
                    )
                for cql in table.create():
                    await self._run(cql, what=f"create the table of {schema.id}", ddl=True)
            if stale:
                rebuilt += [t.id for t in schemas]
                for old in stale:
                    await self._forget(old)
            for schema in schemas:
                await self._run(
                    f"INSERT INTO {self._ks}.view_tables (id, name, fingerprint, view_key) "
                    "VALUES (?, ?, ?, ?)",
                    (schema.id, self._tables[schema.id].name, schema.fingerprint, key),
                    what="record a view table",
                    write=True,
                )
            await self._finish_pending(key)
            await self._take_over(key)
            await self._finish_claims(key)
        return rebuilt

    async def _forget(self, old_key: str) -> None:
        """Delete the offsets of a view's old generation (its tables are dropped)."""
        pids = [
            row[0]
            async for row in self._rows(
                f"SELECT pid FROM {self._ks}.view_offsets WHERE view_key = ?",
                (old_key,),
                what="list the offsets of a rebuilt view",
            )
        ]
        for pid in pids:
            await self._run(
                f"DELETE FROM {self._ks}.view_offsets WHERE view_key = ? AND pid = ?",
                (old_key, pid),
                what="delete an offset of a rebuilt view",
                write=True,
            )
        for bucket in range(BUCKETS):
            await self._run(
                f"DELETE FROM {self._ks}.view_claims WHERE view_key = ? AND bucket = ?",
                (old_key, bucket),
                what="delete the offsets of a rebuilt view",
                write=True,
            )

    async def _add_done_column(self) -> None:
        """`done` came with one LWT per change: an offsets table made before lacks it."""
        found = await self._run(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND "
            "table_name = 'view_offsets' AND column_name = 'done'",
            (self._ks,),
            what="read the columns of view_offsets",
        )
        if not found:
            await self._run(
                f"ALTER TABLE {self._ks}.view_offsets ADD done bigint",
                what="add the done column to view_offsets",
                ddl=True,
            )

    async def _finish_pending(self, key: str) -> None:
        """Finish every change a sidecar of the schemes before buckets claimed in
        `view_offsets` and did not finish (it crashed). CQL cannot compare two columns:
        the view's offset rows are read (without their intents) and compared here."""
        found = [
            pid
            async for pid, applied, done, pending in self._rows(
                f"SELECT pid, applied, done, pending FROM {self._ks}.view_offsets "
                "WHERE view_key = ?",
                (key,),
                what="find view changes left unfinished",
            )
            if applied != done or pending
        ]
        for pid in found:
            log.info("view %s: finishing the change of %s left unfinished", key, pid)
            await self._roll_forward(key, pid)

    async def _take_over(self, key: str) -> None:
        """Move the view's offset rows of `view_offsets` (all finished by now) into
        `view_claims`, then delete them. Per entity: its offset claimed with a
        transaction if it has no claim row yet (a sidecar of this scheme may have
        claimed a newer change already: that one stands), `done` written plainly with the
        row's `ts` (as every `done`: never by a transaction, whose cells carry the
        ballot's timestamp). The claims go as delivery's do, a conditional batch per
        bucket (a claim row that exists refuses its entity's). A crash in between leaves
        a claim with an empty intent and `done` behind: finished like any other
        (`_finish_claims`)."""
        old = [
            (pid, int(done), int(ts or 0))
            async for pid, done, ts in self._rows(
                f"SELECT pid, done, ts FROM {self._ks}.view_offsets WHERE view_key = ?",
                (key,),
                what="read the offsets of the scheme before buckets",
            )
            if done is not None
        ]
        if not old:
            return
        log.info("view %s: taking over %d offsets of the scheme before buckets", key, len(old))
        granted = await self._claim_all(
            key, [Claim(i, pid, 0, done, [], ts) for i, (pid, done, ts) in enumerate(old)]
        )
        await self._mark_done([(key, c.pid, c.offset, c.ts) for c in granted])
        delete = await self._prepare(
            f"DELETE FROM {self._ks}.view_offsets WHERE view_key = ? AND pid = ?"
        )
        await self._write_batched(
            [(delete, (key, pid), 16 + len(pid)) for pid, _, _ in old],
            what="delete the offsets taken over",
        )

    async def _claim_rows(self, key: str, columns: str) -> AsyncIterator[Any]:
        """The view's offset rows of `view_claims`, bucket after bucket."""
        for bucket in range(BUCKETS):
            async for row in self._rows(
                f"SELECT {columns} FROM {self._ks}.view_claims WHERE view_key = ? AND bucket = ?",
                (key, bucket),
                what="read the offsets of a view",
            ):
                yield row

    async def _finish_claims(self, key: str) -> None:
        """Finish every change claimed and not finished (a sidecar crashed, or is
        finishing it right now: finishing twice is harmless)."""
        found = [
            pid
            async for pid, applied, done in self._claim_rows(key, "pid, applied, done")
            if applied != done
        ]
        for pid in found:
            log.info("view %s: finishing the change of %s left unfinished", key, pid)
            await self._finish(key, pid)

    async def close(self) -> None:
        cluster, self._cluster, self._session = self._cluster, None, None
        self._prepared.clear()
        if cluster is not None:
            await asyncio.to_thread(cluster.shutdown)

    # -- rows and offsets ------------------------------------------------------------

    def _table(self, schema: TableSchema) -> _Table:
        table = self._tables.get(schema.id)
        if table is None:
            raise ViewStoreError(f"view table {schema.id} was not opened in the view store")
        return table

    async def row(self, table: TableSchema, key: str) -> bytes | None:
        t = self._table(table)
        rows = await self._run(t.select_row, (key,), what=f"read row {key!r} of {table.id}")
        return None if not rows else bytes(rows[0][0])

    async def offsets(self, view: str) -> Mapping[str, int]:
        key = self._keys.get(view, view)
        return {pid: int(done) async for pid, done in self._claim_rows(key, "pid, done") if done}

    async def load(
        self, view: str, pid: str, offset: int, changes: Sequence[RowChange], ts: int
    ) -> None:
        """Write rows and an entity's offset without transactions: for loading a table in
        bulk (the benchmark), never for delivery."""
        writes = [(self._table(c.table), c.key, c.row, c.values or None, ts) for c in changes]
        await self._write_rows(writes)
        await self._run(
            f"INSERT INTO {self._ks}.view_claims (view_key, bucket, pid, applied, done, ts) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (self._keys[view], bucket_of(pid), pid, offset, offset, ts),
            what=f"load the offset of {pid}",
            write=True,
        )

    async def _write_rows(self, rows: Sequence[_RowWrite]) -> None:
        writes: list[_Write] = []
        for table, key, row, values, ts in rows:
            if row is None:
                writes.append((await self._prepare(table.delete), (ts, key), len(key)))
            else:
                stored = table.values(row, values)
                writes.append(
                    (await self._prepare(table.upsert), (key, row, *stored, ts), 2 * len(row))
                )
        await self._write_batched(writes, what="write view rows")

    async def _write_batched(self, writes: Sequence[_Write], *, what: str) -> None:
        """Plain writes in unlogged batches, side by side. Not atomic, and need not be:
        every write here is timestamped and idempotent, a change's done marker is written
        only once its rows are, and a failed batch fails the changes whose writes it
        carried (their claims, found unfinished, write them again)."""
        groups: list[list[_Write]] = []
        size = BATCH_BYTES
        for write in writes:
            if size + write[2] > BATCH_BYTES or len(groups[-1]) >= BATCH_WRITES:
                groups.append([])
                size = 0
            groups[-1].append(write)
            size += write[2]
        session = self._need_session()

        async def send(group: list[_Write]) -> None:
            statement: Any
            if len(group) == 1:
                statement = group[0][0].bind(group[0][1])
            else:
                statement = BatchStatement(batch_type=BatchType.UNLOGGED)
                for prepared, values, _ in group:
                    statement.add(prepared, values)
                statement.is_idempotent = True
            try:
                await aio.result(
                    session.execute_async(
                        statement,
                        timeout=self._settings.request_timeout,
                        execution_profile=_WRITES,
                    )
                )
            except DRIVER_ERRORS as e:
                raise ViewStoreError(
                    f"Cassandra view store could not {what}: {describe(e)}; the view retries"
                ) from e

        await asyncio.gather(*(send(g) for g in groups))

    async def _mark_done(self, done: Sequence[tuple[str, str, int, int]]) -> None:
        """(view key, pid, offset, ts): each change's rows are all written. Timestamped
        with the change's `ts`: a late marker of an older change (a paused sidecar's)
        never overwrites a newer one."""
        statement = await self._prepare(
            f"UPDATE {self._ks}.view_claims USING TIMESTAMP ? SET done = ? "
            "WHERE view_key = ? AND bucket = ? AND pid = ?"
        )
        # Sorted by bucket: a batch of markers mostly goes to one partition.
        marks = sorted((bucket_of(pid), key, pid, offset, ts) for key, pid, offset, ts in done)
        await self._write_batched(
            [
                (statement, (ts, offset, key, bucket, pid), 16 + len(pid))
                for bucket, key, pid, offset, ts in marks
            ],
            what="mark view changes done",
        )

    async def _roll_forward(self, key: str, pid: str) -> None:
        """Finish the entity's change claimed in `view_offsets` (the schemes before
        buckets) if it is not done: write its intent's rows
        with its `ts`, then its marker. Read at the serial consistency: the intent and
        `ts` the last claim stored, never an older claim's."""
        stored = await self._run(
            f"SELECT applied, done, pending, ts, intent FROM {self._ks}.view_offsets "
            "WHERE view_key = ? AND pid = ?",
            (key, pid),
            what=f"read the unfinished change of {pid}",
            serial=True,
        )
        if not stored:
            return
        row = stored[0]
        applied, done, pending = row["applied"], row["done"], row["pending"]
        ts, intent = int(row["ts"] or 0), row["intent"] or []
        if not pending and (applied is None or applied == done):
            return  # finished meanwhile
        tables = {t.schema.id: t for t in self._tables.values() if t.view_key == key}
        # A row of a table no longer in the view is left out (the view was rebuilt).
        await self._write_rows(
            [(tables[tid], k, r, None, ts) for tid, k, r in intent if tid in tables]
        )
        if pending:
            # Claimed by a store of the two-LWT scheme (claim, then complete) that did
            # not complete it: complete it the same way, then mark it done.
            await self._transaction(
                f"UPDATE {self._ks}.view_offsets SET applied = ?, pending = 0 "
                "WHERE view_key = ? AND pid = ? IF pending = ?",
                (pending, key, pid, pending),
                what=f"complete change {pending} of {pid}",
            )
            applied = pending
        await self._run(
            f"UPDATE {self._ks}.view_offsets USING TIMESTAMP ? SET done = ? "
            "WHERE view_key = ? AND pid = ?",
            (ts, int(applied), key, pid),
            what=f"mark change {applied} of {pid} done",
            write=True,
        )

    async def _finish(self, key: str, pid: str) -> None:
        """Finish the entity's claimed change if it is not done: write its intent's rows
        with its `ts`, then its marker. Read at the serial consistency: the intent and
        `ts` the last claim stored, never an older claim's."""
        stored = await self._run(
            f"SELECT applied, done, ts, intent FROM {self._ks}.view_claims "
            "WHERE view_key = ? AND bucket = ? AND pid = ?",
            (key, bucket_of(pid), pid),
            what=f"read the unfinished change of {pid}",
            serial=True,
        )
        if not stored:
            return
        row = stored[0]
        applied, done = row["applied"], row["done"]
        ts, intent = int(row["ts"] or 0), row["intent"] or []
        if applied is None or applied == done:
            return  # finished meanwhile
        tables = {t.schema.id: t for t in self._tables.values() if t.view_key == key}
        # A row of a table no longer in the view is left out (the view was rebuilt).
        await self._write_rows(
            [(tables[tid], k, r, None, ts) for tid, k, r in intent if tid in tables]
        )
        await self._mark_done([(key, pid, int(applied), ts)])

    def _key(self, view: str) -> str:
        key = self._keys.get(view)
        if key is None:
            raise ViewStoreError(f"view {view} was not opened in the view store")
        return key

    async def _claim_all(self, key: str, claims: Sequence[Claim]) -> list[Claim]:
        """The claims granted: the buckets side by side, a bucket's batches one after the
        other (two rounds on one partition at once would only contend)."""
        per_bucket: dict[int, list[list[Claim]]] = {}
        for number, group in by_bucket(claims):
            per_bucket.setdefault(number, []).append(group)

        async def bucket(number: int, groups: list[list[Claim]]) -> list[Claim]:
            return [c for g in groups for c in await self._claim_bucket(key, number, g)]

        done = await asyncio.gather(*(bucket(b, gs) for b, gs in per_bucket.items()))
        return [claim for granted in done for claim in granted]

    async def _claim_bucket(self, key: str, bucket: int, claims: list[Claim]) -> list[Claim]:
        """Claim changes of entities in one bucket with one conditional batch (a Paxos
        round): the claims granted. A refused batch is sorted by the stored rows
        Cassandra answers and sent again with the claims whose conditions held; an
        entity whose stored change is unfinished has it finished (its claim refused:
        the offset moved, delivery rereads it)."""
        first = await self._prepare(
            f"INSERT INTO {self._ks}.view_claims "
            "(view_key, bucket, pid, applied, ts, intent) VALUES (?, ?, ?, ?, ?, ?) "
            "IF NOT EXISTS"
        )
        next_ = await self._prepare(
            f"UPDATE {self._ks}.view_claims SET applied = ?, ts = ?, intent = ? "
            "WHERE view_key = ? AND bucket = ? AND pid = ? "
            "IF applied = ? AND done = ? AND ts < ?"
        )
        session = self._need_session()
        what = f"claim {len(claims)} changes in bucket {bucket} of view {key}"
        for _ in range(4):
            if not claims:
                return []
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for c in claims:
                if c.expected == 0:
                    batch.add(first, (key, bucket, c.pid, c.offset, c.ts, c.intent))
                else:
                    batch.add(
                        next_,
                        (
                            c.offset,
                            c.ts,
                            c.intent,
                            key,
                            bucket,
                            c.pid,
                            c.expected,
                            c.expected,
                            c.ts,
                        ),
                    )
            batch.is_idempotent = False  # a transaction is never re-sent blindly
            try:
                rows = await aio.result(
                    session.execute_async(
                        batch, timeout=self._settings.request_timeout, execution_profile=_LWT
                    )
                )
            except DRIVER_ERRORS as e:
                raise ViewStoreError(
                    f"Cassandra view store could not {what}: {describe(e)}; the view retries"
                ) from e
            if not rows:
                raise ViewStoreError(f"Cassandra answered no [applied] row to {what}")
            if rows[0]["[applied]"]:
                return claims
            answer = sort_answer(claims, rows)
            for pid in answer.unfinished:
                # Claimed by a sidecar that crashed, or is finishing it now: finish it.
                await self._finish(key, pid)
            claims = answer.retry
        raise ViewStoreError(f"could not {what}: the offset rows kept changing")

    async def apply(
        self, view: str, pid: str, expected: int, offset: int, changes: Sequence[RowChange]
    ) -> bool:
        return (await self.apply_batch(view, [Applied(pid, expected, offset, changes)]))[0]

    async def apply_batch(self, view: str, items: Sequence[Applied]) -> list[bool]:
        # Cassandra has no transaction across partitions: a wave's claims go per bucket
        # (see above). In waves: the first item of every entity, then the second, … (one
        # entity's items in order); per wave the buckets' claims side by side, then
        # every claimed change's rows, then their done markers, each in a few batched
        # requests. An entity whose claim was refused has no claim in the later waves
        # (the contract: its later items are refused).
        key = self._key(view)
        results: list[bool] = [False] * len(items)
        chains: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            chains.setdefault(item.pid, []).append(i)
        for depth in range(max((len(c) for c in chains.values()), default=0)):
            ts = now_micros()
            wave = [
                Claim(
                    i,
                    items[i].pid,
                    items[i].expected,
                    items[i].offset,
                    [(c.table.id, c.key, c.row) for c in items[i].changes],
                    ts,
                )
                for i in (
                    c[depth]
                    for c in chains.values()
                    if len(c) > depth and (depth == 0 or results[c[depth - 1]])
                )
            ]
            if not wave:
                break  # every entity with items left was refused
            granted = await self._claim_all(key, wave)
            await self._write_rows(
                [
                    (self._table(c.table), c.key, c.row, c.values, claim.ts)
                    for claim in granted
                    for c in items[claim.index].changes
                ]
            )
            await self._mark_done([(key, c.pid, c.offset, c.ts) for c in granted])
            for claim in granted:
                results[claim.index] = True
        return results

    # -- queries ---------------------------------------------------------------------

    async def select(
        self, table: TableSchema, query: ValidatedQuery, request: Message
    ) -> AsyncIterator[bytes]:
        t = self._table(table)
        cached = self._plans.get(id(query))
        if cached is None or cached[0] is not query:
            cached = query, translate(query, table.columns), compile_filter(query)
            self._plans[id(query)] = cached
        _, condition, matches = cached
        bound = condition.bind(request)
        if bound.empty:
            return
        where = f" AND {bound.where}" if bound.where else ""
        # Paged by token (the order Cassandra returns partitions in): `>=` and the keys
        # already seen at the last token, so two keys sharing a token are both read.
        cql = (
            f"SELECT token(key), key, row FROM {t.full} WHERE token(key) >= ?{where} "
            f"LIMIT {PAGE_ROWS}"
        )
        row_class = message_class(table.row_type)
        after, seen = _MIN_TOKEN, set[str]()
        while True:
            page = await self._run(cql, (after, *bound.values), what=f"query {table.id}")
            fresh = [r for r in page if not (r[0] == after and r[1] in seen)]
            for _token, _key, row in fresh:
                data = bytes(row)
                if not bound.filter or matches(row_class.FromString(data), request):
                    yield data
            if len(page) < PAGE_ROWS:
                return
            last = page[-1][0]
            seen = {r[1] for r in page if r[0] == last} | (seen if last == after else set())
            if not fresh:
                # Every row of a full page shares one token: step past it (2^64 tokens,
                # more than a page of keys on one is not a practical case).
                last += 1
                seen = set()
            after = last


def now_micros() -> int:
    return time.time_ns() // 1000
