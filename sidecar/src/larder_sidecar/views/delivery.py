"""Delivery: committed entity changes become view rows, at least once, in order per entity,
applied idempotently.

Each view has a worker task and a queue of changes (`feed.py` publishes them after the
journal committed them; catch-up adds what the journal holds beyond the view's offsets).
The worker takes the queued changes in batches: it makes each change's rows in queue
order (the state itself, or the user function's answer on `Views/Handle` for transformed
updates) and hands them to the store as items, each with the offset the view last applied
for its entity (a value entity's revision, an event's sequence number). The store writes
an item's rows and new offset only if the stored offset is still the expected one, a
batch in one transaction on SQLite, a Paxos round per bucket per wave on Cassandra, so:

- a change already applied (offset not above the stored one) is skipped: idempotent;
- an event whose predecessors the view has not seen makes the worker read them from the
  journal first: in order per entity;
- a change that fails (the user function down, the store unavailable) is retried with
  back-off, and the view waits behind it: nothing is skipped (the other views go on);
- an item the store refuses (another sidecar moved the entity's offset) makes the worker
  reread the offsets and apply the batch's changes one by one.

An update handler is given the row as it stands before the change: within a batch that is
the row an earlier change of the batch made (`_Batch`), not the stored one.

A value entity's change that feeds a view as it is (no update handler) carries the
entity's whole state: one still queued behind a later revision of the same entity is
dropped when its turn comes, and only the last is written (fewer store writes when a view
falls behind; rows never go backwards, they just skip intermediate states).

Records of a view's topics (`topic_source.py`) join the same queue as `TopicMessage`s:
their offset is the partition's Kafka offset (plus one), stored under the source
`topic/<topic>/<partition>`, and a record is applied only above the stored one (Kafka
offsets have gaps), so a record redelivered after a crash is skipped.

With `gather` (on Cassandra), a worker that finds fewer than a batch of changes queued
lets them gather until the oldest is `gather` seconds old: a wave's Paxos rounds, a fixed
cost per bucket, then cover more changes.

The argument for why nothing is lost, per journal, is in docs/views.md.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import DecodeError
from larder_protocol import message_class

from .. import tracing
from ..journal.base import PersistenceId, StoredPayload, ValueState
from .catchup import ChangeSource
from .feed import Change, EventsAppended, ValueChanged
from .handle import Answer, HandleClient, receive_event
from .metrics import ViewMetrics
from .spec import TYPE_URL_PREFIX, SourceKind, ViewSpec, ViewUpdate
from .store import Applied, RowChange, TableSchema, ViewStore

log = logging.getLogger("larder_sidecar.views")

LoadValue = Callable[[PersistenceId], Awaitable[ValueState]]
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
BATCH = 256
"""Changes taken from the queue for one store call (and at most about as many events):
one transaction on SQLite, a Paxos round per bucket per wave on Cassandra. A call per
change would cap a view at the store's commit rate."""
T = TypeVar("T")
READS_IN_FLIGHT = 16
"""Journal reads catch-up has in flight at once (an entity's events, or its state, a
read): one read after the other was most of a view's rebuild on Cassandra."""
MAX_PENDING = 10_000
"""Changes a view keeps queued in memory. Beyond it, when the journal can be read back,
published changes are dropped and the view catches up from the journal once its queue
has drained: memory stays bounded whatever the write rate, and nothing is lost."""


@dataclass(frozen=True, slots=True)
class TopicMessage:
    """A decoded record of a topic feeding `update`, to be applied at `offset` (the
    record's Kafka offset plus one) of the source `pid` (`topic/<topic>/<partition>`)."""

    pid: str
    offset: int
    update: ViewUpdate
    subject: str
    """The record's `ce-subject`: the row key."""
    payload: bytes
    """The update method's input, serialized."""
    metadata: Sequence[tuple[str, str]]
    done: asyncio.Future[None] = field(compare=False)
    """Set once the record is applied, or skipped as applied before."""


def topic_pid(topic: str, partition: int) -> str:
    return f"topic/{topic}/{partition}"


