"""The rendered children of a StatefulFunction: pod template, Services, RBAC."""

from __future__ import annotations

from typing import Any

import pytest
from larder_operator.children import (
    DEFAULT_TERMINATION_GRACE_SECONDS,
    FunctionRef,
    InvalidSpecError,
    passivation_seconds,
    render_children,
)
from larder_operator.journals import parse_journal, spec_hash
from larder_operator.settings import OperatorSettings

REF = FunctionRef(name="cart", namespace="shop", uid="uid-1")
SETTINGS = OperatorSettings(sidecar_image="larder:test")
CASSANDRA_SPEC: dict[str, Any] = {
    "type": "Cassandra",
    "cassandra": {
        "contactPoints": ["cass-0", "cass-1"],
        "port": 9142,
        "keyspace": "carts",
        "consistency": {"read": "ONE", "write": "QUORUM"},
        "credentialsSecret": {"name": "cass-login"},
    },
}


def spec(**extra: Any) -> dict[str, Any]:
    return {"containers": [{"name": "fn", "image": "example/cart:1"}], **extra}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def render(s: dict[str, Any], journal_spec: dict[str, Any] | None = None) -> Any:
    journal = parse_journal("shop", journal_spec) if journal_spec else None
    return render_children(REF, s, journal, journal_spec, SETTINGS)


def test_every_child_is_owned_by_the_function_so_gc_deletes_it() -> None:
    children = render(spec())
    for child in children.in_apply_order():
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "larder.dev/v1alpha1",
            "kind": "StatefulFunction",
            "name": "cart",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert child["metadata"]["namespace"] == "shop"
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "larder-operator"


