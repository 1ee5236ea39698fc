"""Watches whether the journal answers, for the readiness probe.

Asking the journal on every `/readyz` request would make the probe as slow as the
journal's request timeout and flip it on one lost request. Instead one supervised
task asks `journal.ready()` every `interval`, and the sidecar reports unready only
once the journal has not answered for `grace` seconds: long enough to ride out a
node restart or a pause without pulling every pod out of the Service at once, short
enough that a real outage moves traffic elsewhere. Commands do not wait for this:
they fail fast with UNAVAILABLE on their own while the journal is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from .journal.base import Journal, JournalError

log = logging.getLogger("larder_sidecar.journal_watch")

MAX_INTERVAL = 1.0


class JournalWatch:
    """Owns the probing task; `status()` answers at once from the last probe."""

    def __init__(
        self,
        journal: Journal,
        grace: float,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._journal = journal
        self.grace = grace
        self.interval = interval if interval is not None else min(MAX_INTERVAL, grace / 4)
        self._clock = clock
        self._last_answer = clock()
        self._reported_down = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start probing; the journal counts as answering now (it just started)."""
        self._last_answer = self._clock()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="journal watch")
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
            f"the journal has not answered for {silent:.0f}s "
            f"(LARDER_JOURNAL_UNAVAILABLE_GRACE={self.grace:g}s)"
        )

    async def _run(self) -> None:
        while True:
            try:
                answered = await self._journal.ready()
            except JournalError:
                answered = False
            if answered:
                self._last_answer = self._clock()
                if self._reported_down:
                    self._reported_down = False
                    log.info("the journal answers again: ready")
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
            log.error("the journal watch stopped unexpectedly", exc_info=exc)
