"""A Journal in use keeps its finalizer until no function names it; its deletion says why."""

from __future__ import annotations

from typing import Any

from larder_operator.events import EventPoster
from larder_operator.journal_protection import (
    IN_USE_FINALIZER,
    JournalGuard,
    Protection,
    decide,
)
from larder_operator.kube import function_path, journal_path

from tests.unit.operator.fake_cluster import FakeCluster

OTHER = "example.com/backup"


def test_a_journal_in_use_gets_the_finalizer_next_to_others() -> None:
    assert decide({"finalizers": [OTHER]}, ["cart"]) == Protection(
        (OTHER, IN_USE_FINALIZER), ()
    )


def test_a_journal_no_longer_in_use_loses_only_our_finalizer() -> None:
    meta = {"finalizers": [OTHER, IN_USE_FINALIZER]}
    assert decide(meta, []) == Protection((OTHER,), ())


def test_nothing_to_do_when_the_finalizer_matches_the_use() -> None:
    assert decide({"finalizers": [IN_USE_FINALIZER]}, ["cart"]) == Protection(None, ())
    assert decide({}, []) == Protection(None, ())


def test_a_deletion_waits_for_the_functions_named_in_order() -> None:
    meta = {"finalizers": [IN_USE_FINALIZER], "deletionTimestamp": "t0"}
    assert decide(meta, ["cart", "basket", "cart"]) == Protection(None, ("basket", "cart"))


def test_too_late_to_protect_a_journal_being_deleted_without_it() -> None:
    # The API server refuses new finalizers on an object being deleted.
    assert decide({"deletionTimestamp": "t0"}, ["cart"]) == Protection(None, ())


def _journal(cluster: FakeCluster, **meta: Any) -> None:
    cluster.put(
        journal_path("ns", "main"),
        {
            "apiVersion": "larder.dev/v1alpha1",
            "kind": "Journal",
            "metadata": {"name": "main", "namespace": "ns", "uid": "j1", **meta},
            "spec": {"type": "InMemory"},
        },
    )


def _function(cluster: FakeCluster, name: str, journal: str = "main") -> None:
    cluster.put(
        function_path("ns", name),
        {"metadata": {"name": name, "namespace": "ns"}, "spec": {"journal": journal}},
    )


def _finalizers(cluster: FakeCluster) -> list[str]:
    return list(cluster.objects[journal_path("ns", "main")]["metadata"].get("finalizers", []))


def _guard(cluster: FakeCluster) -> JournalGuard:
    return JournalGuard(cluster, EventPoster(cluster, "operator-0"))


async def test_the_guard_adds_and_removes_the_finalizer() -> None:
    cluster = FakeCluster()
    _journal(cluster)
    _function(cluster, "cart")
    guard = _guard(cluster)
    await guard.protect("ns", "main", ["cart"], "t1")
    assert _finalizers(cluster) == [IN_USE_FINALIZER]
    # The write was conditional on the version it read.
    assert cluster.patches[0][1]["metadata"]["resourceVersion"] is not None

    del cluster.objects[function_path("ns", "cart")]
    await guard.protect("ns", "main", [], "t2")
    assert _finalizers(cluster) == []
    assert cluster.created == []


async def test_a_stale_index_never_releases_a_journal_still_in_use() -> None:
    cluster = FakeCluster()
    _journal(cluster, finalizers=[IN_USE_FINALIZER])
    _function(cluster, "cart")
    _function(cluster, "other", journal="elsewhere")
    # The index has not seen "cart" yet; the API has.
    await _guard(cluster).protect("ns", "main", [], "t1")
    assert _finalizers(cluster) == [IN_USE_FINALIZER]
    assert cluster.patches == []


async def test_a_pending_deletion_is_warned_about_once_per_set_of_functions() -> None:
    cluster = FakeCluster()
    _journal(cluster, finalizers=[IN_USE_FINALIZER], deletionTimestamp="t0")
    _function(cluster, "cart")
    _function(cluster, "basket")
    guard = _guard(cluster)
    await guard.protect("ns", "main", ["cart", "basket"], "t1")
    await guard.protect("ns", "main", ["cart", "basket"], "t2")
    assert len(cluster.created) == 1
    path, event = cluster.created[0]
    assert path == "/api/v1/namespaces/ns/events"
    assert (event["type"], event["reason"]) == ("Warning", "JournalInUse")
    assert event["message"].startswith("Journal 'main' is used by basket, cart;")
    assert event["involvedObject"]["kind"] == "Journal"

    del cluster.objects[function_path("ns", "cart")]
    await guard.protect("ns", "main", ["basket"], "t3")
    assert "used by basket;" in cluster.created[-1][1]["message"]
    assert len(cluster.created) == 2

    del cluster.objects[function_path("ns", "basket")]
    await guard.protect("ns", "main", [], "t4")
    assert _finalizers(cluster) == []
    assert len(cluster.created) == 2


async def test_a_journal_changed_meanwhile_is_read_again() -> None:
    cluster = FakeCluster()
    _journal(cluster)
    _function(cluster, "cart")
    stale = await cluster.get(journal_path("ns", "main"))
    # Someone (e.g. the status check) writes after the body was read.
    cluster.put(journal_path("ns", "main"), cluster.objects[journal_path("ns", "main")])
    await _guard(cluster).protect("ns", "main", ["cart"], "t1", stale)
    assert _finalizers(cluster) == [IN_USE_FINALIZER]
