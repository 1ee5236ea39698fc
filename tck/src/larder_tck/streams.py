"""Driving one protocol stream as the sidecar would, with a deadline on every read."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message
from larder_tck.expect import CaseFailed, expect_equal

REPLY_TIMEOUT = 10.0
_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs


class Stream:
    """A bidirectional (or server-streaming) call: send, receive, expect, expect the end."""

    def __init__(self, call: Any, what: str) -> None:
        self._call = call
        self.what = what

    async def send(self, message: Message) -> None:
        try:
            await self._call.write(message)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as e:
            raise CaseFailed(f"{self.what}: the frontend no longer accepts messages: {e}") from e

    async def done_writing(self) -> None:
        await self._call.done_writing()

    async def receive(self, waiting_for: str) -> Message | None:
        """The next message, or None when the frontend ended the stream cleanly."""
        out = await self.receive_or_error(waiting_for)
        if isinstance(out, grpc.aio.AioRpcError):
            raise CaseFailed(
                f"{self.what}: the frontend failed the stream with {out.code().name} "
                f"({out.details()}) while the TCK waited for {waiting_for}"
            ) from out
        return out

    async def receive_or_error(self, waiting_for: str) -> Message | grpc.aio.AioRpcError | None:
        """The next message, None at a clean end, or the error status ending the stream."""
        try:
            out = await asyncio.wait_for(self._call.read(), REPLY_TIMEOUT)
        except TimeoutError:
            raise CaseFailed(
                f"{self.what}: no message within {REPLY_TIMEOUT:.0f}s while waiting for "
                f"{waiting_for}; the frontend did not answer"
            ) from None
        except grpc.aio.AioRpcError as e:
            return e
        if out is _EOF:
            return None
        message: Message = out
        return message

    async def expect(self, expected: Message, what: str, hint: str = "") -> None:
        actual = await self.receive(what)
        if actual is None:
            raise CaseFailed(
                f"{self.what}: the frontend ended the stream while the TCK waited for {what}"
            )
        expect_equal(f"{self.what}, {what}", expected, actual, hint)

    async def expect_end(self, what: str) -> None:
        actual = await self.receive(f"the end of the stream ({what})")
        if actual is not None:
            raise CaseFailed(
                f"{self.what}: expected the stream to end ({what}), but the frontend sent:\n"
                f"{actual}"
            )

    def cancel(self) -> None:
        self._call.cancel()
