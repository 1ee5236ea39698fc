"""What the event-sourced and value entity streams share: commands in, replies out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message

from larder_sdk._commands import decode_payload
from larder_sdk._definition import CommandHandler, suggest
from larder_sdk._errors import CommandFailed
from larder_sdk._replies import WrongReturnError, fill_reply_or_forward

M = TypeVar("M", bound=Message)


class StreamFailure(Exception):
    """The entity cannot go on on this stream; the sidecar must restart it from the journal."""


class EntityInstance(Protocol):
    async def handle_command(self, command: Any) -> Any: ...


InstanceT = TypeVar("InstanceT", bound=EntityInstance)


def copy_state(state: M) -> M:
    """A copy for a handler to mutate freely: the state changes only if the command succeeds."""
    clone = type(state)()
    clone.CopyFrom(state)
    return clone


def resolve_command(
    subject: str, handlers: Mapping[str, CommandHandler], command: Any
) -> tuple[CommandHandler, Message]:
    """The handler and decoded message of an entity `Command`; raises CommandFailed."""
    name = command.name
    handler = handlers.get(name)
    if handler is None:
        raise CommandFailed(f"{subject}: unknown command {name!r}{suggest(name, handlers)}")
    return handler, decode_payload(subject, name, handler, command.payload)


def failed_reply(out_type: Callable[[], Any], command_id: int, description: str) -> Any:
    """A stream message failing one command (the entity goes on)."""
    out = out_type()
    out.reply.command_id = command_id
    failure = out.reply.client_action.failure
    failure.command_id = command_id
    failure.description = description
    return out


def fill_client_action(
    client_action: Any, result: object, handler: CommandHandler, command_name: str
) -> None:
    """An entity command must answer: a reply or a forward, never nothing."""
    if fill_reply_or_forward(client_action.reply, client_action.forward, result, handler) is None:
        raise WrongReturnError(
            f"the handler returned None; command {command_name!r} must reply with "
            f"{handler.output_type.DESCRIPTOR.full_name}, a Reply or a Forward"
        )


async def serve_stream(
    requests: AsyncIterator[Any],
    advance: Callable[[InstanceT | None, Any], InstanceT],
    out_type: Callable[[], Any],
    log: logging.Logger,
) -> AsyncIterator[Any]:
    """Commands go to the instance; everything else goes to `advance` (Init, replayed events).

    A StreamFailure ends the stream with a stream-level failure.
    """
    instance: InstanceT | None = None
    async for message in requests:
        if instance is not None and message.WhichOneof("message") == "command":
            yield await instance.handle_command(message.command)
            continue
        try:
            instance = advance(instance, message)
        except StreamFailure as e:
            log.exception("entity stream abandoned")
            out = out_type()
            out.failure.description = str(e)
            yield out
            return