def test_sidecar_is_a_native_sidecar_with_ports_probes_and_secure_defaults() -> None:
    pod = render(spec()).deployment
    template = pod["spec"]["template"]["spec"]
    (sidecar,) = template["initContainers"]
    assert sidecar["name"] == "larder-sidecar"
    assert sidecar["image"] == "larder:test"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["larder-sidecar"]
    assert {p["name"]: p["containerPort"] for p in sidecar["ports"]} == {
        "http": 9000,
        "admin": 9603,
        "internal": 9604,
    }
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert sidecar["securityContext"] == {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        # Its own, so it passes PodSecurity `restricted` whatever the pod's profile.
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert template["serviceAccountName"] == "cart-larder"
    assert template["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_user_function_gets_port_8080_and_the_sidecar_points_at_it() -> None:
    deployment = render(spec()).deployment
    (user,) = deployment["spec"]["template"]["spec"]["containers"]
    assert env_of(user)["PORT"] == "8080"
    sidecar_env = env_of(deployment["spec"]["template"]["spec"]["initContainers"][0])
    assert sidecar_env["USER_FUNCTION_HOST"] == "127.0.0.1"
    assert sidecar_env["USER_FUNCTION_PORT"] == "8080"
    assert sidecar_env["LARDER_JOURNAL_TYPE"] == "memory"
    assert sidecar_env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert sidecar_env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert sidecar_env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_the_sidecar_is_told_which_service_lists_its_peers() -> None:
    children = render(spec())
    sidecar = children.deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert env_of(sidecar)["LARDER_CLUSTER_SERVICE"] == "cart-internal"
    assert children.headless_service["metadata"]["name"] == "cart-internal"


def test_the_sidecar_listens_on_every_interface_of_the_pod() -> None:
    # Probes hit the admin port, and Services the public one, at the pod IP.
    sidecar = render(spec()).deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert env_of(sidecar)["LARDER_HOST"] == "0.0.0.0"
    assert [e["name"] for e in sidecar["env"]].count("LARDER_HOST") == 1


def test_a_user_given_larder_host_wins() -> None:
    extra = [{"name": "LARDER_HOST", "value": "::"}]
    sidecar = render(spec(sidecar={"env": extra})).deployment["spec"]["template"]["spec"][
        "initContainers"
    ][0]
    assert env_of(sidecar)["LARDER_HOST"] == "::"
    assert [e["name"] for e in sidecar["env"]].count("LARDER_HOST") == 1


def test_a_given_port_is_kept_and_passed_to_the_sidecar() -> None:
    s = spec()
    s["containers"][0]["env"] = [{"name": "PORT", "value": "8181"}]
    deployment = render(s).deployment
    assert env_of(deployment["spec"]["template"]["spec"]["containers"][0])["PORT"] == "8181"
    sidecar_env = env_of(deployment["spec"]["template"]["spec"]["initContainers"][0])
    assert sidecar_env["USER_FUNCTION_PORT"] == "8181"


def test_rendering_does_not_modify_the_spec() -> None:
    s = spec()
    render(s)
    assert "env" not in s["containers"][0]


def test_cassandra_journal_becomes_env_with_credentials_only_as_secret_refs() -> None:
    deployment = render(spec(journal="main"), CASSANDRA_SPEC).deployment
    env = env_of(deployment["spec"]["template"]["spec"]["initContainers"][0])
    assert env["LARDER_JOURNAL_TYPE"] == "cassandra"
    assert env["LARDER_JOURNAL_CASSANDRA_CONTACT_POINTS"] == "cass-0,cass-1"
    assert env["LARDER_JOURNAL_CASSANDRA_PORT"] == "9142"
    assert env["LARDER_JOURNAL_CASSANDRA_KEYSPACE"] == "carts"
    assert env["LARDER_JOURNAL_CASSANDRA_LOCAL_DC"] == "datacenter1"
    assert env["LARDER_JOURNAL_CASSANDRA_READ_CONSISTENCY"] == "ONE"
    assert env["LARDER_JOURNAL_CASSANDRA_WRITE_CONSISTENCY"] == "QUORUM"
    # The Journal's default: three copies.
    assert env["LARDER_JOURNAL_CASSANDRA_REPLICATION"] == "SimpleStrategy:3"
    assert env["LARDER_JOURNAL_CASSANDRA_USERNAME"] == {
        "secretKeyRef": {"name": "cass-login", "key": "username"}
    }
    assert env["LARDER_JOURNAL_CASSANDRA_PASSWORD"] == {
        "secretKeyRef": {"name": "cass-login", "key": "password"}
    }


def test_journal_spec_hash_annotation_changes_when_the_journal_does() -> None:
    before = render(spec(journal="main"), CASSANDRA_SPEC).deployment
    changed = {**CASSANDRA_SPEC, "cassandra": {**CASSANDRA_SPEC["cassandra"], "port": 9042}}
    after = render(spec(journal="main"), changed).deployment
    key = "larder.dev/journal-hash"
    assert before["spec"]["template"]["metadata"]["annotations"][key] == spec_hash(CASSANDRA_SPEC)
    assert (
        before["spec"]["template"]["metadata"]["annotations"][key]
        != after["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_services_public_and_headless() -> None:
    children = render(spec(service={"type": "NodePort", "port": 80, "nodePort": 30080}))
    svc = children.service["spec"]
    assert svc["type"] == "NodePort"
    assert svc["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "nodePort": 30080}
    ]
    assert svc["selector"] == {"larder.dev/function": "cart"}
    headless = children.headless_service
    assert headless["metadata"]["name"] == "cart-internal"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["ports"][0]["port"] == 9604


def test_rbac_grants_only_reading_peers() -> None:
    children = render(spec())
    # Exactly what membership watches; pods, for one, are not readable.
    assert children.role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    binding = children.role_binding
    assert binding["roleRef"]["name"] == "cart-larder"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cart-larder", "namespace": "shop"}
    ]


def test_sidecar_overrides_and_passivation() -> None:
    s = spec(
        replicas=3,
        passivationTimeout="2m",
        sidecar={
            "image": "larder:custom",
            "logLevel": "debug",
            "env": [{"name": "LARDER_LOG_LEVEL", "value": "warning"}, {"name": "X", "value": "1"}],
        },
    )
    deployment = render(s).deployment
    assert deployment["spec"]["replicas"] == 3
    sidecar = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert sidecar["image"] == "larder:custom"
    env = env_of(sidecar)
    # An explicit extra env var wins over ours, and appears once.
    assert env["LARDER_LOG_LEVEL"] == "warning"
    assert [e["name"] for e in sidecar["env"]].count("LARDER_LOG_LEVEL") == 1
    assert env["X"] == "1"
    assert env["LARDER_PASSIVATION_TIMEOUT"] == "120"


@pytest.mark.parametrize(
    ("value", "seconds"), [("30s", "30"), ("500ms", "0.5"), ("1h", "3600"), ("1.5m", "90")]
)
def test_passivation_durations(value: str, seconds: str) -> None:
    assert passivation_seconds(value) == seconds


@pytest.mark.parametrize(
    ("containers", "fragment"),
    [
        ([], "at least one container"),
        ([{"name": "fn"}], "needs both name and image"),
        ([{"name": "larder-sidecar", "image": "x"}], "reserved"),
        ([{"name": "a", "image": "x"}, {"name": "a", "image": "y"}], "used twice"),
        ([{"name": "a", "image": "x", "ports": [{"containerPort": 9603}]}], "port 9603"),
        ([{"name": "a", "image": "x", "env": [{"name": "PORT", "value": "http"}]}], "PORT"),
    ],
)
def test_invalid_specs_are_rejected_with_the_field_named(
    containers: list[dict[str, Any]], fragment: str
) -> None:
    with pytest.raises(InvalidSpecError, match=fragment):
        render({"containers": containers})


def test_bad_passivation_timeout_is_invalid() -> None:
    with pytest.raises(InvalidSpecError, match="passivationTimeout"):
        render(spec(passivationTimeout="soon"))


POD: dict[str, Any] = {
    "labels": {"team": "carts", "app.kubernetes.io/name": "mine"},
    "annotations": {"prometheus.io/scrape": "true", "larder.dev/journal-hash": "mine"},
    "imagePullSecrets": [{"name": "registry-login"}],
    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "cart-data"}}],
    "nodeSelector": {"disktype": "ssd"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "larder",
                     "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "ScheduleAnyway"}],
    "priorityClassName": "high",
    "securityContext": {"runAsUser": 10001, "fsGroup": 10001},
    "terminationGracePeriodSeconds": 90,
}


def test_pod_fields_are_rendered_into_the_pod_template() -> None:
    template = render(spec(pod=POD)).deployment["spec"]["template"]
    pod = template["spec"]
    for key in ("imagePullSecrets", "nodeSelector", "tolerations", "affinity",
                "topologySpreadConstraints", "priorityClassName"):
        assert pod[key] == POD[key], key
    assert pod["terminationGracePeriodSeconds"] == 90
    # The user's volume comes after the operator's own.
    assert [v["name"] for v in pod["volumes"]] == ["larder-tmp", "data"]
    assert pod["volumes"][1] == POD["volumes"][0]
    # The pod's securityContext is the user's, with RuntimeDefault seccomp kept.
    assert pod["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"}, "runAsUser": 10001, "fsGroup": 10001,
    }
    # Labels and annotations are added; the operator's own win.
    assert template["metadata"]["labels"]["team"] == "carts"
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "cart"
    assert template["metadata"]["labels"]["larder.dev/function"] == "cart"
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert template["metadata"]["annotations"]["larder.dev/journal-hash"] == spec_hash(None)


