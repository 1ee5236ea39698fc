"""The relay of a child's output: bounded lines, and it keeps going after a long one."""

from __future__ import annotations

import asyncio
import io

import pytest
from larder_dev.relay import MAX_LINE_BYTES, LineSplitter, relay


def texts(splitter: LineSplitter, *chunks: bytes) -> list[str]:
    return [line.text() for chunk in chunks for line in splitter.feed(chunk)]


def test_lines_are_split_across_chunks() -> None:
    splitter = LineSplitter()
    assert texts(splitter, b"one\ntw", b"o\r\n", b"", b"three\n\n") == ["one", "two", "three", ""]
    assert [line.text() for line in splitter.end()] == []


def test_the_last_line_without_a_newline_comes_at_the_end() -> None:
    splitter = LineSplitter()
    assert texts(splitter, b"one\nlast") == ["one"]
    assert [line.text() for line in splitter.end()] == ["last"]


def test_a_line_over_the_bound_keeps_its_start_and_says_how_much_was_dropped() -> None:
    splitter = LineSplitter(max_line=10)
    assert texts(splitter, b"0123456789", b"\n", b"0123456789abc", b"def\nok\n") == [
        "0123456789",
        "0123456789 [... 6 bytes of this line dropped by larder dev]",
        "ok",
    ]


def test_a_cut_through_a_character_is_replaced_not_an_error() -> None:
    splitter = LineSplitter(max_line=4)
    assert texts(splitter, "abcé\n".encode()) == [
        "abc\ufffd [... 1 bytes of this line dropped by larder dev]"]


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        LineSplitter(max_line=0)


async def relayed(*chunks: bytes) -> list[str]:
    stream = asyncio.StreamReader()
    out = io.StringIO()
    task = asyncio.create_task(relay(stream, out, "[sidecar] "))
    for chunk in chunks:
        stream.feed_data(chunk)
        await asyncio.sleep(0)  # let the relay read as a pipe would be read
    stream.feed_eof()
    await asyncio.wait_for(task, timeout=30)
    return out.getvalue().splitlines()


async def test_a_line_over_64_kib_is_relayed_and_so_is_everything_after_it() -> None:
    # StreamReader.readline() raises on this line; the relay used to die on it.
    lines = await relayed(b"before\n", b"x" * 70_000 + b"\nafter\n", b"last")
    assert lines[0] == "[sidecar] before"
    assert lines[1] == ("[sidecar] " + "x" * MAX_LINE_BYTES
                        + f" [... {70_000 - MAX_LINE_BYTES:,} bytes of this line dropped "
                        "by larder dev]")
    assert lines[2:] == ["[sidecar] after", "[sidecar] last"]


async def test_a_line_of_several_mib_in_many_reads_is_cut_to_the_bound() -> None:
    size = 5 * 1024 * 1024
    chunks = [b"y" * 65_536 for _ in range(size // 65_536)]
    lines = await relayed(b"start\n", *chunks, b"\n", *(f"line {i}\n".encode()
                                                        for i in range(1000)))
    assert lines[0] == "[sidecar] start"
    assert lines[1] == ("[sidecar] " + "y" * MAX_LINE_BYTES
                        + f" [... {size - MAX_LINE_BYTES:,} bytes of this line dropped "
                        "by larder dev]")
    assert lines[2:] == [f"[sidecar] line {i}" for i in range(1000)]
