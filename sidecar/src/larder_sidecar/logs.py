"""Logging set-up for the sidecar process (never called by library code), and `clip` for
the user input that log lines carry."""

from __future__ import annotations

import json
import logging
import sys
import time

from . import tracing

_EXTRA_FIELDS = ("entity_type", "entity_id", "component")

LOG_CLIP = 200
"""Characters of an id or path that a log line carries; the rest is counted, not printed."""


def clip(text: str, limit: int = LOG_CLIP) -> str:
    """`text` if it is at most `limit` characters, else its start and how much was cut.

    Ids and paths come from clients: a log line must not grow with them (log pipelines
    split or drop long lines, and a pipe reader with a line limit chokes on them).
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more characters)"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the entity fields when a record carries them."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _EXTRA_FIELDS:
            if hasattr(record, name):
                value = getattr(record, name)
                entry[name] = clip(value) if isinstance(value, str) else value
        trace_id = tracing.log_trace_id()
        if trace_id is not None:
            entry["trace_id"] = trace_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    """`time level logger: message`, and ` trace=<id>` when logged inside a traced span."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        trace_id = tracing.log_trace_id()
        if trace_id is None:
            return text
        # Before a traceback's lines, so the id stays on the line with the message.
        first, newline, rest = text.partition("\n")
        return f"{first} trace={trace_id}{newline}{rest}"


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
