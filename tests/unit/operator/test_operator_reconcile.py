"""Reconciling against an in-memory fake of the API server: what gets built, what status says."""

from __future__ import annotations

from typing import Any

from larder_operator.kube import function_path, journal_path, object_path
from larder_operator.reconcile import reconcile_function
from larder_operator.settings import OperatorSettings
from larder_operator.status import Reason

from tests.unit.operator.fake_cluster import FakeCluster

SETTINGS = OperatorSettings(sidecar_image="larder:test")


def add_function(cluster: FakeCluster, **spec: Any) -> None:
    cluster.objects[function_path("ns", "cart")] = {
        "apiVersion": "larder.dev/v1alpha1",
        "kind": "StatefulFunction",
        "metadata": {"name": "cart", "namespace": "ns", "uid": "u1", "generation": 4},
        "spec": {"containers": [{"name": "fn", "image": "cart:1"}], **spec},
    }


def add_journal(cluster: FakeCluster, spec: dict[str, Any], ready: bool | None) -> None:
    body: dict[str, Any] = {"metadata": {"name": "main", "namespace": "ns"}, "spec": spec}
    if ready is not None:
        body["status"] = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": str(ready),
                    "reason": "Reachable" if ready else "Unreachable",
                    "message": "connection refused" if not ready else "ok",
                }
            ]
        }
    cluster.objects[journal_path("ns", "main")] = body


def status(cluster: FakeCluster) -> dict[str, Any]:
    result: dict[str, Any] = cluster.objects[function_path("ns", "cart")]["status"]
    return result


def conditions(cluster: FakeCluster) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status(cluster)["conditions"]}


async def test_in_memory_function_builds_all_children_and_reports_pods_not_ready() -> None:
    cluster = FakeCluster()
    add_function(cluster, replicas=2)
    outcome = await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    assert outcome is not None
    assert not outcome.blocked
    kinds = [p.split("/")[-2] for p in cluster.applied]
    assert kinds == [
        "serviceaccounts", "roles", "rolebindings", "services", "services", "deployments",
    ]
    conds = conditions(cluster)
    assert conds["JournalReady"]["reason"] == Reason.IN_MEMORY
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["reason"] == Reason.PODS_NOT_READY
    st = status(cluster)
    assert st["observedGeneration"] == 4
    assert st["selector"] == "larder.dev/function=cart"
    assert st["address"] == "cart.ns.svc:9000"
    # Both conditions are new, so both get an Event.
    assert {c.type for c in outcome.changed} == {"Ready", "JournalReady"}


async def test_ready_when_the_deployment_reports_every_pod_ready() -> None:
    cluster = FakeCluster()
    add_function(cluster)
    await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    deployment = cluster.objects[object_path("apps/v1", "Deployment", "ns", "cart")]
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {
        "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
    }
    outcome = await reconcile_function(cluster, SETTINGS, "ns", "cart", "t2")
    assert outcome is not None
    assert conditions(cluster)["Ready"]["status"] == "True"
    assert status(cluster)["readyReplicas"] == 1
    assert [c.type for c in outcome.changed] == ["Ready"]


async def test_missing_journal_builds_nothing_and_says_why() -> None:
    cluster = FakeCluster()
    add_function(cluster, journal="main")
    outcome = await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    assert outcome is not None and outcome.blocked
    assert cluster.applied == []
    conds = conditions(cluster)
    assert conds["JournalReady"]["reason"] == Reason.JOURNAL_MISSING
    assert "Journal 'main' does not exist" in conds["JournalReady"]["message"]
    assert conds["Ready"]["reason"] == Reason.JOURNAL_MISSING


