"""Drive components in-process, without a sidecar.

The kits speak the same protocol messages the sidecar would, through the same code
the server runs, and decode the answers into a `CommandResult`:

    kit = EventSourcedTestKit(counter, "c-1")
    result = kit.run("Increase", IncreaseValue(value=2))
    assert result.events == (ValueIncreased(value=2),)
    assert kit.state.value == 2
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from larder_sdk import _action, _view
from larder_sdk import _protocol as proto
from larder_sdk._action import Action
from larder_sdk._component import Component
from larder_sdk._effects import Forward, SideEffect
from larder_sdk._eventsourced import EventSourcedEntity
from larder_sdk._eventsourced_instance import EventSourcedInstance
from larder_sdk._metadata import (
    EMPTY_METADATA,
    Metadata,
    MetadataValue,
    from_protocol,
    to_protocol,
)
from larder_sdk._valueentity import ValueEntity, ValueEntityInstance
from larder_sdk._view import View, ViewStreamFailure

__all__ = [
    "ActionTestKit",
    "CommandResult",
    "EventSourcedTestKit",
    "ValueEntityTestKit",
    "ViewTestKit",
    "ViewUpdateResult",
]

_S = TypeVar("_S", bound=Message)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What one command produced, decoded."""

    reply: Message | None = None
    reply_metadata: Metadata = EMPTY_METADATA
    forward: Forward | None = None
    side_effects: tuple[SideEffect, ...] = ()
    failure: str | None = None
    """The failure description the client would see, if the command failed."""
    events: tuple[Message, ...] = ()
    snapshot: Message | None = None
    state_action: Literal["update", "delete"] | None = None
    updated_state: Message | None = None

    @property
    def failed(self) -> bool:
        return self.failure is not None


def _unpack(any_message: Any) -> Message:
    name = proto.type_name_of(any_message.type_url)
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        raise LookupError(f"cannot decode a {name}: its generated module is not imported") from None
    cls = message_factory.GetMessageClass(descriptor)
    return cls.FromString(any_message.value)


def _metadata(metadata: Metadata | dict[str, MetadataValue] | None) -> Any:
    if metadata is None:
        return None
    return to_protocol(metadata if isinstance(metadata, Metadata) else Metadata.of(metadata))


def _side_effect(effect: Any) -> SideEffect:
    return SideEffect(
        effect.service_name,
        effect.command_name,
        _unpack(effect.payload),
        effect.synchronous,
        from_protocol(effect.metadata),
    )


def _client_result(
    reply_msg: Any, forward_msg: Any, which: str | None, output_type: type[Message] | None
) -> dict[str, Any]:
    if which == "reply":
        payload = reply_msg.payload
        reply = (
            output_type.FromString(payload.value) if output_type is not None else _unpack(payload)
        )
        return {"reply": reply, "reply_metadata": from_protocol(reply_msg.metadata)}
    if which == "forward":
        return {
            "forward": Forward(
                forward_msg.service_name,
                forward_msg.command_name,
                _unpack(forward_msg.payload),
                from_protocol(forward_msg.metadata),
            )
        }
    return {}


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    if _loop_running():
        coro.close()
        raise RuntimeError(
            "run() was called inside a running event loop; use `await kit.run_async(...)`"
        )
    return asyncio.run(coro)


class _Kit(ABC):
    @abstractmethod
    async def run_async(
        self,
        command_name: str,
        message: Message,
        *,
        metadata: Metadata | dict[str, MetadataValue] | None = None,
    ) -> CommandResult: ...

    def run(
        self,
        command_name: str,
        message: Message,
        *,
        metadata: Metadata | dict[str, MetadataValue] | None = None,
    ) -> CommandResult:
        """`run_async` for tests without an event loop."""
        return _run(self.run_async(command_name, message, metadata=metadata))


def _output_type(component: Component, command_name: str) -> type[Message] | None:
    """What the command replies with; None for an unknown command (its reply is a failure)."""
    handler = component.handlers.get(command_name)
    return handler.output_type if handler is not None else None


