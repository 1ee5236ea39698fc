"""Consumed records applied once: an idempotency key for each entity command from a topic.

Consumption is at-least-once (docs/eventing.md): a record after the committed watermark
runs again after a crash, a lost assignment or a rebalance cut short, and a producer
that retried may have written one event twice. An entity command run from a record
therefore carries an idempotency key derived from the record, and the entity keeps its
record of the command in the same journal write as the command's effects
(`entities/idempotency.py`): a second delivery is answered from that record, and its
reply is published again (the first publication may never have reached the broker).

The key names the event, not the delivery:

- a record with `ce-source` and `ce-id` is a CloudEvent, which the specification makes
  unique by that pair, so a producer's duplicate at another offset is caught too;
- any other record is named by where it is, `topic/partition/offset`, which catches
  redelivery (a topic deleted and created again restarts its offsets, and within the
  idempotency window its old keys would then name new records: such topics should send
  CloudEvents ids or turn this off);
- a record that brings its own `idempotency-key` header keeps it.

Actions store nothing, so they get no key. An entity remembers its last
`LARDER_IDEMPOTENCY_MAX_KEYS` keys for `LARDER_IDEMPOTENCY_WINDOW`: a redelivery of
more of one entity's records than that, or later, runs again.
"""

from __future__ import annotations

import dataclasses
import hashlib

from ..model import IDEMPOTENCY_KEY
from .cloudevents import Command

_EVENT_PREFIX = "ce:"
_PLACE_PREFIX = "kafka:"
_MAX_KEY = 256
"""The longest key an entity accepts (`entities/idempotency.MAX_KEY_LENGTH`)."""
_ID_NAMES = ("ce-id", "ce_id")
_SOURCE_NAMES = ("ce-source", "ce_source")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:40]


def record_key(command: Command, topic: str, partition: int, offset: int) -> str:
    """The key naming the event `command` was decoded from."""
    event_id = source = None
    for name, value in command.metadata:
        if name in _ID_NAMES:
            event_id = value
        elif name in _SOURCE_NAMES:
            source = value
    if event_id and source:
        # Hashed: both are free-form strings of any length, and a separator could
        # appear in either.
        return _EVENT_PREFIX + _digest(source, event_id)
    place = f"{_PLACE_PREFIX}{topic}/{partition}/{offset}"
    if len(place) <= _MAX_KEY:
        return place
    return _PLACE_PREFIX + _digest(topic, str(partition), str(offset))


def keyed(command: Command, topic: str, partition: int, offset: int) -> Command:
    """`command` with its derived idempotency key, or as it is when it names no entity or
    carries a key of its own."""
    if command.entity_id is None:
        return command
    if any(name == IDEMPOTENCY_KEY for name, _ in command.metadata):
        return command
    key = record_key(command, topic, partition, offset)
    return dataclasses.replace(
        command, metadata=(*command.metadata, (IDEMPOTENCY_KEY, key)), dedup_key=key
    )


def reply_event_id(command: Command, topic: str, partition: int, offset: int) -> str:
    """The `ce-id` of the reply published for `command`: the same for every delivery of
    one event, so consumers downstream can drop a reply published twice."""
    key = command.dedup_key
    if key is not None and key.startswith(_EVENT_PREFIX):
        return "larder-" + key[len(_EVENT_PREFIX) :]
    return f"{topic}-{partition}-{offset}"


def reuse_cause(key: str) -> str:
    """Why a key derived from a record can name a different earlier command."""
    if key.startswith(_EVENT_PREFIX):
        return (
            f"the key {key} was derived from the record's ce-source and ce-id: its producer "
            "sent two different events with the same pair, which CloudEvents requires to "
            "be unique"
        )
    return (
        f"the key {key} was derived from the record's topic, partition and offset: the "
        "topic was probably deleted and created again within the idempotency window, so "
        "its offsets started over; send CloudEvents ids or set LARDER_KAFKA_DEDUPLICATE=off"
    )