async def test_missing_secret_builds_nothing() -> None:
    cluster = FakeCluster()
    add_function(cluster, journal="main")
    spec = {
        "type": "Cassandra",
        "cassandra": {"contactPoints": ["c"], "credentialsSecret": {"name": "login"}},
    }
    add_journal(cluster, spec, ready=True)
    outcome = await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    assert outcome is not None and outcome.blocked
    assert cluster.applied == []
    assert conditions(cluster)["JournalReady"]["reason"] == Reason.SECRET_MISSING
    cluster.objects[object_path("v1", "Secret", "ns", "login")] = {
        "data": {"username": "dQ==", "password": "cA=="}
    }
    outcome = await reconcile_function(cluster, SETTINGS, "ns", "cart", "t2")
    assert outcome is not None and not outcome.blocked
    assert conditions(cluster)["JournalReady"]["status"] == "True"


async def test_unreachable_journal_still_builds_but_is_not_ready() -> None:
    cluster = FakeCluster()
    add_function(cluster, journal="main")
    add_journal(cluster, {"type": "Cassandra", "cassandra": {"contactPoints": ["c"]}}, False)
    outcome = await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    assert outcome is not None and not outcome.blocked
    assert len(cluster.applied) == 6
    conds = conditions(cluster)
    assert conds["JournalReady"]["reason"] == Reason.JOURNAL_NOT_READY
    assert "connection refused" in conds["JournalReady"]["message"]
    assert conds["Ready"]["reason"] == Reason.JOURNAL_NOT_READY


async def test_invalid_spec_builds_nothing_and_is_reported() -> None:
    cluster = FakeCluster()
    add_function(cluster, passivationTimeout="whenever")
    outcome = await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    assert outcome is not None
    assert outcome.invalid is not None and "passivationTimeout" in outcome.invalid
    assert cluster.applied == []
    assert conditions(cluster)["Ready"]["reason"] == Reason.INVALID_SPEC


async def test_gone_or_deleting_functions_are_left_alone() -> None:
    cluster = FakeCluster()
    assert await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1") is None
    add_function(cluster)
    cluster.objects[function_path("ns", "cart")]["metadata"]["deletionTimestamp"] = "t0"
    assert await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1") is None
    assert cluster.applied == []


async def test_a_child_the_api_server_rejects_makes_the_spec_invalid() -> None:
    cluster = FakeCluster()
    add_function(cluster)
    refusal = 'Deployment.apps "cart" is invalid: spec...volumeMounts[0].name: Not found: "data"'
    cluster.reject["Deployment"] = refusal
    outcome = await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    assert outcome is not None
    assert outcome.invalid == (
        f"the API server rejected the Deployment 'cart' made from this spec: {refusal} "
        "(fix that field in this StatefulFunction's spec and apply it again)"
    )
    ready = conditions(cluster)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", Reason.INVALID_SPEC)
    assert ready["message"] == outcome.invalid
    # The Service was built before the Deployment was refused: it has an address.
    assert status(cluster)["address"] == "cart.ns.svc:9000"

    del cluster.reject["Deployment"]
    outcome = await reconcile_function(cluster, SETTINGS, "ns", "cart", "t2")
    assert outcome is not None and outcome.invalid is None
    assert conditions(cluster)["Ready"]["reason"] == Reason.PODS_NOT_READY


async def test_no_address_without_a_service() -> None:
    cluster = FakeCluster()
    add_function(cluster, journal="main")
    await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    assert "address" not in status(cluster)


async def test_a_blocked_function_keeps_the_address_of_what_runs() -> None:
    cluster = FakeCluster()
    add_function(cluster, journal="main")
    add_journal(cluster, {"type": "InMemory"}, ready=True)
    await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    assert status(cluster)["address"] == "cart.ns.svc:9000"
    del cluster.objects[journal_path("ns", "main")]
    outcome = await reconcile_function(cluster, SETTINGS, "ns", "cart", "t2")
    assert outcome is not None and outcome.blocked
    assert status(cluster)["address"] == "cart.ns.svc:9000"


async def test_the_pods_hint_names_this_function() -> None:
    cluster = FakeCluster()
    add_function(cluster)
    await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    message = conditions(cluster)["Ready"]["message"]
    assert "`kubectl get pods -n ns -l larder.dev/function=cart`" in message
