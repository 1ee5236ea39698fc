"""Event-sourced entities: replay on activation, and group commit of emitted events.

The entity does not wait for a command's events to be stored before the user function
handles its next queued command: while one journal write is in flight, the events of
the commands handled meanwhile gather and go in the next write, one transaction for
all of them, and each reply is released when everything up to its own events is
stored. A failed write fails its group and every command handled after it; the entity
then restarts from the journal.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import Any

import grpc

from .. import tracing
from ..invoke import InvokeError
from ..journal.base import IdempotencyRecord, JournalError, StoredPayload
from ..model import Kind
from ..outcome import Outcome
from ..protocol import event_sourced_entity_pb2 as es_pb2
from .command import Command, settle_error
from .entity import Entity, InDoubt, StreamBroken
from .environment import EntityEnvironment
from .lifecycle import Event, State

# One group-commit write carries at most this many commands, and this many payload
# bytes unless a single command alone is larger.
_MAX_GROUP_COMMANDS = 64
_MAX_GROUP_BYTES = 32 * 1024


def _any(payload: StoredPayload) -> dict[str, Any]:
    return {"type_url": payload.type_url, "value": payload.value}


@dataclass(slots=True)
class _Unstored:
    """A handled command whose reply waits for its events (and everyone's before)."""

    command: Command
    outcome: Outcome
    events: list[StoredPayload]
    snapshot: StoredPayload | None
    size: int
    record: IdempotencyRecord | None
    """Stored with the events, for a command with an idempotency key."""


class EventSourcedEntity(Entity):
    __slots__ = ("_failed", "_sequence_nr", "_unstored", "_writer")

    kind = Kind.EVENT_SOURCED

    def __init__(self, env: EntityEnvironment, entity_id: str) -> None:
        # Before the task that `Entity` starts can run (it runs no earlier than the
        # next turn of the loop, but everything it reads is set here first).
        self._sequence_nr = 0  # the last sequence number stored in the journal
        self._writer: asyncio.Task[None] | None = None
        self._failed: StreamBroken | None = None
        self._unstored: list[_Unstored] = []
        super().__init__(env, entity_id)

    async def _open(self) -> None:
        self._failed = None
        started = time.perf_counter()
        recovery = await self.env.journal.load(self.pid)
        self.env.metrics.journal_latency.labels("load").observe(time.perf_counter() - started)
        self._call = call = self.env.stub.Handle()
        init = es_pb2.EventSourcedInit(service_name=self.env.service, entity_id=self.entity_id)
        seq = 0
        if recovery.snapshot is not None:
            seq = recovery.snapshot.sequence_nr
            init.snapshot.snapshot_sequence = seq
            init.snapshot.snapshot.type_url = recovery.snapshot.payload.type_url
            init.snapshot.snapshot.value = recovery.snapshot.payload.value
        await call.write(es_pb2.EventSourcedStreamIn(init=init))
        for event in recovery.events:
            seq += 1
            await call.write(
                es_pb2.EventSourcedStreamIn(
                    event=es_pb2.EventSourcedEvent(sequence=seq, payload=_any(event))
                )
            )
        self._sequence_nr = recovery.last_sequence_nr
        self.records.load(recovery.idempotency)
        tracing.annotate(
            {
                "larder.events.replayed": len(recovery.events),
                "larder.snapshot.sequence_nr": (
                    recovery.snapshot.sequence_nr if recovery.snapshot else 0
                ),
            }
        )

    def _command_in(self, command: Any) -> Any:
        return es_pb2.EventSourcedStreamIn(command=command)

    async def _complete(
        self, command: Command, reply: Any, outcome: Outcome, key: str | None
    ) -> None:
        if self._failed is not None:
            # The user function handled this command on top of events that were not
            # stored: its reply describes a state that does not exist.
            settle_error(command.future, _not_stored(self._failed))
            self._restart(self._failed.message)
            return
        failed = outcome.kind == "failure"  # a failure reply stores nothing
        events = [] if failed else [StoredPayload(e.type_url, e.value) for e in reply.events]
        snapshot = (
            StoredPayload(reply.snapshot.type_url, reply.snapshot.value)
            if not failed and reply.HasField("snapshot")
            else None
        )
        if not events and snapshot is None and self._writer is None:
            # Nothing to store and nothing stored-to-be that this reply may have seen.
            if not command.future.done():
                command.future.set_result(outcome)
            return
        size = sum(len(e.value) for e in events) + (len(snapshot.value) if snapshot else 0)
        # Only a command that stores events leaves a record: the record goes in the
        # events' write, and a command that changed nothing can simply run again.
        record = self._record(command, key, outcome) if key is not None and events else None
        if record is not None:
            if self._unstored_keys is None:
                self._unstored_keys = set()
            self._unstored_keys.add(record.key)
        self._unstored.append(_Unstored(command, outcome, events, snapshot, size, record))
        if self._writer is None:
            self._writer = self._loop.create_task(
                self._write_behind(), name=f"journal writes {self.entity_type}/{self.entity_id}"
            )
        if len(self._unstored) >= _MAX_GROUP_COMMANDS and self.state is State.HANDLING:
            # Back-pressure: a slow journal must not let handled commands pile up. (A
            # command that restarted the entity needs none: activation drains first.)
            self.lifecycle.fire(Event.WRITE)
            await self._drain()

    async def _write_behind(self) -> None:
        """Store the unstored replies' events, one transaction per group, in order."""
        try:
            while self._unstored:
                group = self._take_group()
                events = [e for u in group for e in u.events]
                # A snapshot describes the state after its own command; only the last
                # command's snapshot matches the end of the group. An earlier one is
                # dropped: the next snapshot comes a few events later.
                snapshot = group[-1].snapshot
                if events or snapshot is not None:
                    new = [u.record for u in group if u.record is not None]
                    change = self.records.write(new) if events else None
                    in_doubt = InDoubt(
                        self._sequence_nr,
                        [e.value for e in events],
                        frozenset(r.key for r in new),
                    )
                    write = functools.partial(
                        self.env.journal.append,
                        self.pid,
                        self._sequence_nr,
                        events,
                        snapshot,
                        change,
                    )
                    trace = group[0].command.trace
                    traced = (
                        {
                            "larder.journal.events": len(events),
                            "larder.journal.bytes": sum(len(e.value) for e in events),
                            "larder.journal.commands": len(group),
                            "larder.journal.snapshot": snapshot is not None,
                        }
                        if tracing.recording(trace)
                        else None
                    )
                    try:
                        self._sequence_nr = await self._journal_write(
                            write, in_doubt, trace, traced
                        )
                    except StreamBroken as e:
                        self._failed = e
                        error = InvokeError(e.code, e.message)
                        for u in group:
                            key = u.record.key if u.record is not None else None
                            if key is None or not self._replay(u.command, key, e.records.get(key)):
                                settle_error(u.command.future, error)
                        later, self._unstored = self._unstored, []
                        for u in later:
                            settle_error(u.command.future, _not_stored(e))
                        self._unstored_keys = None
                        if self.state is not State.HANDLING:
                            # Otherwise the command being handled fails and restarts.
                            self._restart(e.message)
                        return
                    if change is not None:
                        self.records.stored(change)
                    if self._unstored_keys is not None:
                        self._unstored_keys.difference_update(r.key for r in new)
                        if not self._unstored_keys:
                            self._unstored_keys = None
                if len(group) > 1:
                    self.env.metrics.group_commits.labels(self.entity_type).inc()
                for u in group:
                    if not u.command.future.done():
                        u.command.future.set_result(u.outcome)
        finally:
            self._writer = None

    def _take_group(self) -> list[_Unstored]:
        count, size = 1, self._unstored[0].size
        while (
            count < min(len(self._unstored), _MAX_GROUP_COMMANDS)
            and size + self._unstored[count].size <= _MAX_GROUP_BYTES
        ):
            size += self._unstored[count].size
            count += 1
        group, self._unstored = self._unstored[:count], self._unstored[count:]
        return group

    async def _reloaded_in_doubt(self) -> tuple[bool, dict[str, IdempotencyRecord]]:
        try:
            recovery = await self.env.journal.load(self.pid)
        except JournalError:
            return False, {}
        records = {r.key: r for r in recovery.idempotency}
        after = recovery.snapshot.sequence_nr if recovery.snapshot is not None else 0
        for doubt in self._in_doubt:
            if recovery.last_sequence_nr < doubt.position + len(doubt.payloads):
                continue
            if doubt.keys:
                if doubt.keys <= records.keys():
                    return True, records
                continue
            # Without a key, the same events at the numbers it was to take are the best
            # evidence there is (unless a snapshot covers them: then nothing tells).
            start = doubt.position - after
            stored = [e.value for e in recovery.events[start : start + len(doubt.payloads)]]
            if start >= 0 and stored == list(doubt.payloads):
                return True, records
        return False, records

    async def _drain(self) -> None:
        writer = self._writer
        if writer is not None:
            # The writer settles every reply it holds whatever happens; waiting must
            # not cancel it if this entity's task is cancelled meanwhile.
            await asyncio.wait({writer})


def _not_stored(cause: StreamBroken) -> InvokeError:
    code = (
        grpc.StatusCode.ABORTED
        if cause.code is grpc.StatusCode.ABORTED
        else grpc.StatusCode.UNAVAILABLE
    )
    return InvokeError(
        code,
        "nothing was stored for this command: the journal write of an earlier command of "
        f"this entity failed ({cause.message}); retry the command",
    )
