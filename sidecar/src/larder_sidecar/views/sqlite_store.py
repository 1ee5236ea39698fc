"""The embedded view store on SQLite (`larder dev`, the SQLite journal): `views.db` next to
the journal's file.

Each view table is one SQLite table: `key` (the row key, primary key), `row` (the row as
protobuf bytes) and one column per filter column of the view's queries (`c0`, `c1`, …),
each with its own index, so a query comparing an indexed column uses the index. The
`view_tables` registry records each table's fingerprint (row type and filter columns); a
change empties the table and the view's offsets at start, and delivery rebuilds it from
the journal. Like the journal, every statement runs on one worker thread owning the
connection, writes in `BEGIN IMMEDIATE` transactions (several `larder dev` replicas may
share the file).
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from .query import ValidatedQuery
from .sql import SqlCondition, translate
from .store import Applied, RowChange, TableSchema, ViewStoreError

_T = TypeVar("_T")

PAGE_ROWS = 256
"""Rows fetched per statement while a query streams: memory stays bounded."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS view_tables (
    id TEXT PRIMARY KEY, sql_name TEXT NOT NULL, fingerprint TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS view_offsets (
    view TEXT NOT NULL, pid TEXT NOT NULL, offset INTEGER NOT NULL, PRIMARY KEY (view, pid)
) WITHOUT ROWID;
"""


def sql_name(table: TableSchema) -> str:
    """A fixed SQL identifier for a view table (view and table names are free text)."""
    return "rows_" + hashlib.sha256(table.id.encode()).hexdigest()[:24]


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _apply_one(conn: sqlite3.Connection, view: str, item: Applied) -> bool:
    found = conn.execute(
        "SELECT offset FROM view_offsets WHERE view = ? AND pid = ?", (view, item.pid)
    ).fetchone()
    if (found[0] if found else 0) != item.expected:
        return False
    for change in item.changes:
        name = sql_name(change.table)
        if change.row is None:
            conn.execute(f"DELETE FROM {name} WHERE key = ?", (change.key,))
            continue
        marks = ", ?" * len(change.values)
        conn.execute(
            f"INSERT OR REPLACE INTO {name} VALUES (?, ?{marks})",
            (change.key, change.row, *change.values),
        )
    conn.execute(
        "INSERT OR REPLACE INTO view_offsets VALUES (?, ?, ?)", (view, item.pid, item.offset)
    )
    return True


class SqliteViewStore:
    """Implements `ViewStore` on one SQLite file."""

    kind = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self._path = str(path)
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # By the query's id, holding the query: an id is only unique while its object lives.
        self._conditions: dict[int, tuple[ValidatedQuery, SqlCondition]] = {}

    @property
    def path(self) -> str:
        return self._path

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._executor is None or self._conn is None:
            raise ViewStoreError(f"the SQLite view store {self._path} is not open")
        conn = self._conn
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)
        except sqlite3.Error as e:
            raise ViewStoreError(f"SQLite view store {self._path}: {e}") from e

    async def open(self, tables: Sequence[TableSchema]) -> list[str]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="larder-views-sqlite"
            )

            def connect() -> sqlite3.Connection:
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self._path,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=self._busy_timeout,
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
                return conn

            try:
                self._conn = await asyncio.get_running_loop().run_in_executor(
                    self._executor, connect
                )
            except (sqlite3.Error, OSError) as e:
                self._executor.shutdown(wait=False)
                self._executor = None
                raise ViewStoreError(
                    f"cannot open the SQLite view store {self._path}: {e}; check the "
                    "directory of the journal's file is writable"
                ) from e

        def create(conn: sqlite3.Connection) -> list[str]:
            rebuilt: list[str] = []
            with _immediate(conn):
                for t in tables:
                    name = sql_name(t)
                    found = conn.execute(
                        "SELECT fingerprint FROM view_tables WHERE id = ?", (t.id,)
                    ).fetchone()
                    if found is not None and found[0] != t.fingerprint:
                        conn.execute(f"DROP TABLE IF EXISTS {name}")
                        conn.execute("DELETE FROM view_offsets WHERE view = ?", (t.view,))
                        rebuilt.append(t.id)
                    columns = "".join(f", c{i}" for i in range(len(t.columns)))
                    conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} "
                        f"(key TEXT PRIMARY KEY, row BLOB NOT NULL{columns}) WITHOUT ROWID"
                    )
                    for i in range(len(t.columns)):
                        conn.execute(f"CREATE INDEX IF NOT EXISTS {name}_c{i} ON {name} (c{i})")
                    conn.execute(
                        "INSERT OR REPLACE INTO view_tables VALUES (?, ?, ?)",
                        (t.id, name, t.fingerprint),
                    )
                # A view whose table was rebuilt is rebuilt whole: its offsets are per view.
                views = {t.view for t in tables if t.id in rebuilt}
                for t in tables:
                    if t.view in views and t.id not in rebuilt:
                        conn.execute(f"DELETE FROM {sql_name(t)}")
                        rebuilt.append(t.id)
            return rebuilt

        return await self._run(create)

    async def close(self) -> None:
        executor, conn = self._executor, self._conn
        if executor is None:
            return
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        self._executor = self._conn = None
        executor.shutdown(wait=False)

    async def row(self, table: TableSchema, key: str) -> bytes | None:
        def get(conn: sqlite3.Connection) -> bytes | None:
            found = conn.execute(
                f"SELECT row FROM {sql_name(table)} WHERE key = ?", (key,)
            ).fetchone()
            return None if found is None else bytes(found[0])

        return await self._run(get)

    async def offsets(self, view: str) -> Mapping[str, int]:
        def get(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT pid, offset FROM view_offsets WHERE view = ?", (view,))
            return {pid: int(offset) for pid, offset in rows}

        return await self._run(get)

    async def apply(
        self, view: str, pid: str, expected: int, offset: int, changes: Sequence[RowChange]
    ) -> bool:
        (applied,) = await self.apply_batch(view, [Applied(pid, expected, offset, changes)])
        return applied

    async def apply_batch(self, view: str, items: Sequence[Applied]) -> list[bool]:
        def apply(conn: sqlite3.Connection) -> list[bool]:
            refused: set[str] = set()
            results: list[bool] = []
            with _immediate(conn):
                for item in items:
                    # After a refused item of its pid: refused too (the contract's why).
                    ok = item.pid not in refused and _apply_one(conn, view, item)
                    if not ok:
                        refused.add(item.pid)
                    results.append(ok)
            return results

        return await self._run(apply)

    async def select(
        self, table: TableSchema, query: ValidatedQuery, request: Message
    ) -> AsyncIterator[bytes]:
        cached = self._conditions.get(id(query))
        if cached is None or cached[0] is not query:
            cached = query, translate(query, [c.path for c in table.columns])
            self._conditions[id(query)] = cached
        condition = cached[1]
        args: tuple[Any, ...] = condition.bind(request)
        sql = (
            f"SELECT key, row FROM {sql_name(table)} WHERE key > ? AND ({condition.sql}) "
            f"ORDER BY key LIMIT {PAGE_ROWS}"
        )
        after = ""
        while True:

            def fetch(conn: sqlite3.Connection, after: str = after) -> list[Any]:
                return conn.execute(sql, (after, *args)).fetchall()

            page = await self._run(fetch)
            for _key, row in page:
                yield bytes(row)
            if len(page) < PAGE_ROWS:
                return
            after = page[-1][0]
