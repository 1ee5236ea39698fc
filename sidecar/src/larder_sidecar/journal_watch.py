"""Watches whether the journal answers, for the readiness probe.

The sidecar reports unready once the journal has not answered for `grace` seconds:
long enough to ride out a node restart or a pause without pulling every pod out of
the Service at once, short enough that a real outage moves traffic elsewhere.
Commands do not wait for this: they fail fast with UNAVAILABLE on their own while
the journal is away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .journal.base import Journal, JournalError
from .silence_watch import SilenceWatch

log = logging.getLogger("larder_sidecar.journal_watch")


class JournalWatch(SilenceWatch):
    def __init__(
        self,
        journal: Journal,
        grace: float,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            "the journal", "LARDER_JOURNAL_UNAVAILABLE_GRACE", grace,
            interval=interval, clock=clock, log=log,
        )
        self._journal = journal

    async def probe(self) -> bool:
        try:
            return await self._journal.ready()
        except JournalError:
            return False