def _entity_result(reply: Any, output_type: type[Message] | None, **state: Any) -> CommandResult:
    """Decode an entity's reply; `state` holds what it did to its state, if it succeeded."""
    action = reply.client_action
    which = action.WhichOneof("action")
    if which == "failure":
        return CommandResult(failure=action.failure.description)
    return CommandResult(
        **_client_result(action.reply, action.forward, which, output_type),
        side_effects=tuple(_side_effect(e) for e in reply.side_effects),
        **state,
    )


class _EntityKit(_Kit):
    entity_id: str

    def __init__(self) -> None:
        self._next_command_id = 1

    def _command(
        self,
        name: str,
        message: Message,
        metadata: Metadata | dict[str, MetadataValue] | None,
    ) -> Any:
        command = proto.entity.Command(
            entity_id=self.entity_id,
            id=self._next_command_id,
            name=name,
            payload=proto.pack(message),
        )
        raw = _metadata(metadata)
        if raw is not None:
            command.metadata.CopyFrom(raw)
        self._next_command_id += 1
        return command


class EventSourcedTestKit(_EntityKit, Generic[_S]):
    """One event-sourced entity, optionally started from a snapshot and journalled events."""

    def __init__(
        self,
        entity: EventSourcedEntity[_S],
        entity_id: str = "test-entity",
        *,
        snapshot: tuple[int, Message] | None = None,
        events: Iterable[Message] = (),
    ) -> None:
        super().__init__()
        entity.validate()
        self.entity = entity
        self.entity_id = entity_id
        init_snapshot = None
        if snapshot is not None:
            init_snapshot = proto.eventsourced.EventSourcedSnapshot(
                snapshot_sequence=snapshot[0], snapshot=proto.pack(snapshot[1])
            )
        self._instance = EventSourcedInstance(entity, entity_id, init_snapshot)
        self.all_events: list[Message] = []
        for event in events:
            self._instance.replay(
                proto.eventsourced.EventSourcedEvent(
                    sequence=self._instance.sequence + 1, payload=proto.pack(event)
                )
            )
            self.all_events.append(event)

    @property
    def state(self) -> _S:
        return self._instance.state

    @property
    def sequence(self) -> int:
        return self._instance.sequence

    async def run_async(
        self,
        command_name: str,
        message: Message,
        *,
        metadata: Metadata | dict[str, MetadataValue] | None = None,
    ) -> CommandResult:
        out = await self._instance.handle_command(self._command(command_name, message, metadata))
        reply = out.reply
        # A failed command's reply carries no events and no snapshot.
        events = tuple(
            self.entity.event_class(proto.type_name_of(e.type_url)).FromString(e.value)
            for e in reply.events
        )
        self.all_events.extend(events)
        return _entity_result(
            reply,
            _output_type(self.entity, command_name),
            events=events,
            snapshot=(
                self.entity.state_type.FromString(reply.snapshot.value)
                if reply.HasField("snapshot")
                else None
            ),
        )


class ValueEntityTestKit(_EntityKit, Generic[_S]):
    """One value entity, optionally started from a stored state."""

    def __init__(
        self, entity: ValueEntity[_S], entity_id: str = "test-entity", *, state: _S | None = None
    ) -> None:
        super().__init__()
        entity.validate()
        self.entity = entity
        self.entity_id = entity_id
        init_state = None
        if state is not None:
            init_state = proto.valueentity.ValueEntityInitState(value=proto.pack(state))
        self._instance = ValueEntityInstance(entity, entity_id, init_state)

    @property
    def state(self) -> _S:
        return self._instance.state

    async def run_async(
        self,
        command_name: str,
        message: Message,
        *,
        metadata: Metadata | dict[str, MetadataValue] | None = None,
    ) -> CommandResult:
        out = await self._instance.handle_command(self._command(command_name, message, metadata))
        reply = out.reply
        # A failed command's reply carries no state action.
        state_which = reply.state_action.WhichOneof("action")
        updated = (
            self.entity.state_type.FromString(reply.state_action.update.value.value)
            if state_which == "update"
            else None
        )
        return _entity_result(
            reply,
            _output_type(self.entity, command_name),
            state_action=state_which,
            updated_state=updated,
        )


