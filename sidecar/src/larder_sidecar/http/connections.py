"""The live connections of the public port, so shutdown can drain and then end them."""

from __future__ import annotations

import asyncio
from typing import Protocol

from prometheus_client import Gauge


class Connection(Protocol):
    def begin_close(self) -> None:
        """Stop taking new work; close once what is in flight is done."""

    def abort(self) -> None:
        """Close now, dropping whatever is in flight."""


class ConnectionSet:
    def __init__(self, gauge: Gauge | None = None) -> None:
        self._gauge = gauge
        self._live: set[Connection] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._live)

    def add(self, connection: Connection) -> None:
        self._live.add(connection)
        self._empty.clear()
        if self._gauge is not None:
            self._gauge.set(len(self._live))

    def discard(self, connection: Connection) -> None:
        self._live.discard(connection)
        if self._gauge is not None:
            self._gauge.set(len(self._live))
        if not self._live:
            self._empty.set()

    def begin_close_all(self) -> None:
        for connection in list(self._live):
            connection.begin_close()

    def abort_all(self) -> None:
        for connection in list(self._live):
            connection.abort()

    async def wait_empty(self) -> None:
        await self._empty.wait()
