"""The sampling decision, taken once per trace at its root, and what an unsampled trace
carries on instead of spans. Plain Python: nothing of OpenTelemetry is needed to decide.

The sidecar decides itself, before OpenTelemetry is asked for anything, so that a trace
it does not record costs one decision and no OpenTelemetry objects at all (no span, no
context attached). The decision is the one OpenTelemetry's samplers of the same name
take (a test compares them): `traceidratio` keeps a trace when the low 64 bits of its id
are below `ratio * 2**64`, so every process with the same ratio agrees on a trace;
`parentbased_*` follows the caller's sampled flag when a caller sent a trace context.
"""

from __future__ import annotations

import random
import re
from typing import Any

from .config import SamplerName

_ID_LIMIT = 1 << 64
# W3C Trace Context, `traceparent`: version-traceid-parentid-flags, lowercase hex.
# Version ff is invalid; a later version may add fields after the flags, 00 may not.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class Remote:
    """A caller's valid `traceparent`, parsed."""

    __slots__ = ("flags", "header", "parent_id", "trace_hex", "trace_id")

    def __init__(self, header: str, trace_hex: str, parent_id: str, flags: int) -> None:
        self.header = header
        self.trace_hex = trace_hex
        self.trace_id = int(trace_hex, 16)
        self.parent_id = parent_id
        self.flags = flags


def parse_traceparent(value: str) -> Remote | None:
    """The caller's trace context, or None when `value` is not a valid `traceparent`
    (W3C: the receiver then starts a new trace; never an error)."""
    header = value.strip()
    match = _TRACEPARENT.fullmatch(header)
    if match is None:
        return None
    version, trace_hex, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_hex == _ZERO_TRACE:
        return None
    if parent_id == _ZERO_SPAN:
        return None
    return Remote(header, trace_hex, parent_id, int(flags, 16))


def new_trace_id() -> int:
    while True:  # all zeros is W3C's "invalid"
        trace_id = random.getrandbits(128)
        if trace_id:
            return trace_id


def new_ids() -> int:
    """A new trace id (the high 128 bits) and a span id (the low 64), neither all zeros:
    one call and, for `unsampled_new`, one formatting instead of two of each (a dropped
    trace's main cost here)."""
    while True:
        ids = random.getrandbits(192)
        if ids >> 64 and ids & (_ID_LIMIT - 1):
            return ids


def new_span_id() -> int:
    while True:
        span_id = random.getrandbits(64)
        if span_id:
            return span_id


class RootSampler:
    """`OTEL_TRACES_SAMPLER` and its ratio as one comparison per trace."""

    __slots__ = ("bound", "parent_based")

    def __init__(self, sampler: SamplerName, ratio: float) -> None:
        root = sampler.removeprefix("parentbased_")
        self.parent_based = root != sampler
        if root == "always_on":
            self.bound = _ID_LIMIT
        elif root == "always_off":
            self.bound = 0
        else:
            self.bound = round(ratio * _ID_LIMIT)

    def sampled(self, trace_id: int, remote: Remote | None) -> bool:
        """Whether the trace `trace_id` is recorded here; `remote`: the caller's context."""
        if self.parent_based and remote is not None:
            return bool(remote.flags & 1)
        return trace_id & (_ID_LIMIT - 1) < self.bound


class Unsampled:
    """A trace this sidecar does not record. Current while a command of that trace runs
    (in place of a span), it is what `inject` sends on: the caller's trace id with the
    sampled flag clear (W3C: a trace not recorded is still propagated, flags 00), so the
    user function, another pod or a Kafka consumer does not record it either.

    It answers as a span that records nothing, for code that holds "the span"."""

    __slots__ = ("traceparent", "tracestate")

    def __init__(self, traceparent: str, tracestate: str | None) -> None:
        self.traceparent = traceparent
        self.tracestate = tracestate

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    def set_attribute(self, key: str, value: Any) -> None:
        return

    def add_event(self, name: str, attributes: Any = None) -> None:
        return

    def is_recording(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Unsampled({self.traceparent!r})"


def unsampled_remote(remote: Remote, tracestate: str | None) -> Unsampled:
    """The `Unsampled` for the caller's trace: its parent id kept (this sidecar adds no
    span to the trace), its tracestate passed on as received."""
    return Unsampled(f"00-{remote.trace_hex}-{remote.parent_id}-00", tracestate)


def unsampled_new(ids: int) -> Unsampled:
    """The `Unsampled` for a new trace (`new_ids`), whose parent id names a span that is
    not recorded (W3C requires one; OpenTelemetry's unsampled spans do the same)."""
    # 24 bytes in hex, a "-" after the first 16: the trace id, then the span id (half
    # the cost of formatting the number and slicing the text).
    return Unsampled("00-" + ids.to_bytes(24).hex("-", -16) + "-00", None)
