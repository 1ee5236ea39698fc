"""Claims of view changes on Cassandra, a Paxos round per bucket (pure logic; the store
sends them, `cassandra_store.py`).

An entity's offset row of a view lives in one of `BUCKETS` partitions of `view_claims`,
`(view key, bucket)`, the persistence id its clustering key. A delivery wave's claims
of one bucket go to Cassandra as one conditional batch (a Paxos round), one condition
per entity. Cassandra applies such a batch whole or not at all; when it refuses, it
answers the stored offset rows of the batch's entities, and `sort_answer` tells which
claims were fine (sent again without the others), which were refused (the entity's
offset moved) and which entities hold an unfinished change to finish first.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BUCKETS = 16
"""Partitions per view generation. Fixed: an entity's bucket must be the same for every
sidecar, now and later (a different count is a different layout). Why 16: a delivery
wave (up to 256 changes) costs at most 16 Paxos rounds instead of 256; 16 partitions
spread a view's claims over the ring's replicas in a cluster of up to ~16 nodes; and
pods delivering the same view serialize on a bucket's Paxos state only when both have a
claim in the same bucket in flight at once (docs/views.md, "Delivery on Cassandra")."""
CLAIMS_PER_BATCH = 128
"""At most this many claims in one conditional batch (one Paxos proposal carries all
their intents)."""

Intent = list[tuple[str, str, bytes | None]]
"""A claimed change's rows: (table id, row key, row bytes or None to delete)."""


def bucket_of(pid: str) -> int:
    """The entity's bucket: CRC-32 of its persistence id (stable across processes and
    Python versions, unlike `hash`)."""
    return zlib.crc32(pid.encode()) % BUCKETS


@dataclass
class Claim:
    """One change to claim: delivery batch item `index`, the entity's offset `expected`
    (0: no offset row yet) and the change's `offset`, its rows and write timestamp."""

    index: int
    pid: str
    expected: int
    offset: int
    intent: Intent
    ts: int


@dataclass
class Answer:
    """A refused batch sorted: `retry` (their conditions held; the timestamp raised where
    the stored one was not below it), `refused` (the offset moved), `unfinished` (pids
    whose stored change is claimed and not done: finish it, the claim is refused)."""

    retry: list[Claim] = field(default_factory=list)
    refused: list[Claim] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)


def sort_answer(claims: Sequence[Claim], rows: Iterable[Mapping[str, Any]]) -> Answer:
    """Sort the claims of a refused conditional batch by the stored rows Cassandra
    answered (those of the batch's entities that exist)."""
    stored = {row["pid"]: row for row in rows if row.get("pid") is not None}
    answer = Answer()
    for claim in claims:
        row = stored.get(claim.pid)
        if row is None:
            # No offset row: fine for a first change, refused for any other (its
            # offset is 0, not what the caller expected).
            (answer.retry if claim.expected == 0 else answer.refused).append(claim)
            continue
        applied, done, ts = row.get("applied"), row.get("done"), row.get("ts")
        if applied is not None and applied != done:
            answer.unfinished.append(claim.pid)
            answer.refused.append(claim)
        elif claim.expected == 0 or applied != claim.expected:
            answer.refused.append(claim)
        else:
            # The condition held but for the timestamp: this clock is behind the last
            # writer's. The next change's timestamp is above the stored one.
            if ts is not None and ts >= claim.ts:
                claim.ts = int(ts) + 1
            answer.retry.append(claim)
    return answer


def by_bucket(claims: Iterable[Claim]) -> list[tuple[int, list[Claim]]]:
    """The claims grouped per bucket, in batches of at most `CLAIMS_PER_BATCH`."""
    groups: dict[int, list[Claim]] = {}
    for claim in claims:
        groups.setdefault(bucket_of(claim.pid), []).append(claim)
    return [
        (bucket, group[i : i + CLAIMS_PER_BATCH])
        for bucket, group in sorted(groups.items())
        for i in range(0, len(group), CLAIMS_PER_BATCH)
    ]
