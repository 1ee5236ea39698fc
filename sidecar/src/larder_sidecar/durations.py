"""Durations in settings: seconds, or a number with a unit (`500ms`, `30s`, `2m`)."""

from __future__ import annotations

_UNITS = (("ms", 0.001), ("s", 1.0), ("m", 60.0))


def parse_seconds(text: str) -> float:
    """The seconds `text` stands for; ValueError when it is not a number with an optional
    unit. The sign is the caller's business."""
    text, scale = text.strip().lower(), 1.0
    for suffix, factor in _UNITS:
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], factor
            break
    return float(text) * scale
