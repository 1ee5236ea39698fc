"""Turning a handler's return value into protocol replies, and failures into descriptions."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from larder_sdk import _protocol as proto
from larder_sdk._definition import CommandHandler, describe
from larder_sdk._effects import Forward, Reply
from larder_sdk._metadata import to_protocol


class WrongReturnError(TypeError):
    """A handler returned something that is not a valid reply for its method."""


def _check_message(message: object, handler: CommandHandler) -> Message:
    if type(message) is handler.output_type:
        return message  # the common case, checked cheaply
    expected = handler.output_type.DESCRIPTOR.full_name
    if isinstance(message, Message) and message.DESCRIPTOR.full_name == expected:
        return message
    got = message.DESCRIPTOR.full_name if isinstance(message, Message) else type(message).__name__
    raise WrongReturnError(
        f"{describe(handler.fn)} returned {got}, but {handler.method.full_name} replies with "
        f"{expected} (return the message, a Reply, or a Forward)"
    )


def fill_reply_or_forward(
    reply: Any, forward_target: Any, result: object, handler: CommandHandler
) -> str | None:
    """Fill the protocol `Reply` or `Forward` from `result`; return which one, None for no reply.

    `reply` and `forward_target` are the (sub)messages to fill in place, so no copies are made.
    """
    if isinstance(result, Forward):
        forward_target.CopyFrom(result.to_protocol())
        return "forward"
    if result is None:
        return None
    metadata = None
    if isinstance(result, Reply):
        metadata = result.metadata
        result = result.message
    message = _check_message(result, handler)
    reply.payload.type_url = proto.TYPE_URL_PREFIX + message.DESCRIPTOR.full_name
    reply.payload.value = message.SerializeToString()
    if metadata:
        reply.metadata.CopyFrom(to_protocol(metadata))
    return "reply"


def unexpected_failure(subject: str, command_name: str, exc: BaseException) -> str:
    """The client-facing description of a command that failed by an unexpected exception."""
    return f"{subject}: command '{command_name}' failed: {type(exc).__name__}: {exc}"
