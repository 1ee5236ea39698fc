"""librdkafka's own log lines, into the sidecar's log instead of stderr.

librdkafka writes its log straight to file descriptor 2 unless a client is given a
`logger` (confluent-kafka calls it with Python logging levels): lines in its own format
(`%3|1733…|rdkafka#producer-1|FAIL|…`), without the sidecar's timestamp, level or JSON
shape, that log pipelines cannot parse. Every client the sidecar makes gets one of these.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

_log = logging.getLogger("larder_sidecar.eventing.librdkafka")


class LibrdkafkaLog:
    """A client's `logger`: each line prefixed with `client` (e.g. "group g", "producer").

    Facilities in `quiet` go to DEBUG: their news is reported elsewhere already (for the
    consumer, a connection failing is reported once per outage by its error callback,
    where librdkafka repeats it on every reconnect attempt)."""

    def __init__(self, client: str, quiet: Iterable[str] = ()) -> None:
        self._client = client
        self._quiet = frozenset(quiet)

    def log(self, level: int, message: str, *args: Any) -> None:
        # Called on whichever thread is inside the client (consume(), poll(), flush()).
        facility = args[0] if args else ""
        if facility in self._quiet:
            level = logging.DEBUG
        _log.log(level, "%s: " + message, self._client, *args)
