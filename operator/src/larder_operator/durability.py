"""Will a command the sidecar acknowledged survive a crash? A pure judgement from what the
Journal asks for and what the Cassandra cluster says about itself.

The sidecar acknowledges a command once Cassandra acknowledged its write at the
Journal's write consistency. That write survives a `kill -9` (or power loss) of a node
if either
- the node wrote it to disk before answering: `commitlog_sync: batch` or `group`
  (with `periodic`, the default, the node answers first and syncs its commit log every
  `commitlog_sync_period`, 10 s by default), or
- at least two replicas acknowledged it, so one crash cannot take the only copy.
Neither holds for replication factor 1 on a node with a periodic commit log, the
setting of a single-node trial cluster: that is the case this condition warns about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from larder_operator.status import DURABLE, Condition, Reason

SYNCED_COMMIT_LOG = frozenset({"batch", "group"})

# How many replicas acknowledge a write at each consistency level, given the
# replication factor in the local datacenter (`local`) and in all (`total`).
_FIXED = {"ANY": 1, "ONE": 1, "LOCAL_ONE": 1, "TWO": 2, "THREE": 3}


@dataclass(frozen=True)
class ClusterFacts:
    """What the check read from the cluster (None: it could not tell)."""

    commitlog_sync: str | None
    """`commitlog_sync` of the node the check talked to."""
    replication: Mapping[str, int] | None
    """Replication factor per datacenter of the keyspace as it exists (SimpleStrategy is
    one entry, `*`); None when the keyspace does not exist yet."""


def acknowledging_replicas(consistency: str, replication: Mapping[str, int], local_dc: str) -> int:
    """How many replicas have a write before Cassandra acknowledges it."""
    total = sum(replication.values())
    local = replication.get(local_dc, replication.get("*", total))
    if consistency in _FIXED:
        return _FIXED[consistency]
    if consistency == "LOCAL_QUORUM":
        return local // 2 + 1
    if consistency == "QUORUM":
        return total // 2 + 1
    if consistency == "EACH_QUORUM":
        return sum(rf // 2 + 1 for rf in replication.values())
    if consistency == "ALL":
        return total
    raise ValueError(f"unknown consistency level {consistency!r}")


def assess(
    facts: ClusterFacts,
    wanted: Mapping[str, int],
    write_consistency: str,
    local_dc: str,
) -> Condition:
    """The `Durable` condition. `wanted` is the replication the Journal asks for, used
    when the keyspace does not exist yet (the sidecar creates it so)."""
    replication = facts.replication if facts.replication is not None else wanted
    where = "the keyspace" if facts.replication is not None else "the keyspace to be created"
    factor = ", ".join(f"{dc}={rf}" if dc != "*" else str(rf) for dc, rf in replication.items())
    copies = acknowledging_replicas(write_consistency, replication, local_dc)
    sync = facts.commitlog_sync
    if sync in SYNCED_COMMIT_LOG:
        return Condition(
            DURABLE, True, Reason.SYNCED_COMMIT_LOG,
            f"commitlog_sync is {sync} on the node checked: a write is on disk before it is "
            f"acknowledged ({where} has replication factor {factor}; losing a disk with the "
            "only copy still loses data)",
        )
    if copies >= 2:
        return Condition(
            DURABLE, True, Reason.REPLICATED,
            f"writes at {write_consistency} are acknowledged by {copies} replicas "
            f"(replication factor {factor}): one node crashing loses nothing acknowledged",
        )
    told = f"commitlog_sync is {sync}" if sync else "the commit log mode could not be read"
    return Condition(
        DURABLE, False,
        Reason.UNSYNCED_SINGLE_COPY if sync else Reason.DURABILITY_UNKNOWN,
        f"an acknowledged command may be lost if a Cassandra node crashes: {told} on the "
        f"node checked and writes at {write_consistency} are acknowledged by {copies} "
        f"replica(s) ({where} has replication factor {factor}). For production, use a "
        "replication factor of 3 with LOCAL_QUORUM writes (the Journal's defaults), or "
        "commitlog_sync: batch or group on every node",
    )


def in_memory() -> Condition:
    return Condition(
        DURABLE, False, Reason.IN_MEMORY,
        "an in-memory journal keeps nothing across a sidecar restart",
    )
