"""The Journal's Durable condition, judged from what the cluster says."""

from __future__ import annotations

import pytest
from larder_operator.durability import ClusterFacts, acknowledging_replicas, assess
from larder_operator.journals import replication_factors
from larder_operator.status import DURABLE, Reason


@pytest.mark.parametrize(
    ("consistency", "replication", "copies"),
    [
        ("ONE", {"*": 3}, 1),
        ("LOCAL_ONE", {"*": 3}, 1),
        ("ANY", {"*": 1}, 1),
        ("TWO", {"*": 3}, 2),
        ("LOCAL_QUORUM", {"*": 3}, 2),
        ("LOCAL_QUORUM", {"*": 1}, 1),
        ("LOCAL_QUORUM", {"dc1": 3, "dc2": 5}, 2),
        ("QUORUM", {"dc1": 3, "dc2": 5}, 5),
        ("EACH_QUORUM", {"dc1": 3, "dc2": 5}, 5),
        ("ALL", {"dc1": 3, "dc2": 2}, 5),
    ],
)
def test_acknowledging_replicas(
    consistency: str, replication: dict[str, int], copies: int
) -> None:
    assert acknowledging_replicas(consistency, replication, "dc1") == copies


def test_unknown_consistency_is_an_error() -> None:
    with pytest.raises(ValueError, match="SOME"):
        acknowledging_replicas("SOME", {"*": 3}, "dc1")


def test_periodic_commit_log_and_one_copy_is_not_durable() -> None:
    cond = assess(ClusterFacts("periodic", {"*": 1}), {"*": 3}, "LOCAL_QUORUM", "dc1")
    assert cond.type == DURABLE
    assert (cond.status, cond.reason) == (False, Reason.UNSYNCED_SINGLE_COPY)
    # The existing keyspace counts, not the spec; the message says what to change.
    assert "the keyspace has replication factor 1" in cond.message
    assert "commitlog_sync: batch or group" in cond.message


def test_two_acknowledgements_are_durable_whatever_the_commit_log() -> None:
    cond = assess(ClusterFacts("periodic", None), {"*": 3}, "LOCAL_QUORUM", "dc1")
    assert (cond.status, cond.reason) == (True, Reason.REPLICATED)
    assert "acknowledged by 2 replicas" in cond.message


@pytest.mark.parametrize("mode", ["batch", "group"])
def test_a_synced_commit_log_is_durable_with_one_copy(mode: str) -> None:
    cond = assess(ClusterFacts(mode, {"*": 1}), {"*": 1}, "ONE", "dc1")
    assert (cond.status, cond.reason) == (True, Reason.SYNCED_COMMIT_LOG)
    assert "only copy" in cond.message


def test_weak_consistency_is_not_durable_even_with_three_copies() -> None:
    cond = assess(ClusterFacts("periodic", {"*": 3}), {"*": 3}, "ONE", "dc1")
    assert (cond.status, cond.reason) == (False, Reason.UNSYNCED_SINGLE_COPY)


def test_an_unreadable_commit_log_mode_is_said() -> None:
    cond = assess(ClusterFacts(None, None), {"*": 1}, "ONE", "dc1")
    assert (cond.status, cond.reason) == (False, Reason.DURABILITY_UNKNOWN)
    assert "could not be read" in cond.message


@pytest.mark.parametrize(
    ("setting", "factors"),
    [
        ("SimpleStrategy:3", {"*": 3}),
        ("NetworkTopologyStrategy:dc1=3,dc2=2", {"dc1": 3, "dc2": 2}),
    ],
)
def test_replication_factors(setting: str, factors: dict[str, int]) -> None:
    assert replication_factors(setting) == factors
