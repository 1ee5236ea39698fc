"""The entity manager: one supervised task per active entity, owning its protocol stream.

Commands for one entity reach the user function strictly one at a time, in arrival
order; different entities run concurrently. Events, snapshots and value state are
stored before a reply is released. An event-sourced entity does not wait for its
events to be stored before it takes the next command: while one journal write is in
flight, the events of the commands handled meanwhile gather and go in the next write,
one transaction for all of them (group commit), and each reply is released when
everything up to its own events is stored. When the stream fails (a protocol
failure, the user function dying, a journal write that did not land) the entity
restarts from the journal before its next command; the commands whose events were
not stored fail, and nothing else does.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from .invoke import InvokeError, MetadataPairs
from .journal.base import (
    ConcurrentWriteError,
    Journal,
    JournalError,
    JournalUnavailable,
    PersistenceId,
    StoredPayload,
    WriteOutcomeUnknown,
    persistence_id,
)
from .metrics import Metrics
from .model import Kind, Method
from .outcome import Outcome
from .protocol import (
    component_pb2,
    entity_pb2,
)
from .protocol import (
    event_sourced_entity_pb2 as es_pb2,
)
from .protocol import (
    event_sourced_entity_pb2_grpc as es_grpc,
)
from .protocol import (
    value_entity_pb2 as ve_pb2,
)
from .protocol import (
    value_entity_pb2_grpc as ve_grpc,
)

log = logging.getLogger("larder_sidecar.entities")

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs
_PASSIVATE = object()
USER_FUNCTION_CONNECT_TIMEOUT = 2.0
_STOP = object()
# One group-commit write carries at most this many commands, and this many payload
# bytes unless a single command alone is larger.
_MAX_GROUP_COMMANDS = 64
_MAX_GROUP_BYTES = 32 * 1024


def protocol_metadata(pairs: MetadataPairs) -> Any:
    return component_pb2.Metadata(
        entries=[component_pb2.MetadataEntry(key=k, string_value=v) for k, v in pairs]
    )


@dataclass(slots=True)
class _Command:
    method: Method
    entity_id: str
    payload: bytes
    metadata: MetadataPairs
    future: asyncio.Future[Outcome]


class _StreamBroken(Exception):
    """The protocol stream cannot be used any more; the entity must restart."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Entity(abc.ABC):
    """One active entity. Subclasses know the event-sourced and value protocols."""

    kind: Kind

    def __init__(
        self,
        manager: EntityManager,
        entity_type: str,
        service: str,
        entity_id: str,
        idle_timeout: float,
    ) -> None:
        self.manager = manager
        self.entity_type = entity_type
        self.service = service
        self.entity_id = entity_id
        self.pid: PersistenceId = persistence_id(entity_type, entity_id)
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.idle_timeout = idle_timeout
        self._idle: asyncio.TimerHandle | None = None
        self._call: Any = None
        self._exchanging = False
        self._command_id = 0
        self._log_extra = {"entity_type": entity_type, "entity_id": entity_id}
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"entity {entity_type}/{entity_id}"
        )
        self.task.add_done_callback(_log_unexpected_exit)

    # --- the loop -----------------------------------------------------------------------

    def submit(self, command: _Command) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.queue.put_nowait(command)

    def stop(self) -> None:
        self.queue.put_nowait(_STOP)

    def _arm_idle(self) -> None:
        if self._idle is None and self.queue.empty():
            self._idle = asyncio.get_running_loop().call_later(
                self.idle_timeout, self.queue.put_nowait, _PASSIVATE
            )

    async def _run(self) -> None:
        reason = "stopped"
        try:
            while True:
                item = await self.queue.get()
                if item is _PASSIVATE:
                    self._idle = None
                    if self.queue.empty():
                        reason = "idle"
                        break
                    continue
                if item is _STOP:
                    break
                if item.future.done():  # the caller gave up while queued
                    continue
                await self._one(item)
                self._arm_idle()
        finally:
            # Replies still waiting for their events are released (or failed) by the
            # write in flight. Before detaching: a new incarnation must not load the
            # entity while that write may still land.
            await self._drain()
            # Detach so new commands start a fresh entity rather than queue here.
            self.manager.detach(self)
            if self._idle is not None:
                self._idle.cancel()
            self._fail_queued()
            await self._close(reason)

    def _fail_queued(self) -> None:
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if isinstance(item, _Command) and not item.future.done():
                # Resubmit: the manager starts a new incarnation (e.g. a command that
                # arrived between the idle timer firing and detaching).
                self.manager.resubmit(item)

    async def _one(self, command: _Command) -> None:
        try:
            failed = self._write_failure()
            if failed is not None:
                self._restart(failed)
            if self._call is None:
                await self._drain()
                await self._activate()
            self._exchanging = True
            try:
                reply, outcome = await self._exchange(command)
            finally:
                self._exchanging = False
            await self._complete(command, reply, outcome)
        except _StreamBroken as e:
            self._restart(e.message)
            _settle_error(command.future, InvokeError(e.code, e.message))
        except InvokeError as e:
            _settle_error(command.future, e)
        except Exception as e:
            log.exception(
                "unexpected error in entity %s/%s",
                self.entity_type,
                self.entity_id,
                extra=self._log_extra,
            )
            self._restart(f"internal error: {e}")
            _settle_error(
                command.future,
                InvokeError(
                    grpc.StatusCode.INTERNAL, f"the sidecar failed handling the command: {e}"
                ),
            )

    async def _complete(self, command: _Command, reply: Any, outcome: Outcome) -> None:
        """Store what the reply emitted, then release the reply."""
        if outcome.kind != "failure":
            await self._persist(reply)
        if not command.future.done():
            command.future.set_result(outcome)

    def _write_failure(self) -> str | None:
        """Why the entity must restart before its next command, if a write failed."""
        return None

    async def _drain(self) -> None:
        """Wait until no journal write of this entity is in flight."""
        return

    # --- the stream ---------------------------------------------------------------------

    async def _activate(self) -> None:
        self._command_id = 0
        await self.manager.user_function_ready()
        try:
            await self._open()
        except JournalUnavailable as e:
            self._drop_call()
            raise InvokeError(grpc.StatusCode.UNAVAILABLE, f"journal unavailable: {e}") from e
        except JournalError as e:
            self._drop_call()
            raise InvokeError(
                grpc.StatusCode.INTERNAL, f"the entity cannot be loaded from the journal: {e}"
            ) from e
        except grpc.aio.AioRpcError as e:
            self._drop_call()
            raise InvokeError(
                grpc.StatusCode.UNAVAILABLE,
                f"the user function did not accept the entity stream: {e.details()}",
            ) from e
        m = self.manager.metrics
        m.activations.labels(self.entity_type).inc()
        m.active_entities.inc()
        log.info("activated %s/%s", self.entity_type, self.entity_id, extra=self._log_extra)

    @abc.abstractmethod
    async def _open(self) -> None:
        """Open the protocol stream and send Init with the recovered state."""

    async def _exchange(self, command: _Command) -> tuple[Any, Outcome]:
        self._command_id += 1
        cid = self._command_id
        msg = entity_pb2.Command(
            entity_id=self.entity_id,
            id=cid,
            name=command.method.model.name,
            payload={"type_url": command.method.input_type_url, "value": command.payload},
            metadata=protocol_metadata(command.metadata),
        )
        call = self._call
        try:
            await call.write(self._command_in(msg))
            out = await call.read()
        except grpc.aio.AioRpcError as e:
            raise _StreamBroken(
                grpc.StatusCode.UNAVAILABLE,
                f"the user function's entity stream failed: {e.code().name} {e.details()}",
            ) from e
        except asyncio.InvalidStateError as e:
            raise _StreamBroken(
                grpc.StatusCode.UNAVAILABLE, "the user function closed the entity stream"
            ) from e
        if out is _EOF:
            raise _StreamBroken(
                grpc.StatusCode.UNAVAILABLE, "the user function closed the entity stream"
            )
        which = out.WhichOneof("message")
        if which == "failure":
            raise _StreamBroken(
                grpc.StatusCode.INTERNAL,
                f"the entity failed: {out.failure.description or 'no description'}",
            )
        reply = out.reply
        if reply.command_id != cid:
            raise _StreamBroken(
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

    @abc.abstractmethod
    async def _persist(self, reply: Any) -> None:
        """Store what the reply emitted, before the reply is released."""

    async def _journal_write(self, write: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return await write()
        except ConcurrentWriteError as e:
            raise _StreamBroken(
                grpc.StatusCode.ABORTED,
                f"another writer changed this entity ({e}); retry the command",
            ) from e
        except WriteOutcomeUnknown as e:
            # Not retried here: the write may have landed. The restart reloads the
            # entity, so its next command sees whatever the journal holds.
            raise _StreamBroken(
                grpc.StatusCode.UNAVAILABLE,
                f"journal write outcome unknown, the command may or may not be stored: {e}",
            ) from e
        except JournalUnavailable as e:
            raise _StreamBroken(
                grpc.StatusCode.UNAVAILABLE, f"journal unavailable, nothing was stored: {e}"
            ) from e
        except JournalError as e:
            raise _StreamBroken(grpc.StatusCode.INTERNAL, f"journal error: {e}") from e
        finally:
            self.manager.metrics.journal_latency.labels("write").observe(
                time.perf_counter() - started
            )

    def _restart(self, reason: str) -> None:
        """Drop the stream; the next command activates the entity again from the journal."""
        if self._call is None:
            return
        self._drop_call()
        self.manager.metrics.restarts.labels(self.entity_type).inc()
        self.manager.metrics.active_entities.dec()
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
        self.manager.metrics.active_entities.dec()
        self.manager.metrics.passivations.labels(self.entity_type).inc()
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


def _settle_error(future: asyncio.Future[Outcome], error: InvokeError) -> None:
    if not future.done():
        future.set_exception(error)


def _any(payload: StoredPayload) -> dict[str, Any]:
    return {"type_url": payload.type_url, "value": payload.value}


@dataclass(slots=True)
class _Unstored:
    """A handled command whose reply waits for its events (and everyone's before)."""

    command: _Command
    outcome: Outcome
    events: list[StoredPayload]
    snapshot: StoredPayload | None
    size: int


class _EventSourced(_Entity):
    kind = Kind.EVENT_SOURCED

    # The last sequence number stored in the journal.
    _sequence_nr = 0
    _writer: asyncio.Task[None] | None = None
    _failed: _StreamBroken | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unstored: list[_Unstored] = []

    async def _open(self) -> None:
        self._failed = None
        started = time.perf_counter()
        recovery = await self.manager.journal.load(self.pid)
        self.manager.metrics.journal_latency.labels("load").observe(time.perf_counter() - started)
        self._call = call = self.manager.es_stub.Handle()
        init = es_pb2.EventSourcedInit(service_name=self.service, entity_id=self.entity_id)
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

    def _command_in(self, command: Any) -> Any:
        return es_pb2.EventSourcedStreamIn(command=command)

    async def _persist(self, reply: Any) -> None:
        raise AssertionError("event-sourced replies are stored by _complete")

    async def _complete(self, command: _Command, reply: Any, outcome: Outcome) -> None:
        if self._failed is not None:
            # The user function handled this command on top of events that were not
            # stored: its reply describes a state that does not exist.
            _settle_error(command.future, _not_stored(self._failed))
            self._restart(self._failed.message)
            return
        stored = outcome.kind == "failure"
        events = [] if stored else [StoredPayload(e.type_url, e.value) for e in reply.events]
        snapshot = (
            StoredPayload(reply.snapshot.type_url, reply.snapshot.value)
            if not stored and reply.HasField("snapshot")
            else None
        )
        if not events and snapshot is None and self._writer is None:
            # Nothing to store and nothing stored-to-be that this reply may have seen.
            if not command.future.done():
                command.future.set_result(outcome)
            return
        size = sum(len(e.value) for e in events) + (len(snapshot.value) if snapshot else 0)
        self._unstored.append(_Unstored(command, outcome, events, snapshot, size))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(
                self._write_behind(), name=f"journal writes {self.entity_type}/{self.entity_id}"
            )
        if len(self._unstored) >= _MAX_GROUP_COMMANDS:
            # Back-pressure: a slow journal must not let handled commands pile up.
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
                    write = functools.partial(
                        self.manager.journal.append, self.pid, self._sequence_nr, events, snapshot
                    )
                    try:
                        self._sequence_nr = await self._journal_write(write)
                    except _StreamBroken as e:
                        self._failed = e
                        error = InvokeError(e.code, e.message)
                        for u in group:
                            _settle_error(u.command.future, error)
                        later, self._unstored = self._unstored, []
                        for u in later:
                            _settle_error(u.command.future, _not_stored(e))
                        if not self._exchanging:
                            # Otherwise the command being handled fails and restarts.
                            self._restart(e.message)
                        return
                if len(group) > 1:
                    self.manager.metrics.group_commits.labels(self.entity_type).inc()
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

    def _write_failure(self) -> str | None:
        return None if self._failed is None else self._failed.message

    async def _drain(self) -> None:
        writer = self._writer
        if writer is not None:
            # The writer settles every reply it holds whatever happens; waiting must
            # not cancel it if this entity's task is cancelled meanwhile.
            await asyncio.wait({writer})


def _not_stored(cause: _StreamBroken) -> InvokeError:
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


class _Value(_Entity):
    kind = Kind.VALUE

    _revision = 0

    async def _open(self) -> None:
        started = time.perf_counter()
        state = await self.manager.journal.load_value(self.pid)
        self.manager.metrics.journal_latency.labels("load").observe(time.perf_counter() - started)
        self._call = call = self.manager.ve_stub.Handle()
        init = ve_pb2.ValueEntityInit(service_name=self.service, entity_id=self.entity_id)
        if state.payload is not None:
            init.state.value.type_url = state.payload.type_url
            init.state.value.value = state.payload.value
        await call.write(ve_pb2.ValueEntityStreamIn(init=init))
        self._revision = state.revision

    def _command_in(self, command: Any) -> Any:
        return ve_pb2.ValueEntityStreamIn(command=command)

    async def _persist(self, reply: Any) -> None:
        which = reply.state_action.WhichOneof("action")
        if which is None:
            return
        payload = (
            StoredPayload(
                reply.state_action.update.value.type_url, reply.state_action.update.value.value
            )
            if which == "update"
            else None
        )
        journal = self.manager.journal
        self._revision = await self._journal_write(
            lambda: journal.put_value(self.pid, self._revision, payload)
        )


class EntityManager:
    """Owns every active entity of this sidecar."""

    def __init__(
        self,
        journal: Journal,
        channel: grpc.aio.Channel,
        metrics: Metrics,
        default_passivation: float,
    ) -> None:
        self.journal = journal
        self.metrics = metrics
        self._channel = channel
        self.es_stub = es_grpc.EventSourcedEntitiesStub(channel)
        self.ve_stub = ve_grpc.ValueEntitiesStub(channel)
        self._default_passivation = default_passivation
        self._entities: dict[tuple[str, str], _Entity] = {}
        self._accepting = True

    async def user_function_ready(self) -> None:
        """Wait (briefly) for the connection to the user function.

        After the user function restarts, the channel sits in reconnect back-off; a
        stream opened then would fail at once. Waiting here costs nothing when the
        channel is up, and only happens on activation.
        """
        if self._channel.get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
            return
        try:
            await asyncio.wait_for(self._channel.channel_ready(), USER_FUNCTION_CONNECT_TIMEOUT)
        except TimeoutError:
            raise InvokeError(
                grpc.StatusCode.UNAVAILABLE,
                f"the user function is not reachable (waited {USER_FUNCTION_CONNECT_TIMEOUT:.0f}s "
                "to connect); it may be restarting",
            ) from None

    @property
    def active(self) -> int:
        return len(self._entities)

    def submit(
        self, method: Method, entity_id: str, payload: bytes, metadata: MetadataPairs
    ) -> asyncio.Future[Outcome]:
        """Queue a command for `entity_id`; the future settles with its outcome or InvokeError."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if not self._accepting:
            future.set_exception(
                InvokeError(grpc.StatusCode.UNAVAILABLE, "the sidecar is shutting down")
            )
            return future
        self.resubmit(_Command(method, entity_id, payload, metadata, future))
        return future

    def resubmit(self, command: _Command) -> None:
        if not self._accepting:
            _settle_error(
                command.future,
                InvokeError(grpc.StatusCode.UNAVAILABLE, "the sidecar is shutting down"),
            )
            return
        component = command.method.component
        key = (component.entity_type, command.entity_id)
        entity = self._entities.get(key)
        if entity is None:
            cls = _EventSourced if component.kind is Kind.EVENT_SOURCED else _Value
            entity = cls(
                self,
                component.entity_type,
                component.service,
                key[1],
                component.passivation_timeout or self._default_passivation,
            )
            self._entities[key] = entity
        entity.submit(command)

    def detach(self, entity: _Entity) -> None:
        key = (entity.entity_type, entity.entity_id)
        if self._entities.get(key) is entity:
            del self._entities[key]

    async def shutdown(self) -> None:
        """Stop accepting, let queued commands finish, passivate everything."""
        self._accepting = False
        entities = list(self._entities.values())
        for entity in entities:
            entity.stop()
        if entities:
            await asyncio.gather(*(e.task for e in entities), return_exceptions=True)


def _log_unexpected_exit(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        exc = task.exception()
        if exc is not None:
            log.error("entity task %s exited unexpectedly", task.get_name(), exc_info=exc)
