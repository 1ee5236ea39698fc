"""An embedded durable journal on SQLite, for local development.

sqlite3 is a blocking C library, so every statement runs on one dedicated worker
thread that owns the connection; the event loop only awaits futures. One thread
also serialises writes, which is what SQLite wants anyway. WAL mode keeps readers
from blocking the writer.

Several processes may share one file (`larder dev --replicas N` runs N sidecars on it).
SQLite lets one of them write at a time: another's `BEGIN IMMEDIATE` waits for the
write lock (the busy timeout below) instead of failing at once with SQLITE_BUSY, and a
write that still cannot start after it is `JournalUnavailable` (retryable). Fencing is
unchanged: the sequence-number or revision check runs inside the write transaction, so
a second writer of an entity, in this process or another, gets `ConcurrentWriteError`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypeVar

from .base import (
    ConcurrentWriteError,
    IdempotencyRecord,
    IdempotencyWrite,
    JournalCorrupt,
    JournalUnavailable,
    PersistenceId,
    Recovery,
    Snapshot,
    StoredPayload,
    ValueState,
)

_T = TypeVar("_T")

BUSY_TIMEOUT_S = 5.0
"""How long a statement waits for another connection's lock (another process's write
transaction, a checkpoint's recovery) before it fails with SQLITE_BUSY. Writes here
take milliseconds, so waiting this long means the file is stuck, not busy. Set
explicitly rather than relying on the `sqlite3` module's default (also 5 s): with
several processes on one file, a timeout of 0 would fail commands under plain
contention."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    pid TEXT NOT NULL, seq INTEGER NOT NULL, type_url TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (pid, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    pid TEXT PRIMARY KEY, seq INTEGER NOT NULL, type_url TEXT NOT NULL, value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS value_state (
    pid TEXT PRIMARY KEY, revision INTEGER NOT NULL, type_url TEXT, value BLOB
);
-- An entity's idempotency records (docs/http.md), written in the transaction of the
-- command's events or state. Added later: CREATE IF NOT EXISTS adds it to old files.
CREATE TABLE IF NOT EXISTS idempotency (
    pid TEXT NOT NULL, key TEXT NOT NULL, stored_at REAL NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (pid, key)
) WITHOUT ROWID;
"""


def _load_records(conn: sqlite3.Connection, pid: PersistenceId) -> tuple[IdempotencyRecord, ...]:
    rows = conn.execute(
        "SELECT key, stored_at, data FROM idempotency WHERE pid = ?", (pid,)
    ).fetchall()
    return tuple(IdempotencyRecord(r[0], float(r[1]), bytes(r[2])) for r in rows)


def _change_records(
    conn: sqlite3.Connection, pid: PersistenceId, change: IdempotencyWrite | None
) -> None:
    """Inside the write's transaction."""
    if change is None:
        return
    conn.executemany(
        "DELETE FROM idempotency WHERE pid = ? AND key = ?", [(pid, k) for k in change.drop]
    )
    conn.executemany(
        "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?)",
        [(pid, r.key, r.stored_at, r.data) for r in change.put],
    )


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock up front so the check-then-insert
    inside it is atomic."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _conflict(pid: PersistenceId, what: str, expected: int, found: int) -> ConcurrentWriteError:
    return ConcurrentWriteError(
        f"{pid}: expected {what} {expected} but the journal holds {found}; another writer "
        "owns this entity"
    )