def _action_result(response: Any, output_type: type[Message] | None) -> CommandResult:
    which = response.WhichOneof("response")
    effects = tuple(_side_effect(e) for e in response.side_effects)
    if which == "failure":
        return CommandResult(failure=response.failure.description, side_effects=effects)
    return CommandResult(
        **_client_result(response.reply, response.forward, which, output_type),
        side_effects=effects,
    )


class ActionTestKit(_Kit):
    """An action; each call is independent."""

    def __init__(self, action: Action) -> None:
        action.validate()
        self.action = action

    def _command(
        self,
        name: str | None,
        message: Message | None,
        metadata: Metadata | dict[str, MetadataValue] | None,
    ) -> Any:
        command = proto.action.ActionCommand()
        if name is not None:
            command.service_name = self.action.service_name
            command.name = name
        if message is not None:
            command.payload.CopyFrom(proto.pack(message))
        raw = _metadata(metadata)
        if raw is not None:
            command.metadata.CopyFrom(raw)
        return command

    async def _requests(
        self,
        name: str,
        messages: Iterable[Message],
        metadata: Metadata | dict[str, MetadataValue] | None,
    ) -> AsyncIterator[Any]:
        yield self._command(name, None, metadata)
        for message in messages:
            yield self._command(None, message, None)

    async def run_async(
        self,
        command_name: str,
        message: Message,
        *,
        metadata: Metadata | dict[str, MetadataValue] | None = None,
    ) -> CommandResult:
        """A unary call."""
        response = await _action.handle_unary(
            self._command(command_name, message, metadata), {self.action.service_name: self.action}
        )
        return _action_result(response, _output_type(self.action, command_name))

    async def stream_in(
        self,
        command_name: str,
        messages: Iterable[Message],
        *,
        metadata: Metadata | dict[str, MetadataValue] | None = None,
    ) -> CommandResult:
        """A streamed-in call: every message, then the single answer."""
        response = await _action.handle_streamed_in(
            self._requests(command_name, messages, metadata),
            {self.action.service_name: self.action},
        )
        return _action_result(response, _output_type(self.action, command_name))

    async def stream_out(
        self,
        command_name: str,
        message: Message,
        *,
        metadata: Metadata | dict[str, MetadataValue] | None = None,
    ) -> list[CommandResult]:
        """A streamed-out call: every answer until the handler finishes."""
        output = _output_type(self.action, command_name)
        return [
            _action_result(r, output)
            async for r in _action.handle_streamed_out(
                self._command(command_name, message, metadata),
                {self.action.service_name: self.action},
            )
        ]

    async def streamed(
        self,
        command_name: str,
        messages: Iterable[Message],
        *,
        metadata: Metadata | dict[str, MetadataValue] | None = None,
    ) -> list[CommandResult]:
        """A duplex call, fed all of `messages`."""
        output = _output_type(self.action, command_name)
        return [
            _action_result(r, output)
            async for r in _action.handle_streamed(
                self._requests(command_name, messages, metadata),
                {self.action.service_name: self.action},
            )
        ]


@dataclass(frozen=True, slots=True)
class ViewUpdateResult:
    """What one update did to its table."""

    action: Literal["upsert", "ignore", "delete"] | None = None
    """None when the update failed."""
    row: Message | None = None
    """The row stored, for an upsert."""
    key: str | None = None
    """The key of the row stored or deleted: the message's, or the handler's `row_key`."""
    failure: str | None = None
    """Why the update failed: the description the sidecar would see."""
    status: str | None = None
    """The gRPC status the sidecar would see for a failed update (`INVALID_ARGUMENT`, ...)."""

    @property
    def failed(self) -> bool:
        return self.failure is not None