class GapUnrecoverable(Exception):
    """Events a view needs are not in any journal this sidecar can read."""


class _Cut(Exception):
    """The change cannot join the batch being made: the batch ends before it, and the
    change starts the next one (alone, one by one, when it cannot join any)."""


@dataclass
class _Batch:
    """The store items of a batch being made, and the rows they write.

    A transformed change's previous row is read here before the store: the row an earlier
    change of the batch made, as applying them one by one would have given it. Only rows
    of the change's own entity: a row key written by changes of two entities ends the
    batch (`_Cut`) before the second, since on Cassandra a wave holds one change per
    entity (two entities' writes of one key, in one wave, would carry one timestamp and
    land in no set order), and a change made from another entity's row could be applied
    while that row's change is refused.

    An entity's changes in one batch become one item: from the offset before its first
    to its last, with the rows as its last change left them (a row written twice: the
    second write). The view skips the intermediate rows, as it does for value states
    superseded in the queue, and the store claims each entity once per batch: on
    Cassandra a batch of one entity's many events (catch-up) is one wave, not a wave
    per event.
    """

    items: list[Applied] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    """Per item, the changes merged into it."""
    changes: int = 0
    """Changes (events, states, records) in the items."""
    at: dict[str, int] = field(default_factory=dict)
    """Per entity, the index of its item."""
    rows: dict[tuple[str, str], tuple[bytes | None, str]] = field(default_factory=dict)
    """(table id, key) -> the row (None: deleted) and the entity whose item wrote it."""

    def applied(self, offsets: Mapping[str, int], pid: str) -> int:
        """The entity's offset once the items so far are applied."""
        at = self.at.get(pid)
        return offsets.get(pid, 0) if at is None else self.items[at].offset

    def previous(self, table: TableSchema, key: str, pid: str) -> tuple[bool, bytes | None]:
        """(True, the row) when an item here wrote it; `_Cut` if another entity's did."""
        found = self.rows.get((table.id, key))
        if found is None:
            return False, None
        if found[1] != pid:
            raise _Cut
        return True, found[0]

    def add(self, pid: str, expected: int, offset: int, changes: Sequence[RowChange]) -> None:
        for c in changes:
            found = self.rows.get((c.table.id, c.key))
            if found is not None and found[1] != pid:
                raise _Cut
        for c in changes:
            self.rows[(c.table.id, c.key)] = (c.row, pid)
        self.changes += 1
        at = self.at.get(pid)
        if at is None:
            self.at[pid] = len(self.items)
            self.items.append(Applied(pid, expected, offset, changes))
            self.counts.append(1)
            return
        item = self.items[at]
        assert item.offset == expected  # `applied` gave the item's offset
        merged = {(c.table.id, c.key): c for c in item.changes}
        merged.update(((c.table.id, c.key), c) for c in changes)
        self.items[at] = Applied(pid, item.expected, offset, list(merged.values()))
        self.counts[at] += 1


def table_schemas(views: Mapping[str, ViewSpec]) -> dict[tuple[str, str], TableSchema]:
    """Every table of every view, with the columns its queries filter on."""
    return {
        (view.service, table): TableSchema(view.service, table, row, view.filter_columns(table))
        for view in views.values()
        for table, row in view.tables.items()
    }


@dataclass
class _ViewState:
    spec: ViewSpec
    routes: dict[str, dict[str, list[ViewUpdate]]]
    """Entity type -> input type URL -> the update methods taking it (one per table)."""
    offsets: dict[str, int]
    pending: collections.deque[tuple[float, Change | TopicMessage, Any]]
    """(queued at, the change, the trace of the write that made it: its update's parent)."""
    wakeup: asyncio.Event
    busy: bool = False
    behind: bool = False
    """Changes were dropped (queue full): catch up from the journal once it drains."""
    latest: dict[str, int] = field(default_factory=dict)
    """Per value entity whose changes feed this view as they are (no update handler),
    the highest revision queued: an older one still queued is superseded by it."""
    collapsible: frozenset[str] = frozenset()
    """The value entity types whose every update into this view is a plain one."""


