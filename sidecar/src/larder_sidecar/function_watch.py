"""Watches whether the user function answers, for the readiness probe.

While the user function is down every command fails with UNAVAILABLE, so a pod whose
function is dead must leave the Service. One supervised task calls the protocol's
health check (`Discovery.HealthCheck`, which our SDK and the published ones answer)
every `interval`; the sidecar reports unready once the function has not answered for
`grace` seconds, so a single slow answer does not pull the pod. Any answer counts,
an error status included (a function whose SDK lacks the rpc still answers
UNIMPLEMENTED). A missed deadline on a connection that is still up counts too: the
function is alive but busy (the published Python SDK serves every entity stream on a
thread of a pool as large as the CPU count, so its health check waits for a free
one), and pulling a loaded pod would only load the others more. What makes the
sidecar unready is a function that cannot be reached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf import empty_pb2

from .protocol import discovery_pb2_grpc
from .silence_watch import SilenceWatch

log = logging.getLogger("larder_sidecar.function_watch")


class UserFunctionWatch(SilenceWatch):
    def __init__(
        self,
        channel: grpc.aio.Channel,
        grace: float,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            "the user function", "LARDER_USER_FUNCTION_UNAVAILABLE_GRACE", grace,
            unready_means="; commands fail until it is back",
            interval=interval, clock=clock, log=log,
        )
        self._channel = channel
        self._stub: Any = discovery_pb2_grpc.DiscoveryStub(channel)

    async def probe(self) -> bool:
        """One health check: whether the user function answered, or is connected."""
        try:
            await self._stub.HealthCheck(empty_pb2.Empty(), timeout=max(self.interval, 0.5))
        except grpc.aio.AioRpcError as e:
            if e.code() is grpc.StatusCode.UNAVAILABLE:
                return False
            if e.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                return self._channel.get_state() is grpc.ChannelConnectivity.READY
            return True
        return True
