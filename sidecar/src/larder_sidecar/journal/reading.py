"""Read-only access to a journal for inspection: listing entities, paging their events.

This is not part of the `Journal` contract the sidecar runs on: nothing here is on a
command's path, and some of it (listing the entities of a Cassandra keyspace) scans a
whole table. `larder inspect` (`larder_sidecar.inspector`) is its user.

Errors (what the caller should do next)::

    JournalError
    ├── NotAJournal          the file or keyspace holds no Larder journal: fix the input
    │   └── SchemaMismatch   it holds Larder's tables, in a shape this version does not read
    ├── SettingMismatch      the reader's settings do not fit the stored data: fix the input
    ├── JournalUnavailable   the store cannot be reached now (from base)
    └── JournalCorrupt       a row cannot be read back (from base)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from .base import JournalCorrupt, JournalError, PersistenceId, StoredPayload

EntityKind = Literal["event-sourced", "value"]


class NotAJournal(JournalError):
    """The store was reached but holds no Larder journal."""


class SchemaMismatch(NotAJournal):
    """The store holds Larder's tables with columns this version does not read."""


class SettingMismatch(JournalError):
    """The data is stored where the reader's settings (a partition size) do not put it."""


class BadContinuation(ValueError):
    """A continuation token that no page of this journal printed: fix the input."""


def split_persistence_id(pid: str) -> tuple[str, str]:
    """(entity type, entity id) of a persistence id; the inverse of `persistence_id`."""
    # The type is a protobuf full name, which has no '|'; the id may contain one.
    entity_type, sep, entity_id = pid.partition("|")
    if not sep or not entity_type:
        raise JournalCorrupt(
            f"persistence id {pid!r} is not `<entity type>|<entity id>`; it was not "
            "written by Larder"
        )
    return entity_type, entity_id


def type_range(entity_type: str) -> tuple[str, str]:
    """[low, high): the persistence ids of one entity type in text order.

    '}' is the character after '|', so every `<type>|...` sorts below `<type>}`.
    """
    return f"{entity_type}|", f"{entity_type}}}"


@dataclass(frozen=True, slots=True)
class EntityTypeCount:
    entity_type: str
    kind: EntityKind
    entities: int


@dataclass(frozen=True, slots=True)
class EntityRef:
    entity_type: str
    entity_id: str
    kind: EntityKind


@dataclass(frozen=True, slots=True)
class EntityPage:
    entities: Sequence[EntityRef]
    next_after: str | None
    """Continuation token for the next page; None on the last page."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    sequence_nr: int
    payload: StoredPayload
    written_at: datetime | None
    """When the journal stored it, if the journal keeps that (Cassandra does, SQLite not)."""


@dataclass(frozen=True, slots=True)
class EventPage:
    events: Sequence[StoredEvent]
    next_from_seq: int | None
    """The sequence number the next page starts at; None when no event follows."""


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    sequence_nr: int
    payload: StoredPayload
    written_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoredValue:
    revision: int
    payload: StoredPayload | None
    """None when the entity was deleted."""
    written_at: datetime | None


@dataclass(frozen=True, slots=True)
class EntityInfo:
    """What the journal holds for one persistence id."""

    pid: PersistenceId
    kind: EntityKind
    last_sequence_nr: int
    """Of an event-sourced entity: its highest event number (0 for a value entity)."""
    snapshot_sequence_nr: int | None
    value_revision: int | None


class JournalReader(Protocol):
    """Read-only, paged access to everything a journal holds. Blocking: for a CLI."""

    def close(self) -> None: ...

    def entity_types(self) -> Sequence[EntityTypeCount]:
        """Every entity type with its number of entities, sorted by type."""

    def entity_ids(self, entity_type: str, *, limit: int, after: str | None) -> EntityPage:
        """Up to `limit` entities of a type, continuing after a token of a previous page."""

    def entity(self, pid: PersistenceId) -> EntityInfo | None:
        """None when nothing at all is stored under `pid`."""

    def events(self, pid: PersistenceId, *, from_seq: int, limit: int) -> EventPage:
        """Up to `limit` events numbered `from_seq` and after, in order."""

    def snapshot(self, pid: PersistenceId) -> StoredSnapshot | None: ...

    def value(self, pid: PersistenceId) -> StoredValue | None: ...


def check_columns(
    where: str, table: str, found: dict[str, str], wanted: dict[str, str]
) -> SchemaMismatch | None:
    """A SchemaMismatch naming the difference if `found` lacks a wanted column or type."""
    wrong = [
        f"{name} {kind}" for name, kind in wanted.items() if found.get(name, "").lower() != kind
    ]
    if not wrong:
        return None
    has = ", ".join(f"{name} {kind}" for name, kind in found.items()) or "no columns"
    return SchemaMismatch(
        f"{where} has a table {table} but not the columns this Larder reads ("
        f"{', '.join(wrong)} missing or of another type; it has {has}); it was written by "
        "another version of Larder's journal schema, so inspect it with that version's "
        "`larder inspect`"
    )
