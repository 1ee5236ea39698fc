"""Awaiting the Cassandra driver's ResponseFutures without blocking the event loop.

The driver calls a request's callbacks on whichever thread read its answer: the loop's
own thread with `cassandra_loop.LoopConnection`, a reactor thread with the driver's
other connection classes. On the loop's thread the result is handed over at once;
from any other thread with `call_soon_threadsafe`, the only loop method that may be
called from another thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any, Protocol


class ResponseFutureLike(Protocol):
    """The part of `cassandra.cluster.ResponseFuture` the bridge uses."""

    @property
    def has_more_pages(self) -> bool: ...

    def add_callbacks(self, callback: Any, errback: Any) -> None: ...

    def start_fetching_next_page(self) -> None: ...


def _hand_over(loop: asyncio.AbstractEventLoop, thread: int, fn: Any, *args: Any) -> None:
    if threading.get_ident() == thread:
        fn(*args)
        return
    # RuntimeError: the loop closed while the request was in flight; nobody awaits it.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


async def result(response: ResponseFutureLike) -> Any:
    """The first (or only) page of rows of `response`, or its exception."""
    loop = asyncio.get_running_loop()
    thread = threading.get_ident()
    future: asyncio.Future[Any] = loop.create_future()
    response.add_callbacks(
        lambda rows: _hand_over(loop, thread, _resolve, future, rows),
        lambda error: _hand_over(loop, thread, _reject, future, error),
    )
    return await future


class _PageFeed:
    """Receives pages on the driver's thread and queues them for the loop.

    The next page is requested as soon as one arrives, so fetching overlaps with the
    consumer decoding the previous one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, response: ResponseFutureLike) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self._response = response
        self.queue: asyncio.Queue[tuple[Any, BaseException | None, bool]] = asyncio.Queue()
        # Set from the loop, read on the driver thread: at worst one extra page is
        # fetched after the consumer has gone, and then dropped.
        self.stopped = False

    def on_page(self, rows: Any) -> None:
        more = self._response.has_more_pages and not self.stopped
        # Queue this page before asking for the next, so the next page's callback
        # (which may run on another driver thread) cannot overtake it.
        _hand_over(self._loop, self._thread, self.queue.put_nowait, (rows, None, more))
        if more:
            self._response.start_fetching_next_page()

    def on_error(self, error: BaseException) -> None:
        _hand_over(self._loop, self._thread, self.queue.put_nowait, (None, error, False))


async def pages(response: ResponseFutureLike) -> AsyncIterator[Any]:
    """Every page of rows of a paged query, in order."""
    feed = _PageFeed(asyncio.get_running_loop(), response)
    response.add_callbacks(feed.on_page, feed.on_error)
    try:
        while True:
            rows, error, more = await feed.queue.get()
            if error is not None:
                raise error
            yield rows
            if not more:
                return
    finally:
        feed.stopped = True
