"""The context objects handlers receive: metadata in, effects and failures out."""

from __future__ import annotations

from typing import Any, Generic, NoReturn, TypeVar

from google.protobuf.message import Message

from larder_sdk._effects import MethodRef, SideEffect, side_effect
from larder_sdk._errors import CommandFailed
from larder_sdk._metadata import EMPTY_METADATA, Metadata, MetadataValue, from_protocol

S = TypeVar("S", bound=Message)

__all__ = [
    "ActionContext",
    "EffectContext",
    "EntityContext",
    "EventSourcedContext",
    "ValueEntityContext",
    "ViewContext",
]


class EffectContext:
    """What every handler can do: read metadata, request side effects, fail."""

    __slots__ = ("_active", "_failure", "_metadata", "_raw_metadata", "side_effects")

    def __init__(self, raw_metadata: Any = None) -> None:
        # The protocol metadata is converted on first use: most commands never read it.
        self._raw_metadata = raw_metadata
        self._metadata: Metadata | None = None
        self._failure: str | None = None
        self._active = True
        self.side_effects: list[SideEffect] = []

    @property
    def metadata(self) -> Metadata:
        """The metadata that came with the command."""
        if self._metadata is None:
            raw = self._raw_metadata
            self._metadata = (
                from_protocol(raw) if raw is not None and len(raw.entries) else EMPTY_METADATA
            )
        return self._metadata

    def side_effect(
        self,
        method: MethodRef,
        message: Message,
        *,
        synchronous: bool = False,
        metadata: Metadata | dict[str, MetadataValue] | None = None,
    ) -> None:
        """Ask the sidecar to call `method` with `message` once this command succeeds."""
        self._ensure_active()
        self.side_effects.append(
            side_effect(method, message, synchronous=synchronous, metadata=metadata)
        )

    def fail(self, description: str) -> NoReturn:
        """Fail the command with `description` for the client; never returns.

        The failure stands even if the handler catches the `CommandFailed`.
        """
        self._ensure_active()
        self._failure = description
        raise CommandFailed(description)

    def _ensure_active(self) -> None:
        if not self._active:
            raise RuntimeError(
                "this context's command has already completed; effects can only be "
                "requested while its handler runs (was the context kept in a task?)"
            )


class EntityContext(EffectContext):
    """Context of a command to an entity."""

    __slots__ = ("command_id", "command_name", "entity_id")

    def __init__(
        self, entity_id: str, command_id: int, command_name: str, raw_metadata: Any = None
    ) -> None:
        super().__init__(raw_metadata)
        self.entity_id = entity_id
        self.command_id = command_id
        self.command_name = command_name


class EventSourcedContext(EntityContext):
    """Context of a command to an event-sourced entity: adds `emit`."""

    __slots__ = ("events", "sequence_number")

    def __init__(
        self,
        entity_id: str,
        command_id: int,
        command_name: str,
        sequence_number: int,
        raw_metadata: Any = None,
    ) -> None:
        super().__init__(entity_id, command_id, command_name, raw_metadata)
        self.sequence_number = sequence_number
        """The sequence number of the last event applied before this command."""
        self.events: list[Message] = []

    def emit(self, event: Message) -> None:
        """Persist `event` if the command succeeds; its handler runs after this handler returns."""
        self._ensure_active()
        if not isinstance(event, Message):
            raise TypeError(f"emit() takes a protobuf message, not a {type(event).__name__}")
        self.events.append(event)


class ValueEntityContext(EntityContext, Generic[S]):
    """Context of a command to a value entity: adds `update_state` and `delete_state`."""

    __slots__ = ("_state_type", "deleted", "new_state")

    def __init__(
        self,
        entity_id: str,
        command_id: int,
        command_name: str,
        state_type: type[S],
        raw_metadata: Any = None,
    ) -> None:
        super().__init__(entity_id, command_id, command_name, raw_metadata)
        self._state_type = state_type
        self.new_state: S | None = None
        self.deleted = False

    def update_state(self, state: S) -> None:
        """Replace the entity's state if the command succeeds (cancels an earlier delete)."""
        self._ensure_active()
        if not isinstance(state, self._state_type):
            raise TypeError(
                f"update_state() takes a {self._state_type.DESCRIPTOR.full_name}, "
                f"not a {type(state).__name__}"
            )
        self.new_state = state
        self.deleted = False

    def delete_state(self) -> None:
        """Delete the entity's state if the command succeeds (cancels an earlier update)."""
        self._ensure_active()
        self.new_state = None
        self.deleted = True


class ActionContext(EffectContext):
    """Context of an action call."""

    __slots__ = ("command_name", "service_name")

    def __init__(self, service_name: str, command_name: str, raw_metadata: Any = None) -> None:
        super().__init__(raw_metadata)
        self.service_name = service_name
        self.command_name = command_name

    def take_side_effects(self) -> list[SideEffect]:
        """Hand over the side effects requested so far (streamed replies carry them one by one)."""
        taken, self.side_effects = self.side_effects, []
        return taken


class ViewContext:
    """Context of a view update: where the message came from and what it carried."""

    __slots__ = (
        "_metadata", "_raw_metadata", "command_name", "row_key", "service_name", "table"
    )

    def __init__(
        self, service_name: str, command_name: str, table: str, raw_metadata: Any = None
    ) -> None:
        self.service_name = service_name
        """The view's service."""
        self.command_name = command_name
        """The update method."""
        self.table = table
        """The table the row is written to."""
        self.row_key: str | None = None
        """Set it to store the returned row (or apply `DELETE_ROW`) under this key instead
        of the message's (the entity id, for entity sources): a handler keeping several
        rows per entity keys them itself. The `row` it was given is still the one stored
        under the message's key."""
        self._raw_metadata = raw_metadata
        self._metadata: Metadata | None = None

    @property
    def metadata(self) -> Metadata:
        """The metadata of the source message (CloudEvents attributes among it)."""
        if self._metadata is None:
            raw = self._raw_metadata
            self._metadata = (
                from_protocol(raw) if raw is not None and len(raw.entries) else EMPTY_METADATA
            )
        return self._metadata

    @property
    def event_subject(self) -> str | None:
        """The `ce-subject` of the source message: the entity id, for entity sources."""
        subject = self.metadata.get("ce-subject")
        return subject if isinstance(subject, str) else None
