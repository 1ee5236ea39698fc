"""One end of an internal-port connection (`frames.py`): the preface, frames in and out,
heartbeats. The client (`peers.py`) and the server (`internal.py`) add what their calls
mean.

An `asyncio.Protocol`, not streams: a received chunk is split into frames and handled in
the same callback, with no reader task per connection. Writes are coalesced: the frames
sent during one pass of the event loop leave in one `write` at the end of it, so the
forwards many commands cause at once share one system call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from . import frames
from .frames import Decoder, FramingError, Kind

log = logging.getLogger("larder_sidecar.cluster")


class FramedConnection(asyncio.Protocol):
    """Subclasses implement `on_preface`, `on_frame`, `on_tick` and `on_closed`."""

    def __init__(self, peer: str, max_frame: int, tick: float) -> None:
        self.peer = peer
        """Who is at the other end, for log lines and errors."""
        self._max_frame = max_frame
        self._tick_every = tick
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._out: list[bytes] = []
        self._flushing: asyncio.Handle | None = None
        self._head = bytearray()
        self._decoder: Decoder | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self.send_limit = 0
        """The largest frame body the peer accepts (its preface), 0 before it is known."""
        self.last_heard = self._loop.time()
        self.ended: asyncio.Future[None] = self._loop.create_future()
        """Done when the connection is gone."""
        self.closed = False
        self.close_reason = ""

    # --- subclass hooks ---------------------------------------------------------------

    def on_preface(self, version: int, max_frame: int) -> None:
        """The peer's preface arrived; raise FramingError to refuse it."""

    def on_frame(self, kind: int, call: int, body: bytes) -> None:
        """One frame; raise FramingError if it makes no sense here."""

    def on_tick(self, now: float) -> None:
        """Every `tick` seconds while connected."""

    def on_closed(self, reason: str) -> None:
        """The connection is gone (closed by either side, or failed)."""

    def on_flushed(self) -> None:
        """The frames sent so far were handed to the socket."""

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._ticker = self._loop.call_later(self._tick_every, self._tick)

    def data_received(self, data: bytes) -> None:
        self.last_heard = self._loop.time()
        try:
            if self._decoder is None:
                data = self._read_preface(data)
                if self._decoder is None:
                    return
            for kind, call, body in self._decoder.feed(data):
                if self.closed:
                    return
                self.on_frame(kind, call, body)
        except FramingError as e:
            self.fail(str(e))

    def _read_preface(self, data: bytes) -> bytes:
        self._head += data
        size = frames.PREFACE.size
        if len(self._head) < size:
            # Garbage is refused as soon as it cannot be the magic.
            frames.check_magic(bytes(self._head))
            return b""
        head, rest = bytes(self._head[:size]), bytes(self._head[size:])
        self._head.clear()
        version, max_frame = frames.parse_preface(head)
        self.on_preface(version, max_frame)
        self.send_limit = min(max_frame, self._max_frame)
        self._decoder = Decoder(self._max_frame)
        return rest

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        self._out.clear()
        self.closed = True
        if not self.close_reason:
            self.close_reason = f"closed by the peer ({exc})" if exc else "closed by the peer"
        self.on_closed(self.close_reason)
        if not self.ended.done():
            self.ended.set_result(None)

    # --- sending ----------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes; they leave with the others queued in this loop pass."""
        if self.closed:
            return
        self._out.append(data)
        if self._flushing is None:
            self._flushing = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = None
        if self._transport is None or self.closed or not self._out:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        self._transport.write(data)
        self.on_flushed()

    def send_now(self, data: bytes) -> None:
        """Write at once (the preface), before anything queued."""
        if self._transport is not None and not self.closed:
            self._transport.write(data)

    # --- closing ----------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Close because the peer broke the protocol (or is silent): one log line naming
        it; what it sent and has not been answered is dropped."""
        if self.closed:
            return
        log.warning("closing the internal connection with %s: %s", self.peer, reason)
        self.abort(reason)

    def abort(self, reason: str) -> None:
        """Close now; frames not yet written are dropped."""
        if self.closed or self._transport is None:
            return
        self.close_reason = reason
        self._out.clear()
        self.closed = True  # nothing more is sent; connection_lost follows
        self._transport.abort()

    def close(self, reason: str) -> None:
        """Close after writing what is queued."""
        if self.closed or self._transport is None:
            return
        self.close_reason = reason
        self._flush()
        self.closed = True  # nothing more is sent; connection_lost follows
        self._transport.close()

    def _tick(self) -> None:
        if self.closed:
            return
        self.on_tick(self._loop.time())
        if not self.closed:
            self._ticker = self._loop.call_later(self._tick_every, self._tick)


def ping() -> bytes:
    return frames.frame(Kind.PING, 0)


def pong() -> bytes:
    return frames.frame(Kind.PONG, 0)
