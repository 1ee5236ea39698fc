"""The background tasks of one cluster component: owned, logged if they fail, cancelled
together when the component closes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("larder_sidecar.cluster")


class OwnedTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        """Run `coro`; an exception it ends with is logged as a bug, naming `what`."""
        task = asyncio.get_running_loop().create_task(coro, name=f"cluster: {what}")
        self._tasks.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("cluster task %r ended unexpectedly", what, exc_info=t.exception())

        task.add_done_callback(finished)
        return task

    async def close(self) -> None:
        """Cancel every task still running and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
