"""Shard-map agreement of a function's ready pods: counting, drift, the grace period."""

from __future__ import annotations

from larder_operator.map_agreement import PodView, agreement, view_from_answer
from larder_operator.map_check import record_shard_map
from larder_operator.pod_views import PodEndpoint, ready_endpoints
from larder_operator.reconcile import reconcile_function
from larder_operator.status import Reason

from tests.unit.operator.fake_cluster import FakeCluster
from tests.unit.operator.test_operator_reconcile import (
    SETTINGS,
    add_function,
    conditions,
    status,
)

T0 = "2026-12-06T10:00:00Z"
T10 = "2026-12-06T10:00:10Z"
T40 = "2026-12-06T10:00:40Z"
JOURNAL = "cassandra:shop@127.0.0.1:9042"


def view(pod: str, fingerprint: str = "f1", shards: int = 128, journal: str = JOURNAL) -> PodView:
    return PodView(pod, fingerprint, shards, journal, ("a", "b", "c"))


def test_pods_with_the_same_map_agree() -> None:
    found = agreement([view("c"), view("a"), view("b")], None, T0, 30)
    assert found.condition.status and found.condition.reason == Reason.MAPS_AGREE
    assert found.status["agreement"] == "3/3"
    assert (found.status["fingerprint"], found.status["shardCount"]) == ("f1", 128)
    assert found.status["members"] == ["a", "b", "c"]
    assert found.status["since"] is None
    assert "3/3 ready pods have the same shard map" in found.condition.message


def test_a_short_disagreement_is_converging_then_reported_with_its_start_kept() -> None:
    views = [view("a"), view("b"), view("c", fingerprint="f2")]
    first = agreement(views, None, T0, 30)
    assert first.condition.status and first.condition.reason == Reason.CONVERGING
    assert (first.status["agreement"], first.status["since"]) == ("2/3", T0)
    assert first.status["disagreeing"] == ["c: map f2"]
    later = agreement(views, first.status, T40, 30)
    assert not later.condition.status and later.condition.reason == Reason.MAPS_DISAGREE
    assert later.status["since"] == T0
    assert "for 40 s" in later.condition.message and "c see(s) other members" in (
        later.condition.message
    )
    healed = agreement([view("a"), view("b"), view("c")], later.status, T40, 30)
    assert healed.condition.status and healed.status["since"] is None


def test_an_unreachable_pod_does_not_agree_and_is_named() -> None:
    views = [view("a"), view("b"), PodView("c", error="timed out")]
    found = agreement(views, {"since": T0}, T40, 30)
    assert (found.status["pods"], found.status["agreeing"]) == (3, 2)
    assert found.status["unreachable"] == ["c: timed out"]
    assert found.condition.reason == Reason.PODS_UNREACHABLE and not found.condition.status
    assert "no answer from c" in found.condition.message


def test_a_different_shard_count_or_journal_is_drift_even_with_equal_members() -> None:
    views = [view("a"), view("b", shards=64), view("c", journal="memory")]
    found = agreement(views, {"since": T0}, T40, 30)
    assert found.status["agreeing"] == 1
    assert found.status["drift"] == [
        "shard count: 128 (a, c); 64 (b)",
        f"journal: {JOURNAL} (a, b); memory (c)",
    ]
    assert found.condition.reason == Reason.CONFIG_DRIFT
    assert "LARDER_SHARD_COUNT" in found.condition.message


def test_a_tie_is_broken_the_same_way_every_time() -> None:
    views = [view("a", fingerprint="f2"), view("b", fingerprint="f1")]
    assert agreement(views, None, T0, 30).status["fingerprint"] == "f1"
    assert agreement(list(reversed(views)), None, T10, 30).status["fingerprint"] == "f1"


def test_no_ready_pods_is_nothing_to_compare() -> None:
    found = agreement([], {"since": T0}, T40, 30)
    assert found.condition.status and found.condition.reason == Reason.NO_READY_PODS
    assert found.status["agreement"] == "0/0"


def test_a_sidecar_answer_is_read_and_a_malformed_one_is_an_error() -> None:
    answer = {
        "member": "b",
        "shard_count": 128,
        "journal": JOURNAL,
        "fingerprint": "f1",
        "members": [{"id": "c"}, {"id": "a"}, {"id": "b"}],
    }
    assert view_from_answer("b", answer) == PodView("b", "f1", 128, JOURNAL, ("a", "b", "c"))
    broken = view_from_answer("b", {"member": "b"})
    assert broken.error is not None and "fingerprint" in broken.error


def test_ready_endpoints_are_the_ready_not_terminating_pods_with_their_admin_port() -> None:
    slices = [
        {
            "ports": [{"name": "internal", "port": 9604}, {"name": "admin", "port": 19603}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "name": "b"},
                 "conditions": {"ready": True}},
                {"addresses": ["10.0.0.3"], "targetRef": {"kind": "Pod", "name": "c"},
                 "conditions": {"ready": False}},
                # Published while not ready (publishNotReadyAddresses): not serving.
                {"addresses": ["10.0.0.5"], "targetRef": {"kind": "Pod", "name": "e"},
                 "conditions": {"ready": True, "serving": False}},
                {"addresses": ["10.0.0.4"], "targetRef": {"kind": "Pod", "name": "d"},
                 "conditions": {"ready": True, "terminating": True}},
            ],
        },
        # Older Service without the admin port: the sidecar's default.
        {
            "ports": [{"name": "internal", "port": 9604}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "a"},
                 "conditions": {}},
                {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "name": "b"},
                 "conditions": {"ready": True}},
            ],
        },
    ]
    assert ready_endpoints(slices) == [
        PodEndpoint("a", "10.0.0.1", 9603),
        PodEndpoint("b", "10.0.0.2", 19603),
    ]
    assert PodEndpoint("a", "fd00::1", 9603).url == "http://[fd00::1]:9603/cluster"


async def test_the_map_check_and_the_reconcile_keep_each_others_conditions() -> None:
    cluster = FakeCluster()
    add_function(cluster, replicas=3)
    await reconcile_function(cluster, SETTINGS, "ns", "cart", T0)
    views = [view("a"), view("b"), PodView("c", error="timed out")]
    first = await record_shard_map(cluster, views, grace=30, namespace="ns", name="cart", now=T0)
    assert first is not None
    assert [c.type for c in first.changed] == ["ShardMapAgreed"]
    assert first.condition.reason == Reason.CONVERGING
    await reconcile_function(cluster, SETTINGS, "ns", "cart", T10)
    kept = conditions(cluster)
    assert set(kept) == {"Ready", "JournalReady", "ShardMapAgreed"}
    assert kept["ShardMapAgreed"]["reason"] == Reason.CONVERGING
    later = await record_shard_map(cluster, views, grace=30, namespace="ns", name="cart", now=T40)
    assert later is not None and later.condition.reason == Reason.PODS_UNREACHABLE
    assert status(cluster)["shardMap"]["since"] == T0
    assert conditions(cluster)["Ready"]["reason"] == Reason.PODS_NOT_READY
    assert conditions(cluster)["ShardMapAgreed"]["lastTransitionTime"] == T40