def test_without_pod_fields_the_grace_period_fits_the_sidecars_shutdown() -> None:
    pod = render(spec()).deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == DEFAULT_TERMINATION_GRACE_SECONDS == 45
    for key in ("imagePullSecrets", "nodeSelector", "tolerations", "affinity",
                "topologySpreadConstraints", "priorityClassName"):
        assert key not in pod, key
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}


def test_a_given_seccomp_profile_wins_on_the_pod_but_not_on_the_sidecar() -> None:
    given = {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}
    pod = render(spec(pod=given)).deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "Unconfined"}
    (sidecar,) = pod["initContainers"]
    assert sidecar["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_a_user_volume_may_not_take_a_reserved_name() -> None:
    with pytest.raises(InvalidSpecError, match=r"spec.pod.volumes\[0\].name='larder-tmp'"):
        render(spec(pod={"volumes": [{"name": "larder-tmp", "emptyDir": {}}]}))


@pytest.mark.parametrize(("replicas", "budget"), [(0, False), (1, False), (2, True), (5, True)])
def test_a_disruption_budget_only_with_more_than_one_replica(replicas: int, budget: bool) -> None:
    children = render(spec(replicas=replicas))
    if not budget:
        assert children.disruption_budget is None
        assert all(c["kind"] != "PodDisruptionBudget" for c in children.in_apply_order())
        return
    pdb = children.disruption_budget
    assert pdb is not None
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["metadata"]["name"] == "cart"
    assert pdb["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"larder.dev/function": "cart"}},
    }
    # Applied after the Deployment whose pods it covers.
    assert children.in_apply_order()[-1] is pdb
