"""Readiness from something that must keep answering: the journal, the user function.

Asking on every `/readyz` request would make the probe as slow as the thing asked and
flip it on one lost answer. Instead one supervised task probes every `interval`, and
the sidecar reports unready only once there has been no answer for `grace` seconds.
The subclasses say how to probe and why their grace is what it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

MAX_INTERVAL = 1.0


class SilenceWatch(ABC):
    """Owns the probing task; `status()` answers at once from the last probe."""

    def __init__(
        self,
        what: str,
        setting: str,
        grace: float,
        *,
        unready_means: str = "",
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger,
    ) -> None:
        """`what` names it in messages ("the journal"), `setting` is the variable that
        sets `grace`, `unready_means` what a user sees meanwhile (added to the reason)."""
        self._what = what
        self._setting = setting
        self._unready_means = unready_means
        self.grace = grace
        self.interval = interval if interval is not None else min(MAX_INTERVAL, grace / 4)
        self._clock = clock
        self._log = log
        self._last_answer = clock()
        self._reported_down = False
        self._task: asyncio.Task[None] | None = None

    @abstractmethod
    async def probe(self) -> bool:
        """One probe: whether it answered."""

    def start(self) -> None:
        """Start probing; it counts as answering now (start-up just reached it)."""
        self._last_answer = self._clock()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"{self._what} watch"
        )
        self._task.add_done_callback(self._log_unexpected_exit)

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
            f"{self._what} has not answered for {silent:.0f}s{self._unready_means} "
            f"({self._setting}={self.grace:g}s)"
        )

    async def _run(self) -> None:
        while True:
            if await self.probe():
                self._last_answer = self._clock()
                if self._reported_down:
                    self._reported_down = False
                    self._log.info("%s answers again: ready", self._what)
            elif not self._reported_down and not self.status()[0]:
                self._reported_down = True
                self._log.warning("not ready: %s", self.status()[1])
            await asyncio.sleep(self.interval)

    def _log_unexpected_exit(self, task: asyncio.Task[None]) -> None:
        # Without the task, the last answer ages and readiness drops after the grace:
        # the safe direction for a probe that stopped probing.
        with contextlib.suppress(asyncio.CancelledError):
            exc = task.exception()
            if exc is not None:
                self._log.error("%s watch stopped unexpectedly", self._what, exc_info=exc)
