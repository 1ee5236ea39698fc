"""The pure parts of the public port's limits: content types, %-decoding, log clipping,
the user function's message limit."""

from __future__ import annotations

import grpc
import pytest
from larder_sidecar.function_limit import FunctionLimit
from larder_sidecar.http.dispatch import is_json_content_type
from larder_sidecar.http.path_template import PercentDecodingError, unquote_strict
from larder_sidecar.invoke import InvokeError, MethodModel
from larder_sidecar.logs import clip


@pytest.mark.parametrize(
    ("value", "json"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        (" APPLICATION/JSON ;charset=UTF-8", True),
        ("application/problem+json", True),
        ("application/+json", False),
        ("application/jsonx", False),
        ("text/json", False),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("", False),
        (None, False),
    ],
)
def test_json_content_types(value: str | None, json: bool) -> None:
    assert is_json_content_type(value) is json


def test_percent_decoding_is_strict() -> None:
    assert unquote_strict("a%20b%2Fc", "the path") == "a b/c"
    assert unquote_strict("caf%C3%A9", "the path") == "café"
    assert unquote_strict("plain", "the path") == "plain"
    with pytest.raises(PercentDecodingError, match=r"'%zz%'.*two hex digits \(at 0\)"):
        unquote_strict("%zz%", "the path segment")
    with pytest.raises(PercentDecodingError, match="at 2"):
        unquote_strict("ab%4", "the path segment")
    with pytest.raises(PercentDecodingError, match="UTF-8"):
        unquote_strict("%ff", "the path segment")


def test_clip_says_how_much_was_cut() -> None:
    assert clip("short") == "short"
    assert clip("x" * 200) == "x" * 200
    clipped = clip("y" * 1_000_000)
    assert clipped == "y" * 200 + "...(999800 more characters)"
    assert clip("abcdef", 2) == "ab...(4 more characters)"


def test_the_function_limit_counts_the_envelope(methods: list[MethodModel]) -> None:
    method = methods[0]
    limit = FunctionLimit(max_message_bytes=64 * 1024, max_entity_id_bytes=1024)
    envelope = limit.command_bytes(method, 0, ())
    assert envelope > 1024 + len(method.input.full_name)
    limit.check(method, 64 * 1024 - envelope, ())
    with pytest.raises(InvokeError) as too_big:
        limit.check(method, 64 * 1024 - envelope + 1, ())
    assert too_big.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 65536 bytes" in too_big.value.message
    # Forwarded metadata travels in the same message.
    with pytest.raises(InvokeError):
        limit.check(method, 64 * 1024 - envelope, [("x-big", "v")])
