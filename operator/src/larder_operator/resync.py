"""Periodic work owned by the operator, not by any one resource.

kopf's timers would do, but kopf puts a finalizer on every resource that has a timer, and a
finalizer makes every deletion wait for a running operator. These tasks are started by the
operator's startup handler and cancelled by its cleanup handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Periodic:
    """Runs ``tick`` every ``interval`` seconds in one background task until ``stop``.

    A failing tick is logged and the next one runs on schedule; the task ending any other
    way than by ``stop`` is logged as the bug it is.
    """

    def __init__(self, name: str, interval: float, tick: Callable[[], Awaitable[None]]) -> None:
        self._name = name
        self._interval = interval
        self._tick = tick
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"{self._name} is already running")
        self._task = asyncio.create_task(self._run(), name=self._name)
        self._task.add_done_callback(self._ended)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.remove_done_callback(self._ended)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._tick()
            except Exception:
                logger.exception(
                    "%s failed; it runs again in %g s", self._name, self._interval
                )

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            logger.error("%s was cancelled by someone other than its owner", self._name)
        elif task.exception() is not None:
            logger.error("%s ended unexpectedly", self._name, exc_info=task.exception())


async def for_each(
    items: Iterable[T], action: Callable[[T], Awaitable[None]], limit: int
) -> None:
    """``action`` on every item, at most ``limit`` at a time; one failing stops no other."""
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> None:
        async with gate:
            try:
                await action(item)
            except Exception:
                logger.exception("periodic work on %r failed; it is retried next time", item)

    await asyncio.gather(*(one(item) for item in items))
