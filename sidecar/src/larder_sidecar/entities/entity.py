"""One active entity: the supervised task that owns its protocol stream and its queue.

Commands for one entity reach the user function strictly one at a time, in arrival
order; different entities run concurrently. Events, snapshots and value state are
stored before a reply is released. When the stream fails (a protocol
failure, the user function dying, a journal write that did not land) the entity
restarts from the journal before its next command. The component types differ in
how they open the stream and store what a reply emitted: `event_sourced.py` (with
group commit) and `value_entity.py`. The entity's states and their legal moves are in
`lifecycle.py`; what it needs from the sidecar comes in its `EntityEnvironment`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from .. import tracing
from ..invoke import InvokeError
from ..journal.base import (
    ConcurrentWriteError,
    IdempotencyRecord,
    JournalError,
    JournalUnavailable,
    PersistenceId,
    WriteOutcomeUnknown,
    persistence_id,
)
from ..logs import clip
from ..model import Kind
from ..outcome import Outcome, protocol_metadata
from ..protocol import entity_pb2
from .command import Command, EntityKey, settle_error
from .environment import EntityEnvironment
from .idempotency import (
    HEADER,
    Records,
    command_key,
    decode,
    encode,
    fingerprint,
    forward_key,
    reused,
)
from .lifecycle import Event, Lifecycle, State

log = logging.getLogger("larder_sidecar.entities")

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


class StreamBroken(Exception):
    """The protocol stream cannot be used any more; the entity must restart."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        records: Mapping[str, IdempotencyRecord] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.records = records or {}
        """After a refused write: the idempotency records the journal holds now. A
        command of the refused write that one of them names was stored by an earlier
        write (our own, whose outcome was unknown): its stored reply is its answer."""


@dataclass(frozen=True, slots=True)
class InDoubt:
    """A write of this entity whose outcome was unknown: it may still land."""

    position: int
    """The sequence number (or revision) it was to follow."""
    payloads: Sequence[bytes | None]
    """What it stored (event payloads, or the new state; None for a delete)."""
    keys: frozenset[str]
    """The idempotency keys it carried."""


