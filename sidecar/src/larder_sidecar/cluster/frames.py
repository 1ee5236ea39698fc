"""The internal port's framing: how the messages of `peer.proto` travel on one TCP
connection between two sidecars, many calls at a time.

A connection opens with a preface from each side (the client's first, the server's in
answer): the 7 bytes `LDRPEER`, the framing version (one byte) and the largest frame
this side accepts (uint32, big-endian). Both sides must speak the same version; the
smaller of the two limits bounds what either sends, so an oversized message is refused
by its sender with a clear error instead of breaking the connection.

Then frames, each a 9-byte header and a body:

    length  uint32  bytes after this field (5 + the body)
    kind    uint8   what the body is (the `Kind` values)
    call    uint32  the call it belongs to (0: the connection itself)
    body            a `peer.proto` message, or nothing

The receiver checks every length before reading the body; a length over its limit, an
unknown kind or a body that does not parse is a `FramingError`, and the connection is
closed (nothing of what it carried runs).
"""

from __future__ import annotations

import enum
import struct

VERSION = 1
"""The framing version this sidecar speaks. Bump it for any change of the preface, the
header or the meaning of a kind; both ends must be equal (see docs/architecture.md,
"Internal port", for what a rolling upgrade across versions does)."""
MAGIC = b"LDRPEER"
PREFACE = struct.Struct(">7sBI")
HEADER = struct.Struct(">IBI")
HEADER_AFTER_LENGTH = HEADER.size - 4
"""Bytes of the header that its length field counts (kind and call id)."""
OVERHEAD = 1024
"""What a frame may carry beyond the configured message limit (the request's own
fields around the user's payload)."""


class Kind(enum.IntEnum):
    VIEW = 1
    """client → server, call 0: the sender's `MapView`."""
    FORWARD = 2
    """client → server: a `ForwardRequest`."""
    RELEASE = 3
    """client → server: a `ReleaseRequest`."""
    FORWARD_REPLY = 4
    """server → client: a `ForwardReply`."""
    RELEASE_REPLY = 5
    """server → client: a `ReleaseReply`."""
    FAILED = 6
    """server → client: a `Status`: the call was refused or failed in transport; it did
    not run."""
    CANCEL = 7
    """client → server, no body: the caller gave up on this call."""
    PING = 8
    """either way, call 0, no body: answered with PONG (a silent peer is noticed)."""
    PONG = 9
    GOAWAY = 10
    """server → client, call 0: a `Status`: send no new calls on this connection (the
    server stops, or refuses the client); calls already sent are still answered unless
    the connection closes."""


_KINDS = frozenset(int(k) for k in Kind)


class FramingError(Exception):
    """The bytes received are not this framing: the connection must be closed."""


def preface(max_frame: int) -> bytes:
    return PREFACE.pack(MAGIC, VERSION, max_frame)


def check_magic(data: bytes) -> None:
    """Raise FramingError unless `data` (a preface's first bytes, however few) can still
    be the beginning of one."""
    head = data[: len(MAGIC)]
    if MAGIC.startswith(head):
        return
    if head.startswith(b"PRI"):
        raise FramingError(
            "the peer speaks HTTP/2 (gRPC), not Larder's peer framing: a sidecar of an "
            "older release? All the function's pods must run the same release"
        )
    raise FramingError(f"not Larder's peer framing (the connection began {data[:16]!r})")


def parse_preface(data: bytes) -> tuple[int, int]:
    """(version, the peer's largest frame body) from the first `PREFACE.size` bytes."""
    check_magic(data)
    _, version, max_frame = PREFACE.unpack(data)
    return version, max_frame


def frame(kind: Kind, call: int, body: bytes = b"") -> bytes:
    return HEADER.pack(len(body) + HEADER_AFTER_LENGTH, kind, call) + body


class Decoder:
    """Splits the bytes of one connection into frames, however the reads cut them."""

    __slots__ = ("_buffer", "_limit")

    def __init__(self, max_frame: int) -> None:
        self._buffer = bytearray()
        self._limit = max_frame

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """The complete frames now available, as (kind, call, body); a partial frame
        stays buffered until the rest arrives."""
        buffer = self._buffer
        # Usually a read holds whole frames and nothing is held back: split `data` itself
        # (one copy per body) instead of appending it to the buffer first.
        source: bytes | bytearray = data
        if buffer:
            buffer += data
            source = buffer
        frames: list[tuple[int, int, bytes]] = []
        start = 0
        end = len(source)
        unpack = HEADER.unpack_from
        while end - start >= HEADER.size:
            length, kind, call = unpack(source, start)
            if length < HEADER_AFTER_LENGTH or length - HEADER_AFTER_LENGTH > self._limit:
                raise FramingError(
                    f"a frame of {length} bytes (the limit is {self._limit} bytes of body)"
                )
            if kind not in _KINDS:
                raise FramingError(f"a frame of unknown kind {kind}")
            stop = start + 4 + length
            if stop > end:
                break
            frames.append((kind, call, bytes(source[start + HEADER.size : stop])))
            start = stop
        if source is buffer:
            if start:
                del buffer[:start]
        elif start < end:
            buffer += source[start:]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)
