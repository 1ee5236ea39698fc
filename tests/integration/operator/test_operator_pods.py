"""Pods on the real API server: PodSecurity `restricted`, spec.pod, the PodDisruptionBudget.

The controller-manager runs (it creates ReplicaSets and their pods), no scheduler or kubelet:
pods exist as objects and stay Pending, which is all admission needs to be seen.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.integration.operator.conftest import ROOT, Kubectl, wait_for
from tests.integration.operator.test_operator_on_apiserver import apply_ok, condition
from tests.integration.operator.test_operator_status_events import _event, _ready_reason

RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
# What `restricted` asks of a container (samples/*/k8s say the same).
SECURE = """      securityContext:
        runAsNonRoot: true
        allowPrivilegeEscalation: false
        capabilities: {drop: [ALL]}
        seccompProfile: {type: RuntimeDefault}
"""


def _function(name: str, container: str = "", spec: str = "") -> str:
    return f"""
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {{name: {name}}}
spec:
{spec}  containers:
    - name: fn
      image: example/cart:1
{container}"""


def _pods(kubectl: Kubectl, function: str, namespace: str) -> list[dict[str, Any]]:
    out = kubectl.run(
        "get", "pods", "-n", namespace, "-l", f"larder.dev/function={function}", "-o", "json"
    )
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _n_pods(kubectl: Kubectl, function: str, namespace: str, n: int) -> list[dict[str, Any]]:
    """Waits until ``function`` has ``n`` pods; returns them."""

    def probe() -> list[dict[str, Any]] | None:
        pods = _pods(kubectl, function, namespace)
        return pods if len(pods) == n else None

    return wait_for(f"{n} pods of {function}", probe)


def _restrict(kubectl: Kubectl, namespace: str) -> None:
    kubectl.run("label", "namespace", namespace, RESTRICTED)


def _replica_failure(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any] | None:
    return condition(kubectl.get("deployment", name, namespace), "ReplicaFailure")


def test_pods_a_restricted_namespace_refuses_are_the_ready_reason(
    kubectl: Kubectl, namespace: str
) -> None:
    _restrict(kubectl, namespace)
    apply_ok(kubectl, _function("cart"), namespace)
    ready = _ready_reason(kubectl, "cart", namespace, "PodCreationFailed")
    assert ready["status"] == "False"
    # The ReplicaSet's words, carried by the Deployment: what is violated and by whom.
    assert 'violates PodSecurity "restricted:latest"' in ready["message"], ready
    assert 'container "fn" must set securityContext.allowPrivilegeEscalation=false' in (
        ready["message"]
    ), ready
    # The injected sidecar passes on its own: only the user's container is named.
    assert "larder-sidecar" not in ready["message"], ready
    assert "kubectl describe rs -n " + namespace in ready["message"]
    warning = _event(kubectl, "StatefulFunction", "cart", namespace, "Warning",
                     "PodCreationFailed")
    assert "violates PodSecurity" in warning["message"]
    assert _pods(kubectl, "cart", namespace) == []

    # Fixed as the samples do it: the pod is created, and waits for a node like any other.
    apply_ok(kubectl, _function("cart", SECURE), namespace)
    _n_pods(kubectl, "cart", namespace, 1)

    def rolled() -> dict[str, Any] | None:
        deployment = kubectl.get("deployment", "cart", namespace) or {}
        status = deployment.get("status") or {}
        fresh = status.get("observedGeneration") == deployment["metadata"]["generation"]
        return deployment if fresh and status.get("updatedReplicas") == 1 else None

    wait_for("the Deployment to see its new pod", rolled)
    # The old ReplicaSet keeps trying (and failing) until the new pod is ready, and the
    # Deployment still carries its failure; the function no longer blames the spec.
    assert _replica_failure(kubectl, "cart", namespace) is not None
    _ready_reason(kubectl, "cart", namespace, "PodsNotReady")
    deadline = time.monotonic() + 6  # longer than the operator's resync interval (5 s)
    while time.monotonic() < deadline:
        ready = condition(kubectl.get("statefulfunction", "cart", namespace), "Ready")
        assert ready is not None and ready["reason"] == "PodsNotReady", ready
        time.sleep(0.5)


def test_a_deployment_past_its_progress_deadline_is_the_ready_reason(
    kubectl: Kubectl, namespace: str
) -> None:
    apply_ok(kubectl, _function("cart"), namespace)
    wait_for("the Deployment", lambda: kubectl.get("deployment", "cart", namespace))
    # No kubelet here, so the pod never becomes ready; a short deadline (a field the
    # operator does not set, so its applies leave it) makes the controller give up soon.
    kubectl.run("patch", "deployment", "cart", "-n", namespace, "--type=merge",
                "-p", '{"spec": {"progressDeadlineSeconds": 2}}')
    ready = _ready_reason(kubectl, "cart", namespace, "ProgressDeadlineExceeded")
    assert "has timed out progressing" in ready["message"], ready
    assert f"kubectl get pods -n {namespace} -l larder.dev/function=cart" in ready["message"]
    _event(kubectl, "StatefulFunction", "cart", namespace, "Warning", "ProgressDeadlineExceeded")


def _manifests(directory: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / directory).glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


@pytest.mark.parametrize(
    "directory", ["samples/shopping-cart/k8s", "samples/turkey/k8s", "operator/examples"]
)
def test_the_samples_manifests_are_admitted_in_a_restricted_namespace(
    kubectl: Kubectl, namespace: str, directory: str
) -> None:
    _restrict(kubectl, namespace)
    docs = _manifests(directory)
    (function,) = [d for d in docs if d["kind"] == "StatefulFunction"]
    name, replicas = function["metadata"]["name"], int(function["spec"]["replicas"])
    # As written: the Journal names a Cassandra that is not there, which blocks nothing.
    apply_ok(kubectl, yaml.safe_dump_all(docs), namespace)

    pods = _n_pods(kubectl, name, namespace, replicas)
    assert _replica_failure(kubectl, name, namespace) is None
    spec = pods[0]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["larder-sidecar"]
    for container in (*spec["initContainers"], *spec["containers"]):
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    reason = condition(kubectl.get("statefulfunction", name, namespace), "Ready")
    assert reason is not None and reason["reason"] != "PodCreationFailed", reason


@pytest.fixture
def priority_class(kubectl: Kubectl) -> Iterator[str]:
    name = f"larder-test-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "priorityclass", name, "--value=1000")
    yield name
    kubectl.run("delete", "priorityclass", name, "--wait=false", check=False)


POD_SPEC = """  pod:
    labels: {{team: carts}}
    annotations: {{prometheus.io/scrape: "true"}}
    imagePullSecrets: [{{name: registry-login}}]
    volumes: [{{name: data, emptyDir: {{sizeLimit: 1Gi}}}}]
    nodeSelector: {{disktype: ssd}}
    tolerations: [{{key: dedicated, operator: Equal, value: larder, effect: NoSchedule}}]
    affinity:
      podAntiAffinity:
        preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector: {{matchLabels: {{larder.dev/function: cart}}}}
    topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: ScheduleAnyway
        labelSelector: {{matchLabels: {{larder.dev/function: cart}}}}
    priorityClassName: {priority}
    securityContext: {{runAsUser: 10001, fsGroup: 10001}}
    terminationGracePeriodSeconds: 90
  replicas: 2
