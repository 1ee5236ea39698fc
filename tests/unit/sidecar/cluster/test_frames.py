"""The internal port's framing: frames split however reads cut them; garbage, oversized
lengths, unknown kinds and other protocols are refused."""

from __future__ import annotations

import pytest
from larder_sidecar.cluster import frames
from larder_sidecar.cluster.frames import Decoder, FramingError, Kind


def test_frames_arrive_whole_however_the_bytes_are_cut() -> None:
    data = (
        frames.frame(Kind.FORWARD, 1, b"first")
        + frames.frame(Kind.PING, 0)
        + frames.frame(Kind.FORWARD, 7, b"x" * 300)
    )
    for cut in (1, 2, 5, 9, 10, 64, len(data)):
        decoder = Decoder(1024)
        got = []
        for start in range(0, len(data), cut):
            got += decoder.feed(data[start : start + cut])
        assert got == [
            (Kind.FORWARD, 1, b"first"),
            (Kind.PING, 0, b""),
            (Kind.FORWARD, 7, b"x" * 300),
        ]
        assert decoder.pending == 0


def test_a_truncated_frame_is_held_back_not_delivered() -> None:
    decoder = Decoder(1024)
    whole = frames.frame(Kind.FORWARD, 3, b"body")
    assert decoder.feed(whole[:-1]) == []
    assert decoder.pending == len(whole) - 1
    assert decoder.feed(whole[-1:]) == [(Kind.FORWARD, 3, b"body")]


def test_a_length_over_the_limit_is_refused_before_its_body_is_read() -> None:
    decoder = Decoder(100)
    assert decoder.feed(frames.frame(Kind.FORWARD, 1, b"y" * 100)) == [
        (Kind.FORWARD, 1, b"y" * 100)
    ]
    header = frames.HEADER.pack(0xFFFFFFF0, Kind.FORWARD, 2)
    with pytest.raises(FramingError, match="4294967280 bytes"):
        decoder.feed(header)
    with pytest.raises(FramingError, match="limit is 100"):
        Decoder(100).feed(frames.frame(Kind.FORWARD, 1, b"y" * 101))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (frames.HEADER.pack(5, 99, 1), "unknown kind 99"),
        (frames.HEADER.pack(2, Kind.PING, 0), "a frame of 2 bytes"),
    ],
)
def test_garbage_frames_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(FramingError, match=error):
        Decoder(1024).feed(data)


def test_the_preface_names_the_version_and_the_limit() -> None:
    assert frames.parse_preface(frames.preface(4096)) == (frames.VERSION, 4096)
    # A partial preface is accepted as long as it can still be one.
    frames.check_magic(b"LDR")
    with pytest.raises(FramingError, match="HTTP/2"):
        frames.check_magic(b"PRI * HTTP/2.0\r\n")
    with pytest.raises(FramingError, match="not Larder's peer framing"):
        frames.check_magic(b"GET / HTTP/1.1\r\n")
    with pytest.raises(FramingError, match="not Larder's peer framing"):
        frames.parse_preface(b"\x00" * frames.PREFACE.size)
