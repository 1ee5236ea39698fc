"""The view store contract, and the in-memory store for tests and the memory journal.

A table keeps, per row key, the row as protobuf bytes plus the values of the columns the
view's queries filter on (`columns.py`), extracted when the row is written. Next to the
rows the store keeps, per view and per source entity (persistence id), the offset of the
last change applied: the value entity's revision or the event's sequence number. A change
is applied only if the offset it expects is the stored one, in the same transaction as its
rows, which makes delivery idempotent and keeps it in order per entity (`delivery.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from larder_protocol import message_class

from ..journal.base import JournalUnavailable
from .columns import Extractor, StoredValue, extractor
from .query import FilterColumn, RowFilter, ValidatedQuery, compile_filter

STORAGE_FORMAT = 2
"""How filter columns are stored (`columns.py`); part of every table's fingerprint, so a
change of it rebuilds the tables. 2: timestamps as fixed-width text."""


class ViewStoreError(JournalUnavailable):
    """The view store failed; the message says what and where. A kind of
    `JournalUnavailable`: the view store is the journal's sibling, and start-up reports
    it the same way."""


@dataclass(frozen=True)
class TableSchema:
    """One table of one view: its row type and the columns its queries filter on."""

    view: str
    table: str
    row_type: Descriptor
    columns: tuple[FilterColumn, ...]
    _extractors: tuple[Extractor, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_extractors", tuple(extractor(self.row_type, c.path) for c in self.columns)
        )

    @property
    def id(self) -> str:
        return f"{self.view}/{self.table}"

    @property
    def fingerprint(self) -> str:
        """Changes when the row type's name or the filter columns change: the stored
        columns no longer fit and the table is rebuilt from the journal."""
        text = f"{STORAGE_FORMAT}|{self.row_type.full_name}|" + ",".join(
            ".".join(c.path) + ":" + c.type.name for c in self.columns
        )
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def values(self, row: Message) -> tuple[StoredValue, ...]:
        """The filter column values of `row`, in `columns` order."""
        return tuple(get(row) for get in self._extractors)


@dataclass(frozen=True)
class RowChange:
    """Store `row` (serialized) under `key`, or with None remove the row."""

    table: TableSchema
    key: str
    row: bytes | None
    values: tuple[StoredValue, ...] = ()


@dataclass(frozen=True)
class Applied:
    """One entity's change for `ViewStore.apply_batch`: `changes` and the new `offset`,
    if the stored offset of its persistence id is `expected`."""

    pid: str
    expected: int
    offset: int
    changes: Sequence[RowChange]


class ViewStore(Protocol):
    kind: str
    """What stores the tables (`memory`, `sqlite`, `cassandra`): a view query span's
    `larder.view.store`."""

    async def open(self, tables: Sequence[TableSchema]) -> list[str]:
        """Create what is missing; a table whose fingerprint changed is emptied, with the
        offsets of its view, so delivery rebuilds it. Returns the ids of tables emptied."""

    async def close(self) -> None: ...

    async def row(self, table: TableSchema, key: str) -> bytes | None: ...

    async def offsets(self, view: str) -> Mapping[str, int]:
        """The last applied offset by persistence id."""

    async def apply(
        self, view: str, pid: str, expected: int, offset: int, changes: Sequence[RowChange]
    ) -> bool:
        """If the stored offset of (`view`, `pid`) is `expected` (0 when none), apply
        `changes` and store `offset`, atomically; False (and nothing written) otherwise."""

    async def apply_batch(self, view: str, items: Sequence[Applied]) -> list[bool]:
        """`apply` for each item in order, in one transaction: an item whose offset does
        not match is left out (False), the others are written. An item after a refused
        one of the same pid is refused too, whatever its offset: delivery may have made
        its rows from the refused one's (an update handler's previous row)."""

    def select(
        self, table: TableSchema, query: ValidatedQuery, request: Message
    ) -> AsyncIterator[bytes]:
        """The rows `query` selects for `request`, in row key order, fetched in pages."""


class MemoryViewStore:
    """Implements `ViewStore` in memory; every call completes without yielding."""

    kind = "memory"

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, bytes]] = {}
        self._offsets: dict[str, dict[str, int]] = {}
        # By the query's id, holding the query: an id is only unique while its object lives.
        self._filters: dict[int, tuple[ValidatedQuery, RowFilter]] = {}

    async def open(self, tables: Sequence[TableSchema]) -> list[str]:
        for t in tables:
            self._rows.setdefault(t.id, {})
        return []

    async def close(self) -> None:
        return None

    async def row(self, table: TableSchema, key: str) -> bytes | None:
        return self._rows.get(table.id, {}).get(key)

    async def offsets(self, view: str) -> Mapping[str, int]:
        return dict(self._offsets.get(view, {}))

    async def apply(
        self, view: str, pid: str, expected: int, offset: int, changes: Sequence[RowChange]
    ) -> bool:
        offsets = self._offsets.setdefault(view, {})
        if offsets.get(pid, 0) != expected:
            return False
        for change in changes:
            rows = self._rows.setdefault(change.table.id, {})
            if change.row is None:
                rows.pop(change.key, None)
            else:
                rows[change.key] = change.row
        offsets[pid] = offset
        return True

    async def apply_batch(self, view: str, items: Sequence[Applied]) -> list[bool]:
        refused: set[str] = set()
        results: list[bool] = []
        for item in items:
            ok = item.pid not in refused and await self.apply(
                view, item.pid, item.expected, item.offset, item.changes
            )
            if not ok:
                refused.add(item.pid)
            results.append(ok)
        return results

    async def select(
        self, table: TableSchema, query: ValidatedQuery, request: Message
    ) -> AsyncIterator[bytes]:
        cached = self._filters.get(id(query))
        if cached is None or cached[0] is not query:
            cached = self._filters[id(query)] = query, compile_filter(query)
        matches = cached[1]
        row_class = message_class(table.row_type)
        rows = self._rows.get(table.id, {})
        for key in sorted(rows):
            data = rows.get(key)
            if data is not None and matches(row_class.FromString(data), request):
                yield data