class Entity(abc.ABC):
    """One active entity. Subclasses know the event-sourced and value protocols."""

    # Thousands are alive at once, so an entity keeps only what it needs between commands:
    # no instance dict, no deque while its queue is empty, no asyncio.Event (see
    # docs/performance.md, *Per-entity memory*).
    __slots__ = (
        "__weakref__",
        "_call",
        "_command_id",
        "_idle_listed",
        "_idle_since",
        "_in_doubt",
        "_loop",
        "_queue",
        "_unstored_keys",
        "_waiter",
        "_woken",
        "entity_id",
        "entity_type",
        "env",
        "key",
        "lifecycle",
        "pid",
        "records",
        "task",
    )

    kind: Kind

    def __init__(self, env: EntityEnvironment, entity_id: str) -> None:
        self.env = env
        self.entity_type = env.entity_type
        self.entity_id = entity_id
        self.key = EntityKey(env.entity_type, entity_id)
        self.pid: PersistenceId = persistence_id(env.entity_type, entity_id)
        self.lifecycle = Lifecycle(self.key)
        # Made by the first command of a burst, dropped when the loop has emptied it.
        self._queue: deque[Command] | None = None
        # Set by whatever the loop may be waiting for: a command, the idle timer, the
        # host no longer admitting this entity. A flag, and a future only while the loop
        # waits (an asyncio.Event would keep a deque per entity).
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None
        # Loop time the loop started waiting with an empty queue; None while busy. The
        # component's `IdleTimers` asks `idle_due` when it may have been idle for its
        # timeout (`_idle_listed`: it has an entry there).
        self._idle_since: float | None = None
        self._idle_listed = False
        self._call: Any = None
        self._command_id = 0
        self.records = Records(env.idempotency)
        # Keys of commands handled but not stored yet (a write in flight); None when empty.
        self._unstored_keys: set[str] | None = None
        # Writes whose outcome was unknown; a later refused write may be their doing.
        self._in_doubt: list[InDoubt] = []
        # Held: in CPython 3.11 every asyncio.get_running_loop() is a getpid system call,
        # and the loop is needed on every command.
        self._loop = asyncio.get_running_loop()
        self.task = self._loop.create_task(
            self._run(), name=f"entity {env.entity_type}/{entity_id}"
        )
        self.task.add_done_callback(log_unexpected_exit)

    @property
    def _log_extra(self) -> dict[str, str]:
        # Made when a line is logged, not kept per entity.
        return {"entity_type": self.entity_type, "entity_id": self.entity_id}

    @property
    def state(self) -> State:
        return self.lifecycle.state

    # --- the loop -----------------------------------------------------------------------

    def submit(self, command: Command) -> None:
        self._idle_since = None
        command.queued_ns = tracing.now_ns()
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(command)
        self.wake()

    def wake(self) -> None:
        """Make the loop look again whether the host still admits this entity."""
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        """Until `wake` (at once if it was called since the loop cleared `_woken`)."""
        if self._woken:
            return
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _arm_idle(self) -> None:
        if self._idle_since is None:
            self._idle_since = now = self._loop.time()
            if not self._idle_listed:
                self._idle_listed = True
                self.env.idle_timers.schedule(self, now + self.env.idle_timeout)

    def idle_due(self, now: float) -> float | None:
        """From `IdleTimers`: passivate if idle for the timeout by `now`, else say when
        to ask again. Idle means the loop has waited with an empty queue since
        `_idle_since` (a command clears it), so the entity is between commands."""
        self._idle_listed = False
        since = self._idle_since
        if since is None:
            return None  # busy: listed again when it next waits
        deadline = since + self.env.idle_timeout
        if deadline > now:
            self._idle_listed = True
            return deadline
        self._idle_since = None
        self.lifecycle.fire(Event.IDLE)
        self.wake()
        return None

    async def _run(self) -> None:
        try:
            while True:
                self._woken = False
                # Decided by the idle timer while the loop waited: commands that came
                # since then re-enter, and reach the next incarnation.
                if self.state is State.PASSIVATING:
                    break
                while self._queue:
                    # Not bound to a local: this frame lives as long as the entity, and
                    # would keep the last command alive with its outcome and the reply.
                    await self._one(self._queue.popleft())
                self._queue = None
                if not self.env.admits(self.key):
                    self.lifecycle.fire(Event.RELEASE)
                    break
                self._arm_idle()
                await self._wait()
        finally:
            reason = {State.RELEASING: "released", State.PASSIVATING: "idle"}.get(self.state)
            if reason is None:
                self.lifecycle.fire(Event.ABORT)
                reason = "stopped by an error"
            self._idle_since = None
            # Replies still waiting for their events are released (or failed) by the
            # write in flight. Before the host forgets this entity: a new incarnation
            # must not load it while that write may still land.
            await self._drain()
            # Commands that reached this entity after it stopped taking them go back
            # through the host's re-entry (the router), which starts a new incarnation
            # or sends them wherever the entity lives now.
            late, self._queue = list(self._queue or ()), None
            self.env.exited(self, [c for c in late if not c.future.done()])
            await self._close(reason)
            self.lifecycle.fire(Event.STOP)

    async def _one(self, command: Command) -> None:
        if command.future.done():  # the caller gave up while queued
            return
        if not tracing.enabled():
            await self._handle(command)
            return
        model = command.method.model
        parent = command.parent if command.parent is not None else tracing.extract(command.metadata)
        if tracing.dropped(parent):  # no span, no queue span: the trace current, and kept
            command.trace = parent  # for the journal write
            token = tracing.within(parent)
            try:
                await self._handle(command)
            finally:
                tracing.leave(token)
            return
        with tracing.span(
            f"handle {model.service}/{model.name}",
            parent=parent,
            attributes=(
                {
                    "larder.entity_type": self.entity_type,
                    "larder.entity_id": clip(self.entity_id, 64),
                    "rpc.service": model.service,
                    "rpc.method": model.name,
                }
                if tracing.recording(parent)
                else None  # an unsampled trace: nothing to build them for
            ),
        ):
            tracing.record_span("queue", command.queued_ns)
            command.trace = tracing.capture()
            await self._handle(command)

    async def _handle(self, command: Command) -> None:
        key: str | None = None
        try:
            key = command_key(command.metadata)
            if key is not None and self._unstored_keys and key in self._unstored_keys:
                # A retry while the first command with this key is being stored: that
                # write's outcome decides (a failed write restarts the entity, which
                # then reloads whatever landed).
                await self._drain()
            if self.state is State.ACTIVE and self._call.done():
                # The stream ended between commands (the user function restarted): this
                # command has not been sent, so it goes to a new stream, not to an error.
                self._restart("the user function ended the entity stream between commands")
            if self.state is State.INACTIVE:
                await self._activate()
            if key is not None and self._replay(command, key, self.records.get(key)):
                return
            self.lifecycle.fire(Event.HANDLE)
            reply, outcome = await self._exchange(command)
            if key is not None and outcome.kind == "forward":
                _mark_forward(outcome.message, forward_key(self.pid, key))
            await self._complete(command, reply, outcome, key)
            self.lifecycle.fire(Event.DONE)
        except StreamBroken as e:
            self._restart(e.message)
            if key is None or not self._replay(command, key, e.records.get(key)):
                settle_error(command.future, InvokeError(e.code, e.message))
        except InvokeError as e:
            settle_error(command.future, e)
        except Exception as e:
            log.exception(
                "unexpected error in entity %s/%s",
                self.entity_type,
                self.entity_id,
                extra=self._log_extra,
            )
            self._restart(f"internal error: {e}")
            settle_error(
                command.future,
                InvokeError(
                    grpc.StatusCode.INTERNAL, f"the sidecar failed handling the command: {e}"
                ),
            )

    @abc.abstractmethod
    async def _complete(
        self, command: Command, reply: Any, outcome: Outcome, key: str | None
    ) -> None:
        """Store what the reply emitted (and the idempotency record of a command with
        a `key`, in the same write); release the reply (settle the command's future)
        only once that, and everything it may have seen, is stored."""

    def _replay(self, command: Command, key: str, record: IdempotencyRecord | None) -> bool:
        """Answer a command from the record of an earlier one with its key, if any.

        The stored outcome carries no side effects: they ran with the first command.
        """
        if record is None:
            return False
        stored = decode(record)
        if stored.fingerprint != fingerprint(command.method, command.payload):
            settle_error(command.future, reused(key, command.method))
            return True
        self.env.metrics.idempotent_replays.labels(self.entity_type).inc()
        if stored.outcome is None:
            assert stored.not_kept is not None
            settle_error(command.future, stored.not_kept)
        elif not command.future.done():
            command.future.set_result(stored.outcome)
        return True

    def _record(self, command: Command, key: str, outcome: Outcome) -> IdempotencyRecord:
        data = encode(fingerprint(command.method, command.payload), outcome)
        return IdempotencyRecord(key, time.time(), data)

    async def _reloaded_in_doubt(self) -> tuple[bool, dict[str, IdempotencyRecord]]:
        """Whether a write of this entity whose outcome was unknown is in the journal
        now, and the idempotency records it holds."""
        return False, {}

    async def _drain(self) -> None:
        """Wait until no journal write of this entity is in flight."""
        return

    # --- the stream ---------------------------------------------------------------------

    async def _activate(self) -> None:
        self.lifecycle.fire(Event.ACTIVATE)
        try:
            with tracing.span("activate"):
                await self._recover()
        except BaseException:
            self._drop_call()
            self.lifecycle.fire(Event.FAIL)
            raise
        self.lifecycle.fire(Event.ACTIVATED)
        m = self.env.metrics
        m.activations.labels(self.entity_type).inc()
        m.active_entities.inc()
        log.info("activated %s/%s", self.entity_type, self.entity_id, extra=self._log_extra)

    async def _recover(self) -> None:
        self._command_id = 0
        # A write of the previous stream may still be in flight; loading before it
        # lands would miss its events.
        await self._drain()
        await self.env.user_function_ready()
        try:
            await self._open()
        except JournalUnavailable as e:
            raise InvokeError(grpc.StatusCode.UNAVAILABLE, f"journal unavailable: {e}") from e
        except JournalError as e:
            raise InvokeError(
                grpc.StatusCode.INTERNAL, f"the entity cannot be loaded from the journal: {e}"
            ) from e
        except grpc.aio.AioRpcError as e:
            raise InvokeError(
                grpc.StatusCode.UNAVAILABLE,
                f"the user function did not accept the entity stream: {e.details()}",
            ) from e

    @abc.abstractmethod
    async def _open(self) -> None:
        """Open the protocol stream and send Init with the recovered state."""

    async def _exchange(self, command: Command) -> tuple[Any, Outcome]:
        self._command_id += 1
        cid = self._command_id
        call = self._call
        try:
            with tracing.span("user function"):
                msg = entity_pb2.Command(
                    entity_id=self.entity_id,
                    id=cid,
                    name=command.method.model.name,
                    payload={"type_url": command.method.input_type_url, "value": command.payload},
                    # With tracing on, the function's handler continues this span.
                    metadata=protocol_metadata(tracing.inject(command.metadata)),
                )
                await call.write(self._command_in(msg))
                out = await call.read()
        except grpc.aio.AioRpcError as e:
            raise StreamBroken(
                grpc.StatusCode.UNAVAILABLE,
                f"the user function's entity stream failed: {e.code().name} {e.details()}",
            ) from e
        except asyncio.InvalidStateError as e:
            raise StreamBroken(
                grpc.StatusCode.UNAVAILABLE, "the user function closed the entity stream"
            ) from e
        if out is _EOF:
            raise StreamBroken(
                grpc.StatusCode.UNAVAILABLE, "the user function closed the entity stream"
            )
        which = out.WhichOneof("message")
        if which == "failure":
            raise StreamBroken(
                grpc.StatusCode.INTERNAL,
                f"the entity failed: {out.failure.description or 'no description'}",
            )
        reply = out.reply
        if reply.command_id != cid:
            raise StreamBroken(
                grpc.StatusCode.INTERNAL,
                f"protocol error: reply for command {reply.command_id} while {cid} was in flight",
            )
        action = reply.client_action
        kind = action.WhichOneof("action")
        if kind == "failure":
            if action.failure.restart:
                self._restart("the user function asked for a restart")
            return reply, Outcome("failure", action.failure)
        return reply, Outcome(kind, getattr(action, kind) if kind else None, reply.side_effects)

    @abc.abstractmethod
    def _command_in(self, command: Any) -> Any:
        """Wrap a Command in the component type's stream message."""

    async def _journal_write(
        self,
        write: Callable[[], Any],
        in_doubt: InDoubt,
        parent: Any = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Any:
        """`write` with its errors turned into StreamBroken; traced as "journal write"
        (under `parent`, a command's captured context, when it runs in another task)."""
        if tracing.dropped(parent):  # no span: the trace current, in two C calls
            token = tracing.within(parent)
            try:
                return await self._journal_write_traced(write, in_doubt)
            finally:
                tracing.leave(token)
        with tracing.span("journal write", parent=parent, attributes=attributes):
            return await self._journal_write_traced(write, in_doubt)

    async def _journal_write_traced(self, write: Callable[[], Any], in_doubt: InDoubt) -> Any:
        started = time.perf_counter()
        try:
            result = await write()
        except ConcurrentWriteError as e:
            tracing.annotate({"larder.journal.outcome": "fenced"})
            self.env.metrics.fencing_rejections.labels(self.entity_type).inc()
            # Reloaded after our own write of unknown outcome (it may be what refused this
            # one), or for a command with a key (the write that refused it may be a retry
            # of it through another sidecar).
            reload = bool(self._in_doubt or in_doubt.keys)
            ours, records = await self._reloaded_in_doubt() if reload else (False, {})
            if ours:
                self._in_doubt.clear()
                log.warning(
                    "the journal refused a write of %s/%s: this entity's own earlier write, "
                    "whose outcome was unknown, has landed since (%s)",
                    self.entity_type,
                    self.entity_id,
                    e,
                    extra=self._log_extra,
                )
                raise StreamBroken(
                    grpc.StatusCode.ABORTED,
                    # Not the journal's words: they blame another writer.
                    "this entity's own earlier journal write, whose outcome was unknown when "
                    "it timed out, has landed since (the journal holds it now); this command "
                    "was handled before that was known and was not stored; retry the command",
                    records,
                ) from e
            log.warning(
                "the journal refused a write of %s/%s: another writer got there first (%s)",
                self.entity_type,
                self.entity_id,
                e,
                extra=self._log_extra,
            )
            raise StreamBroken(
                grpc.StatusCode.ABORTED,
                f"another writer changed this entity ({e}); retry the command",
                records,
            ) from e
        except WriteOutcomeUnknown as e:
            tracing.annotate({"larder.journal.outcome": "unknown"})
            # Not retried here: the write may have landed. The restart reloads the
            # entity, so its next command sees whatever the journal holds.
            self._in_doubt.append(in_doubt)
            raise StreamBroken(
                grpc.StatusCode.UNAVAILABLE,
                f"journal write outcome unknown, the command may or may not be stored: {e}",
            ) from e
        except JournalUnavailable as e:
            tracing.annotate({"larder.journal.outcome": "unavailable"})
            raise StreamBroken(
                grpc.StatusCode.UNAVAILABLE, f"journal unavailable, nothing was stored: {e}"
            ) from e
        except JournalError as e:
            raise StreamBroken(grpc.StatusCode.INTERNAL, f"journal error: {e}") from e
        else:
            tracing.annotate({"larder.journal.outcome": "stored"})
            # Fenced on the position the doubtful writes were to take: now taken, they
            # can no longer land.
            self._in_doubt.clear()
            return result
        finally:
            self.env.metrics.journal_latency.labels("write").observe(time.perf_counter() - started)

    def _restart(self, reason: str) -> None:
        """Drop the stream; the next command activates the entity again from the journal."""
        if self._call is None:
            return
        self._drop_call()
        self.lifecycle.fire(Event.RESTART)
        self.env.metrics.restarts.labels(self.entity_type).inc()
        self.env.metrics.active_entities.dec()
        log.warning(
            "restarting %s/%s from the journal: %s",
            self.entity_type,
            self.entity_id,
            reason,
            extra=self._log_extra,
        )

    def _drop_call(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def _close(self, reason: str) -> None:
        call, self._call = self._call, None
        if call is None:
            return
        self.env.metrics.active_entities.dec()
        self.env.metrics.passivations.labels(self.entity_type).inc()
        try:
            await call.done_writing()
            # The SDKs end their side when ours ends; wait briefly for a clean close.
            await asyncio.wait_for(call.wait_for_connection(), 1.0)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError):
            pass
        finally:
            call.cancel()
        log.info(
            "passivated %s/%s (%s)",
            self.entity_type,
            self.entity_id,
            reason,
            extra=self._log_extra,
        )


def _mark_forward(forward: Any, key: str) -> None:
    """Give a forward of a command with an idempotency key a key of its own (unless the
    user function set one): a replayed forward then reaches its target as a retry."""
    entries = forward.metadata.entries
    if not any(entry.key == HEADER for entry in entries):
        entries.add(key=HEADER, string_value=key)


def log_unexpected_exit(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        exc = task.exception()
        if exc is not None:
            log.error("entity task %s exited unexpectedly", task.get_name(), exc_info=exc)
