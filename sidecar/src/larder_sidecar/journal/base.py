"""The journal contract every store implements (in-memory, SQLite, Cassandra).

Error tree (what the caller should do next)::

    JournalError
    ├── ConcurrentWriteError   another writer got there first: reload the entity, fail the
    │                          command with a retryable status (ABORTED)
    ├── JournalUnavailable     the store cannot be reached now: fail fast (UNAVAILABLE), retry later
    │   └── WriteOutcomeUnknown  the write may or may not have landed: never retry blindly,
    │                            reload the entity from the journal before its next command
    └── JournalCorrupt         stored data cannot be read back: report, do not retry
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NewType, Protocol

PersistenceId = NewType("PersistenceId", str)
"""`<entity type>|<entity id>`: the key an entity's data is stored under."""


def persistence_id(entity_type: str, entity_id: str) -> PersistenceId:
    # Discovery refuses an entity type containing '|' (the default type is the service's
    # full name, which cannot contain one), so the first '|' splits type from id whatever
    # the id contains.
    return PersistenceId(f"{entity_type}|{entity_id}")


@dataclass(frozen=True, slots=True)
class StoredPayload:
    """A protobuf `Any` as stored: its type URL and serialized value."""

    type_url: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Snapshot:
    sequence_nr: int
    """Sequence number of the last event the snapshot includes."""
    payload: StoredPayload


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What an entity remembers of one command a client sent with an idempotency key.

    Stored by the same write as the command's events or state, so a record exists
    exactly when the command's effects do. `data` is opaque to the journal (the entity
    layer encodes the request's fingerprint and the reply in it:
    `entities/idempotency.py`)."""

    key: str
    stored_at: float
    """Wall-clock seconds since the epoch when the command was handled."""
    data: bytes


@dataclass(frozen=True, slots=True)
class IdempotencyWrite:
    """How one write changes an entity's idempotency records."""

    put: Sequence[IdempotencyRecord]
    """Records of the commands this write stores."""
    drop: Sequence[str]
    """Keys to forget: expired, or the oldest beyond the bound per entity."""
    live: Sequence[IdempotencyRecord]
    """Every record the entity keeps after this write (`put` included). A store that
    keeps the records next to the write's data where the data moves on (Cassandra's
    event partitions) copies them over; the others ignore it."""
    window: float
    """Seconds a record is kept after `stored_at`; a store may expire it by itself."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """What an event-sourced entity is activated from."""

    snapshot: Snapshot | None
    events: Sequence[StoredPayload]
    """Events after the snapshot, in order."""
    last_sequence_nr: int
    """Highest stored sequence number (0 for a new entity)."""
    idempotency: Sequence[IdempotencyRecord] = ()
    """The records stored with the entity's writes (expired ones may be among them)."""


@dataclass(frozen=True, slots=True)
class ValueState:
    payload: StoredPayload | None
    """None when the entity has no state (never written, or deleted)."""
    revision: int
    """Bumped on every write and delete; 0 for an entity never written."""
    idempotency: Sequence[IdempotencyRecord] = ()
    """The records stored with the entity's writes (expired ones may be among them)."""


class JournalError(Exception):
    """Base class of every journal error."""


class ConcurrentWriteError(JournalError):
    """The expected sequence number or revision was already taken by another writer."""


class JournalUnavailable(JournalError):
    """The store could not be reached or did not answer in time."""


class WriteOutcomeUnknown(JournalUnavailable):
    """A write timed out after it was sent: it may or may not be stored."""


class JournalCorrupt(JournalError):
    """Stored data could not be decoded."""


class Journal(Protocol):
    """Async storage of events, snapshots and value-entity state.

    Sequence numbers start at 1 and have no gaps. `append` is atomic per call:
    all of a command's events (and its snapshot) are stored or none are.
    """

    async def start(self) -> None:
        """Connect and create what is missing; raise JournalUnavailable if impossible."""

    async def close(self) -> None: ...

    async def ready(self) -> bool:
        """Whether the store answers now (used by the readiness probe)."""

    async def load(self, pid: PersistenceId) -> Recovery: ...

    async def append(
        self,
        pid: PersistenceId,
        expected_sequence_nr: int,
        events: Sequence[StoredPayload],
        snapshot: StoredPayload | None = None,
        idempotency: IdempotencyWrite | None = None,
    ) -> int:
        """Store `events` after `expected_sequence_nr` (the entity's current last number).

        `snapshot`, if given, is the state after the last of `events`. `idempotency`
        changes the entity's records in the same atomic, fenced write (only with
        events). Returns the new last sequence number. Raises ConcurrentWriteError if
        any of the numbers exists.
        """

    async def load_value(self, pid: PersistenceId) -> ValueState: ...

    async def put_value(
        self,
        pid: PersistenceId,
        expected_revision: int,
        payload: StoredPayload | None,
        idempotency: IdempotencyWrite | None = None,
    ) -> int:
        """Replace (or with None, delete) the state if the revision still matches, and
        change the entity's idempotency records in the same write.

        Returns the new revision. Raises ConcurrentWriteError on a mismatch.
        """