"""


def _budget(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any] | None:
    return kubectl.get("poddisruptionbudget", name, namespace)


def test_pod_fields_reach_the_pods_and_a_budget_follows_the_replicas(
    kubectl: Kubectl, namespace: str, priority_class: str
) -> None:
    mount = "      volumeMounts: [{name: data, mountPath: /data}]\n"
    apply_ok(kubectl, _function("cart", mount, POD_SPEC.format(priority=priority_class)),
             namespace)
    pods = _n_pods(kubectl, "cart", namespace, 2)
    pod = pods[0]
    assert pod["metadata"]["labels"]["team"] == "carts"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    spec = pod["spec"]
    assert spec["imagePullSecrets"] == [{"name": "registry-login"}]
    assert {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}} in spec["volumes"]
    assert spec["nodeSelector"] == {"disktype": "ssd"}
    assert {"key": "dedicated", "operator": "Equal", "value": "larder",
            "effect": "NoSchedule"} in spec["tolerations"]
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert spec["priorityClassName"] == priority_class
    assert spec["priority"] == 1000  # resolved by the Priority admission plugin
    assert spec["securityContext"] == {
        "runAsUser": 10001, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["terminationGracePeriodSeconds"] == 90

    budget = wait_for("the PodDisruptionBudget", lambda: _budget(kubectl, "cart", namespace))
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == {"matchLabels": {"larder.dev/function": "cart"}}
    (owner,) = budget["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == (
        "StatefulFunction", "cart", True,
    )
    # The disruption controller counts the pods it covers.
    wait_for("the budget to see both pods",
             lambda: (_budget(kubectl, "cart", namespace) or {}).get("status", {})
             .get("expectedPods") == 2)

    kubectl.run("scale", "statefulfunction", "cart", "-n", namespace, "--replicas=1")
    wait_for("the budget to go", lambda: _budget(kubectl, "cart", namespace) is None)
    kubectl.run("scale", "statefulfunction", "cart", "-n", namespace, "--replicas=3")
    wait_for("the budget to return", lambda: _budget(kubectl, "cart", namespace))


def test_without_pod_fields_the_grace_period_is_45_seconds(
    kubectl: Kubectl, namespace: str
) -> None:
    apply_ok(kubectl, _function("cart"), namespace)
    function = kubectl.get("statefulfunction", "cart", namespace)
    assert function is not None
    # Defaulted by the CRD, so `kubectl get -o yaml` shows what the pods get.
    assert function["spec"]["pod"] == {"terminationGracePeriodSeconds": 45}
    deployment = wait_for("the Deployment", lambda: kubectl.get("deployment", "cart", namespace))
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 45
    # One replica: no budget (one unavailable pod of one protects nothing).
    _ready_reason(kubectl, "cart", namespace, "PodsNotReady")
    assert _budget(kubectl, "cart", namespace) is None


def test_a_budget_of_the_same_name_not_owned_by_the_function_is_kept(
    kubectl: Kubectl, namespace: str
) -> None:
    apply_ok(kubectl, """
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: cart}
spec: {minAvailable: 1, selector: {matchLabels: {team: carts}}}
""", namespace)
    apply_ok(kubectl, _function("cart"), namespace)
    _ready_reason(kubectl, "cart", namespace, "PodsNotReady")
    kept = _budget(kubectl, "cart", namespace)
    assert kept is not None and kept["spec"]["minAvailable"] == 1


@pytest.mark.parametrize(
    ("pod", "fragment"),
    [
        ("{labels: {larder.dev/function: other}}", "must not set larder.dev/function"),
        ("{volumes: [{name: larder-tmp, emptyDir: {}}]}", "reserved for the volumes"),
        ("{tolerations: [{key: a, operator: Maybe}]}", 'Unsupported value: "Maybe"'),
        ("{terminationGracePeriodSeconds: -1}", "should be greater than or equal to 0"),
        ("{topologySpreadConstraints: [{maxSkew: 1}]}", "topologyKey: Required value"),
    ],
)
def test_the_crd_refuses_bad_pod_fields(
    kubectl: Kubectl, namespace: str, pod: str, fragment: str
) -> None:
    result = kubectl.apply(_function("cart", spec=f"  pod: {pod}\n"), namespace)
    assert result.returncode != 0
    assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("field", "fragment"),
    [
        ("spec.pod", "Fields of the pods' template"),
        ("spec.pod.terminationGracePeriodSeconds", "hands its shards over"),
        ("spec.pod.affinity", "too large to copy"),
        ("spec.pod.volumes", "Only `name` is checked here"),
        ("spec.pod.tolerations.effect", "The taint effect to match"),
    ],
)
def test_kubectl_explain_describes_the_pod_fields(
    kubectl: Kubectl, crds: None, field: str, fragment: str
) -> None:
    def explained() -> str | None:
        out = kubectl.run("explain", f"statefulfunction.{field}", check=False)
        # Descriptions are folded over lines.
        text = " ".join(out.split())
        return text if fragment in text else None

    wait_for(f"`kubectl explain` of {field}", explained, timeout=30)

