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

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf import empty_pb2

from .protocol import discovery_pb2_grpc

log = logging.getLogger("larder_sidecar.function_watch")

MAX_INTERVAL = 1.0


class UserFunctionWatch:
    """Owns the probing task; `status()` answers at once from the last probe."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        grace: float,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = channel
        self._stub: Any = discovery_pb2_grpc.DiscoveryStub(channel)
        self.grace = grace
        self.interval = interval if interval is not None else min(MAX_INTERVAL, grace / 4)
        self._clock = clock
        self._last_answer = clock()
        self._reported_down = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start probing; the function counts as answering now (discovery just worked)."""
        self._last_answer = self._clock()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="user function watch"
        )
        self._task.add_done_callback(_log_unexpected_exit)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def status(self) -> tuple[bool, str]:
        silent = self._clock() - self._last_answer
        if silent <= self.grace:
            return True, "ready"
        return False, (
            f"the user function has not answered for {silent:.0f}s; commands fail until "
            f"it is back (LARDER_USER_FUNCTION_UNAVAILABLE_GRACE={self.grace:g}s)"
        )

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

    async def _run(self) -> None:
        while True:
            if await self.probe():
                self._last_answer = self._clock()
                if self._reported_down:
                    self._reported_down = False
                    log.info("the user function answers again: ready")
            elif not self._reported_down and not self.status()[0]:
                self._reported_down = True
                log.warning("not ready: %s", self.status()[1])
            await asyncio.sleep(self.interval)


def _log_unexpected_exit(task: asyncio.Task[None]) -> None:
    # Without the task, the last answer ages and readiness drops after the grace:
    # the safe direction for a probe that stopped probing.
    with contextlib.suppress(asyncio.CancelledError):
        exc = task.exception()
        if exc is not None:
            log.error("the user function watch stopped unexpectedly", exc_info=exc)
