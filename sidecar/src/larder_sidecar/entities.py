"""The entity manager: one supervised task per active entity, owning its protocol stream.

Commands for one entity run strictly one at a time, in arrival order; different
entities run concurrently. Events, snapshots and value state are stored before a
reply is released. When the stream fails (a protocol failure, the user function
dying, a journal write that did not land) the entity restarts from the journal
before its next command, and only the in-flight command fails.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
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
            # Detach first so new commands start a fresh entity rather than queue here.
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
            if self._call is None:
                await self._activate()
            outcome = await self._exchange(command)
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
        else:
            if not command.future.done():
                command.future.set_result(outcome)

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

    async def _exchange(self, command: _Command) -> Outcome:
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
            return Outcome("failure", action.failure)
        await self._persist(reply)
        return Outcome(kind, getattr(action, kind) if kind else None, reply.side_effects)

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


class _EventSourced(_Entity):
    kind = Kind.EVENT_SOURCED

    _sequence_nr = 0

    async def _open(self) -> None:
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
        if not reply.events and not reply.HasField("snapshot"):
            return
        events = [StoredPayload(e.type_url, e.value) for e in reply.events]
        snapshot = (
            StoredPayload(reply.snapshot.type_url, reply.snapshot.value)
            if reply.HasField("snapshot")
            else None
        )
        journal = self.manager.journal
        self._sequence_nr = await self._journal_write(
            lambda: journal.append(self.pid, self._sequence_nr, events, snapshot)
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
