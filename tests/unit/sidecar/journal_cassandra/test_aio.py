"""The bridge from the driver's thread-completed ResponseFutures to asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from larder_sidecar.journal import cassandra_aio as aio


class FakeResponse:
    """Answers like the driver: on its own thread, page after page on request."""

    def __init__(self, pages: list[list[int]], fail_on_page: int | None = None) -> None:
        self._pages = pages
        self._fail_on_page = fail_on_page
        self._next = 0
        self._callbacks: list[tuple[Callable[[Any], None], Callable[[BaseException], None]]] = []
        self.fetches = 0
        self.threads: set[int] = set()

    @property
    def has_more_pages(self) -> bool:
        return self._next < len(self._pages)

    def add_callbacks(self, callback: Any, errback: Any) -> None:
        self._callbacks.append((callback, errback))
        self._deliver()

    def start_fetching_next_page(self) -> None:
        self.fetches += 1
        self._deliver()

    def _deliver(self) -> None:
        index = self._next
        self._next += 1

        def run() -> None:
            self.threads.add(threading.get_ident())
            for ok, error in self._callbacks:
                if index == self._fail_on_page:
                    error(RuntimeError(f"page {index} failed"))
                else:
                    ok(self._pages[index])

        threading.Thread(target=run).start()


async def test_result_arrives_from_the_driver_thread() -> None:
    response = FakeResponse([[1, 2, 3]])
    assert await aio.result(response) == [1, 2, 3]
    assert threading.get_ident() not in response.threads


async def test_result_raises_the_driver_error() -> None:
    with pytest.raises(RuntimeError, match="page 0 failed"):
        await aio.result(FakeResponse([[1]], fail_on_page=0))


async def test_pages_are_yielded_in_order_and_prefetched() -> None:
    response = FakeResponse([[1, 2], [3], [4, 5]])
    seen = [rows async for rows in aio.pages(response)]
    assert seen == [[1, 2], [3], [4, 5]]
    assert response.fetches == 2


async def test_an_error_on_a_later_page_is_raised() -> None:
    response = FakeResponse([[1], [2], [3]], fail_on_page=1)
    seen: list[list[int]] = []
    with pytest.raises(RuntimeError, match="page 1 failed"):
        async for rows in aio.pages(response):
            # A comprehension would lose the pages seen before the error.
            seen.append(rows)  # noqa: PERF401
    assert seen == [[1]]


async def test_the_loop_keeps_running_while_a_request_is_pending() -> None:
    release = threading.Event()

    class SlowResponse(FakeResponse):
        def _deliver(self) -> None:
            def run() -> None:
                release.wait(5)
                for ok, _ in self._callbacks:
                    ok(["late"])

            threading.Thread(target=run).start()

    pending = asyncio.ensure_future(aio.result(SlowResponse([])))
    # Other work on the loop completes while the request is outstanding.
    await asyncio.sleep(0)
    assert not pending.done()
    release.set()
    assert await pending == ["late"]


async def test_a_cancelled_waiter_ignores_the_late_answer() -> None:
    release = threading.Event()
    delivered = threading.Event()

    class SlowResponse(FakeResponse):
        def _deliver(self) -> None:
            def run() -> None:
                release.wait(5)
                for ok, _ in self._callbacks:
                    ok(["late"])
                delivered.set()

            threading.Thread(target=run).start()

    pending = asyncio.ensure_future(aio.result(SlowResponse([])))
    await asyncio.sleep(0)
    pending.cancel()
    release.set()
    await asyncio.to_thread(delivered.wait, 5)
    with pytest.raises(asyncio.CancelledError):
        await pending


class LoopThreadResponse(FakeResponse):
    """Answers on the caller's own thread, as the driver does with LoopConnection."""

    def _deliver(self) -> None:
        index = self._next
        self._next += 1
        self.threads.add(threading.get_ident())
        for ok, _ in self._callbacks:
            ok(self._pages[index])


async def test_an_answer_on_the_loop_thread_is_handed_over_at_once() -> None:
    response = LoopThreadResponse([[7]])
    assert await aio.result(response) == [7]
    assert response.threads == {threading.get_ident()}


async def test_pages_answered_on_the_loop_thread_keep_their_order() -> None:
    response = LoopThreadResponse([[1], [2, 3], [4]])
    assert [rows async for rows in aio.pages(response)] == [[1], [2, 3], [4]]
    assert response.fetches == 2
