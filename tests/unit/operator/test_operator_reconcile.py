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
        "poddisruptionbudgets",
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


def _deployment_status(cluster: FakeCluster, **status: Any) -> None:
    deployment = cluster.objects[object_path("apps/v1", "Deployment", "ns", "cart")]
    deployment["metadata"].update(
        generation=2, uid="d1", annotations={"deployment.kubernetes.io/revision": "2"}
    )
    deployment["status"] = status


def _replica_set(cluster: FakeCluster, name: str, revision: str, *conds: Any) -> None:
    cluster.objects[object_path("apps/v1", "ReplicaSet", "ns", name)] = {
        "metadata": {
            "name": name,
            "labels": {"larder.dev/function": "cart"},
            "annotations": {"deployment.kubernetes.io/revision": revision},
            "ownerReferences": [{"uid": "d1", "controller": True}],
        },
        "status": {"conditions": list(conds)},
    }


FAILURE = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
           "message": 'pods "cart-1" is forbidden: violates PodSecurity "restricted"'}


async def test_pods_the_current_replicaset_cannot_create_are_the_ready_reason() -> None:
    cluster = FakeCluster()
    add_function(cluster, replicas=2)
    await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    _replica_set(cluster, "cart-new", "2", FAILURE)
    # Conditions of an older generation are not about this spec.
    _deployment_status(cluster, observedGeneration=1, conditions=[FAILURE])
    await reconcile_function(cluster, SETTINGS, "ns", "cart", "t2")
    assert conditions(cluster)["Ready"]["reason"] == Reason.PODS_NOT_READY
    _deployment_status(cluster, observedGeneration=2, conditions=[FAILURE])
    outcome = await reconcile_function(cluster, SETTINGS, "ns", "cart", "t3")
    assert outcome is not None
    ready = conditions(cluster)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", Reason.POD_CREATION_FAILED)
    assert "violates PodSecurity" in ready["message"]
    # A change of reason: the caller posts a Warning Event for it.
    assert [(c.type, c.reason) for c in outcome.changed] == [
        ("Ready", Reason.POD_CREATION_FAILED)
    ]


async def test_an_old_replicasets_failure_is_not_the_ready_reason() -> None:
    # The spec was fixed: the new ReplicaSet creates pods, the old one still fails to
    # (it keeps its pods until the new ones are ready), and the Deployment copies that.
    cluster = FakeCluster()
    add_function(cluster, replicas=2)
    await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    _replica_set(cluster, "cart-old", "1", FAILURE)
    _replica_set(cluster, "cart-new", "2")
    _deployment_status(cluster, observedGeneration=2, conditions=[FAILURE])
    await reconcile_function(cluster, SETTINGS, "ns", "cart", "t2")
    assert conditions(cluster)["Ready"]["reason"] == Reason.PODS_NOT_READY


PDB = object_path("policy/v1", "PodDisruptionBudget", "ns", "cart")


async def test_a_disruption_budget_while_more_than_one_replica_and_gone_when_scaled_down() -> None:
    cluster = FakeCluster()
    add_function(cluster, replicas=3)
    await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    assert cluster.applied[-1] == PDB
    cluster.objects[PDB]["metadata"]["uid"] = "pdb-uid"
    cluster.objects[function_path("ns", "cart")]["spec"]["replicas"] = 1
    await reconcile_function(cluster, SETTINGS, "ns", "cart", "t2")
    assert cluster.deleted == [PDB]
    assert PDB not in cluster.objects
    # Nothing more to delete on the next run.
    await reconcile_function(cluster, SETTINGS, "ns", "cart", "t3")
    assert cluster.deleted == [PDB]


async def test_a_disruption_budget_the_function_does_not_own_is_left_alone() -> None:
    cluster = FakeCluster()
    add_function(cluster, replicas=1)
    cluster.objects[PDB] = {
        "metadata": {"name": "cart", "namespace": "ns", "uid": "theirs",
                     "ownerReferences": [{"uid": "someone-else", "controller": True}]},
    }
    await reconcile_function(cluster, SETTINGS, "ns", "cart", "t1")
    assert cluster.deleted == []
    assert PDB in cluster.objects
