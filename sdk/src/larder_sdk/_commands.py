"""Running one command's handler, for every component kind: decode, call, describe failures."""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf.message import DecodeError, Message

from larder_sdk._context import EffectContext
from larder_sdk._definition import CommandHandler
from larder_sdk._errors import CommandFailed
from larder_sdk._replies import unexpected_failure
from larder_sdk._tracing import handler_span, tracing_configured


def decode_payload(
    subject: str, command_name: str, handler: CommandHandler, payload: Any
) -> Message:
    """The command's message; a payload of the wrong type fails the command."""
    try:
        return handler.input_type.FromString(payload.value)
    except DecodeError as e:
        raise CommandFailed(
            f"{subject}: command {command_name!r}: the payload is not a valid "
            f"{handler.input_type.DESCRIPTOR.full_name}: {e}"
        ) from e


async def run_handler(handler: CommandHandler, ctx: EffectContext, *args: Any) -> object:
    """Call `handler.fn(*args, ctx)`, awaiting it if it is async; return what it returned.

    With tracing set up by the application, in a span continuing the sidecar's trace."""
    if not tracing_configured():
        # Without the span's context manager: a generator and its wrapper per command.
        result = handler.fn(*args, ctx)
        if handler.is_async:
            result = await result
        check_not_failed(ctx)
        return result
    with handler_span(handler.method, ctx):
        result = handler.fn(*args, ctx)
        if handler.is_async:
            result = await result
        check_not_failed(ctx)
    return result


def check_not_failed(ctx: EffectContext) -> None:
    # The handler may have caught its own ctx.fail(); the failure still stands.
    if ctx._failure is not None:
        raise CommandFailed(ctx._failure)


def failure_description(
    log: logging.Logger,
    subject: str,
    command_name: str,
    exc: Exception,
    command_id: int | None = None,
) -> str:
    """What the client sees of a failed command; an unexpected exception is logged in full."""
    if isinstance(exc, CommandFailed):
        return exc.description
    if command_id is None:
        log.exception("%s: command %r failed", subject, command_name)
    else:
        log.exception("%s: command %r (id %d) failed", subject, command_name, command_id)
    return unexpected_failure(subject, command_name, exc)
