"""The journal as the entities see it when views are declared: every call goes to the real
journal, and each write that returns (committed) is published to the views.

Publishing happens after the write returned and before the entity's command completes, in
the entity's own task, so one entity's changes are published in the order they were
committed. A write that fails or whose outcome is unknown (`WriteOutcomeUnknown`) is not
published: what it stored, if anything, reaches the views by catch-up (`catchup.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..journal.base import Journal, PersistenceId, Recovery, StoredPayload, ValueState


@dataclass(frozen=True, slots=True)
class ValueChanged:
    """A value entity's state at `revision` (None: deleted)."""

    pid: PersistenceId
    revision: int
    payload: StoredPayload | None


@dataclass(frozen=True, slots=True)
class EventsAppended:
    """Events of an event-sourced entity, numbered from `first_seq`."""

    pid: PersistenceId
    first_seq: int
    events: tuple[StoredPayload, ...]

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.events) - 1


Change = ValueChanged | EventsAppended
Publish = Callable[[Change], None]


class FeedingJournal:
    """Implements `Journal` over another journal, publishing committed writes.

    Extra arguments of `append`/`put_value` (such as idempotency records) pass through
    unchanged, and so does any other attribute of the wrapped journal.
    """

    def __init__(self, inner: Journal, publish: Publish) -> None:
        self.inner = inner
        self._publish = publish

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def ready(self) -> bool:
        return await self.inner.ready()

    async def load(self, pid: PersistenceId) -> Recovery:
        return await self.inner.load(pid)

    async def load_value(self, pid: PersistenceId) -> ValueState:
        return await self.inner.load_value(pid)

    async def append(
        self,
        pid: PersistenceId,
        expected_sequence_nr: int,
        events: Sequence[StoredPayload],
        snapshot: StoredPayload | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> int:
        last = await self.inner.append(
            pid, expected_sequence_nr, events, snapshot, *args, **kwargs
        )
        if events:
            self._publish(EventsAppended(pid, expected_sequence_nr + 1, tuple(events)))
        return last

    async def put_value(
        self,
        pid: PersistenceId,
        expected_revision: int,
        payload: StoredPayload | None,
        *args: Any,
        **kwargs: Any,
    ) -> int:
        revision = await self.inner.put_value(pid, expected_revision, payload, *args, **kwargs)
        self._publish(ValueChanged(pid, revision, payload))
        return revision
