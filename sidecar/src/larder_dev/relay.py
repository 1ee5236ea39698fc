"""Relaying a child's output to ours, line by line, with a bound on every line.

A child's output is read in chunks and split into lines here, never with
`StreamReader.readline()`: that raises on a line over its limit, and a relay that
stops reading leaves the child blocked on its next write. A line longer than
`max_line` bytes keeps its first `max_line` bytes and ends with a marker saying how
many were dropped, so memory stays bounded whatever a child writes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TextIO

MAX_LINE_BYTES = 64 * 1024
"""Lines up to this long (the old `readline()` limit) are relayed whole."""
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Line:
    kept: bytes
    dropped: int = 0
    """How many bytes of the line past `kept` were dropped."""

    def text(self) -> str:
        text = self.kept.decode("utf-8", errors="replace").rstrip("\r")
        if self.dropped:
            text += f" [... {self.dropped:,} bytes of this line dropped by larder dev]"
        return text


class LineSplitter:
    """Bytes in, whole lines out (no I/O): `feed` what was read, `end` at EOF."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        if max_line < 1:
            raise ValueError(f"max_line must be at least 1 byte, got {max_line}")
        self._max_line = max_line
        self._kept = bytearray()
        self._dropped = 0

    def feed(self, data: bytes) -> list[Line]:
        lines: list[Line] = []
        view = memoryview(data)
        start = 0
        while True:
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            room = self._max_line - len(self._kept)
            taken = min(room, end - start)
            self._kept += view[start:start + taken]
            self._dropped += end - start - taken
            if newline < 0:
                return lines
            lines.append(self._take())
            start = newline + 1

    def end(self) -> list[Line]:
        """The last line, when the output did not end with a newline."""
        if not self._kept and not self._dropped:
            return []
        return [self._take()]

    def _take(self) -> Line:
        line = Line(bytes(self._kept), self._dropped)
        self._kept.clear()
        self._dropped = 0
        return line


async def relay(stream: asyncio.StreamReader, out: TextIO, prefix: str,
                max_line: int = MAX_LINE_BYTES, chunk: int = CHUNK_BYTES) -> None:
    """Copy `stream` to `out` until EOF, each line prefixed and bounded."""
    splitter = LineSplitter(max_line)
    while data := await stream.read(chunk):
        _write(out, prefix, splitter.feed(data))
    _write(out, prefix, splitter.end())


def _write(out: TextIO, prefix: str, lines: list[Line]) -> None:
    if lines:
        out.write("".join(f"{prefix}{line.text()}\n" for line in lines))
        out.flush()