class SqliteJournal:
    """Implements `Journal` on one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Literal["normal", "full"] = "normal",
        busy_timeout: float = BUSY_TIMEOUT_S,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous={synchronous!r} is not 'normal' or 'full'")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout={busy_timeout!r} is negative")
        self._path = str(path)
        self._busy_timeout = busy_timeout
        # WAL with NORMAL syncs at checkpoints, not at every commit: a process crash loses
        # nothing, a machine crash or power loss can lose the last commits. FULL syncs the
        # WAL at every commit.
        self._synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._executor is None or self._conn is None:
            raise JournalUnavailable(
                f"the SQLite journal {self._path} is not started (or already closed)"
            )
        conn = self._conn
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError):
                if e.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                    raise JournalUnavailable(
                        f"SQLite journal {self._path}: {e} (another process held its lock "
                        f"for more than {self._busy_timeout:g}s); retry"
                    ) from e
                raise JournalUnavailable(f"SQLite journal {self._path}: {e}") from e
            raise JournalCorrupt(f"SQLite journal {self._path}: {e}") from e

    async def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="larder-sqlite")
        loop = asyncio.get_running_loop()

        def connect() -> sqlite3.Connection:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: transactions are explicit BEGIN IMMEDIATE ... COMMIT.
            # `timeout` is SQLite's busy timeout (sqlite3_busy_timeout), which also covers
            # the WAL switch and the schema below when processes start together.
            conn = sqlite3.connect(
                self._path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._busy_timeout,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            conn.executescript(_SCHEMA)
            return conn

        try:
            self._conn = await loop.run_in_executor(self._executor, connect)
        except (sqlite3.Error, OSError) as e:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise JournalUnavailable(
                f"cannot open the SQLite journal {self._path}: {e}; check the path "
                "(LARDER_JOURNAL_SQLITE_PATH) is writable"
            ) from e

    async def close(self) -> None:
        executor, conn = self._executor, self._conn
        if executor is None:
            return
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        self._executor = self._conn = None
        executor.shutdown(wait=False)

    async def ready(self) -> bool:
        try:
            await self._run(lambda c: c.execute("SELECT 1").fetchone())
        except JournalUnavailable:
            return False
        return True

    async def load(self, pid: PersistenceId) -> Recovery:
        def load(conn: sqlite3.Connection) -> Recovery:
            snap_row = conn.execute(
                "SELECT seq, type_url, value FROM snapshots WHERE pid = ?", (pid,)
            ).fetchone()
            snapshot = (
                Snapshot(snap_row[0], StoredPayload(snap_row[1], bytes(snap_row[2])))
                if snap_row
                else None
            )
            after = snapshot.sequence_nr if snapshot else 0
            rows = conn.execute(
                "SELECT seq, type_url, value FROM events WHERE pid = ? AND seq > ? ORDER BY seq",
                (pid, after),
            ).fetchall()
            last = rows[-1][0] if rows else after
            if rows and (rows[0][0] != after + 1 or last - after != len(rows)):
                raise JournalCorrupt(f"{pid}: the stored event sequence numbers have gaps")
            events = tuple(StoredPayload(r[1], bytes(r[2])) for r in rows)
            return Recovery(
                snapshot=snapshot,
                events=events,
                last_sequence_nr=last,
                idempotency=_load_records(conn, pid),
            )

        return await self._run(load)

    async def append(
        self,
        pid: PersistenceId,
        expected_sequence_nr: int,
        events: Sequence[StoredPayload],
        snapshot: StoredPayload | None = None,
        idempotency: IdempotencyWrite | None = None,
    ) -> int:
        def append(conn: sqlite3.Connection) -> int:
            with _immediate(conn):
                (current,) = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM events WHERE pid = ?", (pid,)
                ).fetchone()
                if current != expected_sequence_nr:
                    raise _conflict(pid, "sequence number", expected_sequence_nr, current)
                seq = expected_sequence_nr
                rows = []
                for event in events:
                    seq += 1
                    rows.append((pid, seq, event.type_url, event.value))
                conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
                if rows:
                    _change_records(conn, pid, idempotency)
                if snapshot is not None:
                    conn.execute(
                        "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?)",
                        (pid, seq, snapshot.type_url, snapshot.value),
                    )
            return seq

        return await self._run(append)

    async def load_value(self, pid: PersistenceId) -> ValueState:
        def load(conn: sqlite3.Connection) -> ValueState:
            row = conn.execute(
                "SELECT revision, type_url, value FROM value_state WHERE pid = ?", (pid,)
            ).fetchone()
            if row is None:
                return ValueState(payload=None, revision=0)
            payload = StoredPayload(row[1], bytes(row[2])) if row[1] is not None else None
            return ValueState(
                payload=payload, revision=row[0], idempotency=_load_records(conn, pid)
            )

        return await self._run(load)

    async def put_value(
        self,
        pid: PersistenceId,
        expected_revision: int,
        payload: StoredPayload | None,
        idempotency: IdempotencyWrite | None = None,
    ) -> int:
        def put(conn: sqlite3.Connection) -> int:
            with _immediate(conn):
                row = conn.execute(
                    "SELECT revision FROM value_state WHERE pid = ?", (pid,)
                ).fetchone()
                current = row[0] if row else 0
                if current != expected_revision:
                    raise _conflict(pid, "revision", expected_revision, current)
                type_url = payload.type_url if payload else None
                value = payload.value if payload else None
                conn.execute(
                    "INSERT OR REPLACE INTO value_state VALUES (?, ?, ?, ?)",
                    (pid, current + 1, type_url, value),
                )
                _change_records(conn, pid, idempotency)
            return int(current + 1)

        return await self._run(put)