class ViewDelivery:
    def __init__(
        self,
        views: Mapping[str, ViewSpec],
        store: ViewStore,
        handle: HandleClient | None,
        metrics: ViewMetrics,
        *,
        load_value: LoadValue,
        source: ChangeSource | None = None,
        max_pending: int = MAX_PENDING,
        gather: float = 0.0,
    ) -> None:
        """`gather`: seconds the oldest queued change may wait for more to join its batch
        when fewer than `BATCH` are queued (0: none; see the module's docstring)."""
        self.tables = table_schemas(views)
        self._store = store
        self._handle = handle
        self._metrics = metrics
        self._load_value = load_value
        self._source = source
        self._max_pending = max_pending
        self._gather = gather
        self._full = min(BATCH, max_pending)
        """Queued changes that end a gathering: a batch, or a full queue."""
        self._views: dict[str, _ViewState] = {}
        for view in views.values():
            routes: dict[str, dict[str, list[ViewUpdate]]] = {}
            for u in view.updates:
                if u.source is SourceKind.TOPIC:
                    continue  # records arrive through `apply_topic`, already routed
                routes.setdefault(u.entity_type, {}).setdefault(u.input_type_url, []).append(u)
            plain = frozenset(
                u.entity_type
                for u in view.updates
                if u.source is SourceKind.VALUE_ENTITY
                and not any(
                    o.transform for o in view.updates if o.entity_type == u.entity_type
                )
            )
            state = _ViewState(
                view, routes, {}, collections.deque(), asyncio.Event(), collapsible=plain
            )
            self._views[view.service] = state
            # Read at each scrape: it counts the batch in flight and the time gathering.
            metrics.lag_seconds.labels(view.service).set_function(
                functools.partial(_oldest_age, state.pending)
            )
        self._tasks: list[asyncio.Task[None]] = []
        self._warned: set[tuple[str, str]] = set()

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Open the store (returns the tables rebuilt), load the offsets, queue what the
        journal holds beyond them (catch-up), and start the workers."""
        rebuilt = await self._store.open(list(self.tables.values()))
        for name, state in self._views.items():
            state.offsets = dict(await self._store.offsets(name))
        await self.catch_up()
        loop = asyncio.get_running_loop()
        for name in self._views:
            self._tasks.append(loop.create_task(self._work(name), name=f"view {name}"))
        return rebuilt

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._source is not None:
            self._source.close()
        await self._store.close()

    async def idle(self, within: float) -> bool:
        """Wait until no change waits or is being applied; False after `within` seconds."""
        deadline = time.monotonic() + within
        while any(s.pending or s.busy or s.behind for s in self._views.values()):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # --- intake ---------------------------------------------------------------------------

    def publish(self, change: Change) -> None:
        """Queue a committed change for every view it feeds (never blocks)."""
        entity_type = change.pid.partition("|")[0]
        # Called in the journal write that committed it: its updates go on that trace.
        trace = tracing.capture()
        for name, state in self._views.items():
            if entity_type in state.routes:
                self._queue(name, state, change, trace)

    def apply_topic(self, view: str, message: TopicMessage) -> asyncio.Future[None]:
        """Queue a topic's record for `view`; its `done` is set once it is applied (or
        found applied before): the consumer commits its offset only after that."""
        state = self._views[view]
        # Never dropped: the consumer bounds how many records are in flight, and a
        # dropped record would not come back before the next rebalance.
        state.pending.append((time.monotonic(), message, None))
        self._metrics.pending.labels(view).set(len(state.pending))
        self._wake(state)
        return message.done

    def _queue(self, name: str, state: _ViewState, change: Change, trace: Any = None) -> None:
        if self._source is not None and len(state.pending) >= self._max_pending:
            # The journal has it: read it back once the queue has drained.
            state.behind = True
            self._metrics.changes_deferred.labels(name).inc()
            state.wakeup.set()
        else:
            state.pending.append((time.monotonic(), change, trace))
            self._metrics.pending.labels(name).set(len(state.pending))
            if (
                isinstance(change, ValueChanged)
                and change.pid.partition("|")[0] in state.collapsible
            ):
                state.latest[change.pid] = max(change.revision, state.latest.get(change.pid, 0))
            self._wake(state)

    def _wake(self, state: _ViewState) -> None:
        """Wake the worker for a change just queued, when it may be waiting for it: for a
        first change, or gathering (`_gathered`) for a full batch. Not for every change:
        a worker gathering would wake (a task switch) for each."""
        if len(state.pending) == 1 or len(state.pending) >= self._full:
            state.wakeup.set()

    async def catch_up(self) -> None:
        """Queue, for every view, what the journal holds beyond the view's offsets."""
        for name, state in self._views.items():
            await self._catch_up(name, state)

    async def _catch_up(self, name: str, state: _ViewState) -> None:
        """Queue what the journal holds beyond the view's offsets, at most `max_pending`
        changes; with more, the view stays `behind` and the worker calls again."""
        if self._source is None:
            return
        state.behind = False
        room = self._max_pending - len(state.pending)
        kinds = {u.entity_type: u.source for u in state.spec.updates}
        for entity_type, kind in kinds.items():
            if kind is SourceKind.TOPIC:
                continue  # the topic is the record of it; the consumer resumes there
            if kind is SourceKind.VALUE_ENTITY:
                revisions = await self._source.value_revisions(entity_type)
                behind = [
                    pid
                    for pid, revision in sorted(revisions.items())
                    if revision > state.offsets.get(pid, 0)
                ]
                for chunk in _chunks(behind[: max(room, 0)], READS_IN_FLIGHT):
                    values = await asyncio.gather(*(self._load_value(pid) for pid in chunk))
                    for pid, value in zip(chunk, values, strict=True):
                        self._queue(name, state, ValueChanged(pid, value.revision, value.payload))
                room -= len(behind)
                if room < 0:
                    state.behind = True
                    return
            else:
                heads = await self._source.event_heads(entity_type)
                wanted: list[tuple[PersistenceId, int, int]] = []  # pid, first, last
                for pid, head in sorted(heads.items()):
                    applied = state.offsets.get(pid, 0)
                    if head > applied:
                        if room <= 0:
                            state.behind = True
                            break
                        last = min(head, applied + room)
                        wanted.append((pid, applied + 1, last))
                        room -= last - applied
                        if last < head:
                            state.behind = True
                            break
                source = self._source
                for reads in _chunks(wanted, READS_IN_FLIGHT):
                    read = await asyncio.gather(*(source.events(*w) for w in reads))
                    for (of, first, _), events in zip(reads, read, strict=True):
                        self._queue(name, state, EventsAppended(of, first, tuple(events)))
                if state.behind:
                    return

    # --- the worker ---------------------------------------------------------------------

    async def _work(self, name: str) -> None:
        state = self._views[name]
        while True:
            if not state.pending and state.behind:
                state.busy = True
                try:
                    await self._catch_up(name, state)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    state.behind = True
                    self._metrics.update_failures.labels(name).inc()
                    log.error("view %s: catching up from the journal failed: %s", name, e)  # noqa: TRY400
                    await asyncio.sleep(RETRY_MAX_S)
                state.busy = False
                continue
            if not state.pending:
                state.wakeup.clear()
                await state.wakeup.wait()
                continue
            if self._gather > 0:
                await self._gathered(state)
            _, change, trace = state.pending[0]
            batch = [c for _, c, _ in itertools.islice(state.pending, BATCH)]
            state.busy = True
            delay = RETRY_FIRST_S
            failed = False
            while True:
                try:
                    with tracing.span(
                        f"view update {name}",
                        # A change read back from the journal (catch-up) or a topic's
                        # record: a trace of its own.
                        parent=trace if trace is not None else tracing.extract(()),
                        attributes={
                            "larder.view.changes": sum(
                                not self._superseded(state, c) for c in batch
                            )
                        },
                    ):
                        if failed:
                            # The failed attempt may have applied part of the batch (a
                            # Cassandra wave): start from what the store holds, so that
                            # no change is made again from rows it already wrote.
                            state.offsets = dict(await self._store.offsets(name))
                        done = await self._apply_batch(state, batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    failed = True
                    self._metrics.update_failures.labels(name).inc()
                    log.error(  # noqa: TRY400 - the message says it all; traces at debug
                        "view %s: applying %s failed, retrying in %.1fs: %s",
                        name,
                        _describe(change),
                        delay,
                        e,
                    )
                    log.debug("view %s failure", name, exc_info=True)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
            for applied in batch[:done]:
                state.pending.popleft()
                if (
                    isinstance(applied, ValueChanged)
                    and state.latest.get(applied.pid, 0) <= applied.revision
                ):
                    state.latest.pop(applied.pid, None)
            state.busy = False
            self._metrics.pending.labels(name).set(len(state.pending))

    async def _gathered(self, state: _ViewState) -> None:
        """Wait until the oldest queued change is `gather` seconds old or `BATCH` are
        queued (`_wake` wakes the worker then, not for every change)."""
        while len(state.pending) < self._full:
            wait = state.pending[0][0] + self._gather - time.monotonic()
            if wait <= 0:
                return
            state.wakeup.clear()
            try:
                async with asyncio.timeout(wait):
                    await state.wakeup.wait()
            except TimeoutError:
                return

    def _superseded(self, state: _ViewState, change: Change | TopicMessage) -> bool:
        return (
            isinstance(change, ValueChanged)
            and state.latest.get(change.pid, 0) > change.revision
        )

    async def _apply_batch(self, state: _ViewState, batch: list[Change | TopicMessage]) -> int:
        """Apply the changes at the start of `batch` in one store call; returns how many
        are done, at least one. A change only partly in the call (its first events: the
        call was full) is not done: it is taken again, its applied events skipped. What
        the store refuses (an offset another sidecar moved) goes again one by one."""
        name = state.spec.service
        made = _Batch()
        taken = 0
        for change in batch:
            if not self._superseded(state, change):
                try:
                    if not await self._add(state, made, change):
                        break
                except _Cut:
                    break
            taken += 1
        if taken == 0 and not made.items:
            # The first change cannot go in a batch (a gap the journal cannot fill here):
            # on its own, as delivery always did, which reports why.
            await self._apply(state, batch[0])
            return 1
        results = await self._store.apply_batch(name, made.items) if made.items else []
        for item, count, ok in zip(made.items, made.counts, results, strict=True):
            if ok:
                state.offsets[item.pid] = item.offset
                self._metrics.changes_applied.labels(name).inc(count)
        if not all(results):
            state.offsets = dict(await self._store.offsets(name))
            taken = max(taken, 1)
            for change in batch[:taken]:
                if not self._superseded(state, change):
                    await self._apply(state, change)
            return taken
        for change in batch[:taken]:
            if isinstance(change, TopicMessage) and not change.done.done():
                change.done.set_result(None)
        return taken

    async def _add(self, state: _ViewState, made: _Batch, change: Change | TopicMessage) -> bool:
        """Add `change`'s items to `made`, making their rows; False when the batch filled
        up before its last event. Raises `_Cut` when it cannot join (the items of its
        events before the one that cannot stay)."""
        if isinstance(change, TopicMessage):
            applied = made.applied(state.offsets, change.pid)
            # "Above", not "next": Kafka offsets have gaps (transactions, compaction).
            if change.offset > applied:
                rows = await self._topic_rows(state, change, made)
                made.add(change.pid, applied, change.offset, rows)
            return True
        if isinstance(change, ValueChanged):
            applied = made.applied(state.offsets, change.pid)
            if change.revision > applied:
                rows = await self._rows(state, change.pid, change.payload, made)
                made.add(change.pid, applied, change.revision, rows)
            return True
        for i, event in enumerate(change.events):
            offset = change.first_seq + i
            applied = made.applied(state.offsets, change.pid)
            if offset <= applied:
                continue  # applied before (a redelivery, or another sidecar did it)
            if made.changes >= BATCH:
                return False
            if offset > applied + 1:
                await self._fill_in(state, made, change.pid, applied + 1, offset - 1)
            rows = await self._rows(state, change.pid, event, made)
            made.add(change.pid, offset - 1, offset, rows)
        return True

    async def _fill_in(
        self, state: _ViewState, made: _Batch, pid: PersistenceId, first: int, last: int
    ) -> None:
        """The events `first`..`last` the view has not seen, read from the journal, into
        the batch before the event after them."""
        if self._source is None:
            raise _Cut
        events = await self._source.events(pid, first, last)
        if len(events) != last - first + 1:
            raise _Cut  # one by one, which reads them again and reports what is missing
        for i, event in enumerate(events):
            rows = await self._rows(state, pid, event, made)
            made.add(pid, first + i - 1, first + i, rows)

    async def _apply(self, state: _ViewState, change: Change | TopicMessage) -> None:
        if isinstance(change, TopicMessage):
            await self._apply_topic(state, change)
            return
        if isinstance(change, ValueChanged):
            await self._apply_one(state, change.pid, change.revision, change.payload, value=True)
            return
        for i, event in enumerate(change.events):
            await self._apply_one(state, change.pid, change.first_seq + i, event, value=False)

    async def _apply_one(
        self,
        state: _ViewState,
        pid: PersistenceId,
        offset: int,
        payload: StoredPayload | None,
        *,
        value: bool,
    ) -> None:
        name = state.spec.service
        while True:
            applied = state.offsets.get(pid, 0)
            if offset <= applied:
                return  # already applied (a redelivery, or another sidecar did it)
            if not value and offset > applied + 1:
                await self._fill_gap(state, pid, applied + 1, offset - 1)
                continue
            changes = await self._rows(state, pid, payload)
            if await self._store.apply(name, pid, applied, offset, changes):
                state.offsets[pid] = offset
                self._metrics.changes_applied.labels(name).inc()
                return
            # Another sidecar on the same store moved this entity's offset: reread.
            state.offsets = dict(await self._store.offsets(name))

    async def _apply_topic(self, state: _ViewState, message: TopicMessage) -> None:
        name = state.spec.service
        while True:
            applied = state.offsets.get(message.pid, 0)
            # "Above", not "next": Kafka offsets have gaps (transactions, compaction).
            if message.offset <= applied:
                break  # applied before (a redelivery, or another sidecar did it)
            changes = await self._topic_rows(state, message)
            if await self._store.apply(name, message.pid, applied, message.offset, changes):
                state.offsets[message.pid] = message.offset
                self._metrics.changes_applied.labels(name).inc()
                break
            # Another sidecar on the same store moved this partition's offset: reread.
            state.offsets = dict(await self._store.offsets(name))
        if not message.done.done():
            message.done.set_result(None)

    async def _topic_rows(
        self, state: _ViewState, message: TopicMessage, made: _Batch | None = None
    ) -> list[RowChange]:
        update = message.update
        schema = self.tables[(state.spec.service, update.table)]
        if not update.transform:
            return self._row_change(state, schema, message.subject, message.payload)
        assert self._handle is not None  # transformed updates need the user function
        previous = await self._previous(schema, message.subject, message.pid, made)
        with tracing.span("user function"):  # Views/Handle
            answer = await self._handle.receive(
                receive_event(
                    update,
                    message.subject,
                    update.input_type_url,
                    message.payload,
                    previous,
                    metadata=message.metadata,
                ),
                message.subject,
            )
        return self._answered(state, schema, answer)

    async def _fill_gap(self, state: _ViewState, pid: PersistenceId, first: int, last: int) -> None:
        if self._source is None:
            raise GapUnrecoverable(
                f"view {state.spec.service} has applied {pid} up to event {first - 1} and "
                f"was given event {last + 1}; this journal cannot be read back for the "
                "events between"
            )
        events = await self._source.events(pid, first, last)
        for i, event in enumerate(events):
            await self._apply_one(state, pid, first + i, event, value=False)

    async def _previous(
        self, schema: TableSchema, key: str, pid: str, made: _Batch | None
    ) -> bytes | None:
        """The row an update handler is given: as the batch being made left it, else as
        stored."""
        if made is not None:
            found, row = made.previous(schema, key, pid)
            if found:
                return row
        return await self._store.row(schema, key)

    async def _rows(
        self,
        state: _ViewState,
        pid: PersistenceId,
        payload: StoredPayload | None,
        made: _Batch | None = None,
    ) -> list[RowChange]:
        entity_type, _, entity_id = pid.partition("|")
        routes = state.routes[entity_type]
        if payload is None:
            # A value entity was deleted: its row goes from every table it feeds.
            tables = {u.table for updates in routes.values() for u in updates}
            return [
                RowChange(self.tables[(state.spec.service, t)], entity_id, None)
                for t in sorted(tables)
            ]
        updates = routes.get(payload.type_url)
        if not updates:
            warned = (state.spec.service, payload.type_url)
            if warned not in self._warned:
                self._warned.add(warned)
                log.warning(
                    "view %s has no update method taking %s from %s; such changes are "
                    "skipped",
                    state.spec.service,
                    payload.type_url,
                    entity_type,
                )
            return []
        changes: list[RowChange] = []
        for update in updates:  # one per table the change feeds
            schema = self.tables[(state.spec.service, update.table)]
            if not update.transform:
                changes += self._row_change(state, schema, entity_id, payload.value)
                continue
            assert self._handle is not None  # transformed updates need the user function
            previous = await self._previous(schema, entity_id, pid, made)
            with tracing.span("user function"):  # Views/Handle
                answer = await self._handle.receive(
                    receive_event(update, entity_id, payload.type_url, payload.value, previous),
                    entity_id,
                )
            changes += self._answered(state, schema, answer)
        return changes

    def _answered(self, state: _ViewState, schema: TableSchema, answer: Answer) -> list[RowChange]:
        if answer.delete:
            return [RowChange(schema, answer.key, None)]
        if answer.row is None:
            return []
        expected = TYPE_URL_PREFIX + schema.row_type.full_name
        if answer.row.type_url != expected:
            self._metrics.rows_rejected.labels(state.spec.service).inc()
            log.error(
                "view %s: the update handler answered a %s for table %r, whose rows are %s; "
                "the change is skipped",
                state.spec.service,
                answer.row.type_url,
                schema.table,
                schema.row_type.full_name,
            )
            return []
        return self._row_change(state, schema, answer.key, answer.row.value)

    def _row_change(
        self, state: _ViewState, schema: TableSchema, key: str, row: bytes
    ) -> list[RowChange]:
        try:
            parsed = message_class(schema.row_type).FromString(row)
        except DecodeError:
            self._metrics.rows_rejected.labels(state.spec.service).inc()
            log.error(  # noqa: TRY400 - a bad row of the user function's, not our bug
                "view %s: a row for %r of table %r is not a valid %s; the change is skipped",
                state.spec.service,
                key,
                schema.table,
                schema.row_type.full_name,
            )
            return []
        return [RowChange(schema, key, row, schema.values(parsed))]


def _describe(change: Change | TopicMessage) -> str:
    if isinstance(change, TopicMessage):
        return f"{change.pid} record at offset {change.offset - 1} for {change.subject!r}"
    if isinstance(change, ValueChanged):
        return f"{change.pid} revision {change.revision}"
    return f"{change.pid} events {change.first_seq}..{change.last_seq}"


def _oldest_age(pending: collections.deque[tuple[float, Any, Any]]) -> float:
    """`larder_view_lag_seconds` of a queue: the age of its oldest change, 0 when none
    waits (the worker takes a change off the queue once it is applied)."""
    try:
        return time.monotonic() - pending[0][0]
    except IndexError:
        return 0.0


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