class ViewTestKit:
    """A view's update methods over in-memory tables, called as the sidecar would call them:
    each message goes to its method with the row stored for its key, and the outcome is
    applied to the table. Methods without `transform_updates` store their input as it is.

        kit = ViewTestKit(customers_by_name)
        kit.update("ProcessCreated", CustomerCreated(customer_id="c1", name="Ann"), key="c1")
        assert kit.row("customers", "c1") == CustomerRow(customer_id="c1", name="Ann")
    """

    def __init__(self, view: View) -> None:
        view.validate()
        self.view = view
        self._tables: dict[str, dict[str, Message]] = {table: {} for table in view.tables}

    def rows(self, table: str) -> dict[str, Message]:
        """The rows of `table`, by key."""
        return dict(self._table(table))

    def row(self, table: str, key: str) -> Message | None:
        return self._table(table).get(key)

    def _table(self, table: str) -> dict[str, Message]:
        if table not in self._tables:
            raise LookupError(
                f"{self.view.subject} has no table {table!r}; it has: "
                f"{', '.join(sorted(self._tables)) or 'none'}"
            )
        return self._tables[table]

    def update(
        self,
        method_name: str,
        message: Message,
        *,
        key: str = "test-entity",
        metadata: Metadata | dict[str, MetadataValue] | None = None,
    ) -> ViewUpdateResult:
        """`update_async` for tests without an event loop."""
        return _run(self.update_async(method_name, message, key=key, metadata=metadata))

    async def update_async(
        self,
        method_name: str,
        message: Message,
        *,
        key: str = "test-entity",
        metadata: Metadata | dict[str, MetadataValue] | None = None,
    ) -> ViewUpdateResult:
        """Deliver `message` (an event, a state or a topic message) about `key` to the
        update method `method_name`; `key` is also the message's `ce-subject`."""
        update = self.view.updates.get(method_name)
        if update is None:
            raise LookupError(
                f"{self.view.subject} has no update method {method_name!r}; it has: "
                f"{', '.join(sorted(self.view.updates)) or 'none'}"
            )
        table = self._tables[update.table]
        if not update.transform:
            if message.DESCRIPTOR.full_name != update.row_type.full_name:
                raise TypeError(
                    f"{method_name!r} stores its input as the row, a "
                    f"{update.row_type.full_name}, not a {message.DESCRIPTOR.full_name}"
                )
            table[key] = message
            return ViewUpdateResult(action="upsert", row=message, key=key)
        receive = self._receive(method_name, update.table, message, key, metadata)
        try:
            out = await _view.handle_receive(receive, {self.view.service_name: self.view})
        except ViewStreamFailure as e:
            return ViewUpdateResult(failure=e.description, status=e.code)
        upsert = out.upsert
        if not upsert.HasField("row"):
            return ViewUpdateResult(action="ignore")
        # The handler may have keyed the row itself (context.row_key); parts joined by
        # ',' as the sidecar's store keys them.
        row_key = ",".join(part.string_part for part in upsert.row.key.parts) or key
        if not upsert.row.HasField("value"):
            table.pop(row_key, None)
            return ViewUpdateResult(action="delete", key=row_key)
        row_class = message_factory.GetMessageClass(update.row_type)
        row = row_class.FromString(upsert.row.value.value)
        table[row_key] = row
        return ViewUpdateResult(action="upsert", row=row, key=row_key)

    def _receive(
        self,
        method_name: str,
        table: str,
        message: Message,
        key: str,
        metadata: Metadata | dict[str, MetadataValue] | None,
    ) -> Any:
        given = (
            metadata if isinstance(metadata, Metadata) else Metadata.of(metadata or {})
        )
        if "ce-subject" not in given:
            given = given.with_entry("ce-subject", key)
        row_key = proto.view.Key(parts=[proto.view.KeyPart(string_part=key)])
        receive = proto.view.ReceiveEvent(
            service_name=self.view.service_name,
            command_name=method_name,
            payload=proto.pack(message),
            metadata=to_protocol(given),
            initial_table=table,
            key=row_key,
        )
        stored = self._tables[table].get(key)
        if stored is not None:
            receive.by_subject_lookup_result.index = table
            receive.by_subject_lookup_result.key.CopyFrom(row_key)
            receive.by_subject_lookup_result.value.CopyFrom(proto.pack(stored))
        return receive
