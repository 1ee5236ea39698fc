"""Comparing protocol messages, and the failure a case raises when they differ.

Messages are compared as protobuf (`compare.equivalent`: decoded, `Any`
payloads unpacked), not as bytes. A mismatch prints both messages in protobuf
text format (payloads in `Any` expanded, since the model is in the default pool)
and a unified diff, plus a hint naming the protocol rule the frontend broke.
"""

from __future__ import annotations

import difflib

from google.protobuf import descriptor_pool, text_format
from google.protobuf.message import Message
from larder_tck.compare import canonical, equivalent


class CaseFailed(AssertionError):
    """The frontend did not behave as the protocol requires; the message says how."""


class FrontendUnreachable(RuntimeError):
    """The frontend could not be started or reached; no case can run."""


def show(message: Message | None) -> str:
    if message is None:
        return "<nothing>\n"
    text = text_format.MessageToString(
        message, descriptor_pool=descriptor_pool.Default(), print_unknown_fields=True
    )
    return f"{message.DESCRIPTOR.full_name} {{\n{_indent(text)}}}\n"


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def mismatch(what: str, expected: Message | None, actual: Message | None, hint: str) -> CaseFailed:
    expected_text, actual_text = show(expected), show(actual)
    diff = "".join(
        difflib.unified_diff(
            expected_text.splitlines(keepends=True),
            actual_text.splitlines(keepends=True),
            fromfile="expected",
            tofile="actual",
        )
    )
    lines = [f"{what}: the frontend's message differs from the expected one."]
    if hint:
        lines.append(f"Likely cause: {hint}")
    lines += ["--- expected", expected_text.rstrip(), "--- actual", actual_text.rstrip()]
    if expected_text == actual_text and expected is not None and actual is not None:
        # Different as protobuf yet equal in text: text format hides the difference
        # (e.g. an Any whose type the TCK does not know); the canonical bytes show it.
        lines += [
            "--- the messages print identically but differ as protobuf; canonical encodings:",
            f"expected: {canonical(expected).SerializeToString(deterministic=True).hex()}",
            f"actual:   {canonical(actual).SerializeToString(deterministic=True).hex()}",
        ]
    else:
        lines += ["--- diff", diff.rstrip()]
    return CaseFailed("\n".join(lines))


def expect_equal(what: str, expected: Message, actual: Message | None, hint: str = "") -> None:
    if actual is None or not equivalent(expected, actual):
        raise mismatch(what, expected, actual, hint)


def check(condition: bool, message: str) -> None:
    """Fail the case with `message` unless `condition` holds."""
    if not condition:
        raise CaseFailed(message)
