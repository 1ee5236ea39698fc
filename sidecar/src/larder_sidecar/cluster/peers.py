"""The client side of the internal port: one gRPC channel per peer address.

A call to a peer that does not answer fails fast: a channel that is not connected gets
`CONNECT_WAIT` to connect (a peer that just started is reached, one that is down fails
within that time with `UNAVAILABLE`), a peer that went silent mid-call is noticed by
keepalive pings within seconds, and every call has a deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import grpc
import grpc.aio

from . import wire

log = logging.getLogger("larder_sidecar.cluster")

FORWARD_TIMEOUT = 30.0
"""Seconds a forwarded command may take at its owner (a hand-off wait included)."""
CONNECT_WAIT = 1.0
"""Seconds a call waits for a peer's connection before it fails with UNAVAILABLE."""
RELEASE_CALL_TIMEOUT = 5.0
"""Seconds one Release call may take; the new owner asks again until its own bound."""


class PeerUnavailable(Exception):
    """The peer could not be reached or failed the call itself (not the command).

    `sent` is False when the request certainly never left this sidecar (no connection,
    or the channel was closed before the call started): then sending it elsewhere cannot
    run the command twice."""

    def __init__(self, code: grpc.StatusCode, details: str, *, sent: bool = True) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.sent = sent


class PeerTransport(Protocol):
    """How the router talks to peers (a fake in unit tests)."""

    async def forward(self, address: str, request: Any) -> Any:
        """Send a `ForwardRequest`; return the `ForwardReply` or raise PeerUnavailable."""
        ...

    async def release(self, address: str, request: Any) -> Any:
        """Send a `ReleaseRequest`; return the `ReleaseReply` or raise PeerUnavailable."""
        ...

    async def forget(self, keep: Sequence[str]) -> None:
        """Drop what is kept for addresses not in `keep` (they left the membership)."""
        ...


class PeerClients:
    """Implements `PeerTransport` over gRPC; channels are opened on first use."""

    def __init__(self, max_message_bytes: int, forward_timeout: float = FORWARD_TIMEOUT) -> None:
        self._options = [
            *wire.CHANNEL_OPTIONS,
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._forward_timeout = forward_timeout
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._calls: dict[str, tuple[Any, Any]] = {}

    def _methods(self, address: str) -> tuple[Any, Any]:
        methods = self._calls.get(address)
        if methods is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(
                address, options=self._options
            )
            methods = self._calls[address] = (
                channel.unary_unary(
                    wire.FORWARD,
                    request_serializer=wire.ForwardRequest.SerializeToString,
                    response_deserializer=wire.ForwardReply.FromString,
                ),
                channel.unary_unary(
                    wire.RELEASE,
                    request_serializer=wire.ReleaseRequest.SerializeToString,
                    response_deserializer=wire.ReleaseReply.FromString,
                ),
            )
        return methods

    async def forward(self, address: str, request: Any) -> Any:
        method = self._methods(address)[0]
        return await self._call(address, method, request, self._forward_timeout)

    async def release(self, address: str, request: Any) -> Any:
        method = self._methods(address)[1]
        return await self._call(address, method, request, RELEASE_CALL_TIMEOUT)

    async def _call(self, address: str, method: Any, request: Any, seconds: float) -> Any:
        channel = self._channels[address]
        try:
            if channel.get_state(try_to_connect=True) is not grpc.ChannelConnectivity.READY:
                # Not wait_for_ready on the call itself: that would wait out the whole
                # deadline for a peer that is down.
                await asyncio.wait_for(channel.channel_ready(), CONNECT_WAIT)
            call = method(request, timeout=seconds)
        except TimeoutError:
            raise PeerUnavailable(
                grpc.StatusCode.UNAVAILABLE,
                f"no connection to {address} within {CONNECT_WAIT:g}s",
                sent=False,
            ) from None
        except grpc.aio.UsageError as e:
            # `forget` closed the channel before the call started: the member left.
            raise PeerUnavailable(
                grpc.StatusCode.UNAVAILABLE,
                f"the connection to {address} was closed: {e}",
                sent=False,
            ) from e
        try:
            return await call
        except grpc.aio.AioRpcError as e:
            raise PeerUnavailable(e.code(), e.details() or "") from e

    async def forget(self, keep: Sequence[str]) -> None:
        """Close the channels of addresses no longer in the membership, once the calls
        still on them have finished (a forward already sent must get its answer)."""
        for address in [a for a in self._channels if a not in keep]:
            self._calls.pop(address, None)
            channel = self._channels.pop(address)
            task = asyncio.get_running_loop().create_task(channel.close(self._forward_timeout))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """At shutdown: nothing is forwarded any more; give calls a second to finish."""
        channels = list(self._channels.values())
        self._channels.clear()
        self._calls.clear()
        for task in self._closing:
            task.cancel()
        await asyncio.gather(
            *(c.close(1.0) for c in channels), *self._closing, return_exceptions=True
        )
