"""The operator against a real kube-apiserver + controller-manager: children, status, GC."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.integration.operator.conftest import Kubectl, wait_for

JOURNAL = """
apiVersion: larder.dev/v1alpha1
kind: Journal
metadata: {name: main}
spec: {type: InMemory}
"""


def function(name: str, journal: str | None = "main", image: str = "example/cart:1") -> str:
    journal_line = f"  journal: {journal}\n" if journal else ""
    return f"""
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {{name: {name}}}
spec:
{journal_line}  passivationTimeout: 30s
  containers:
    - name: fn
      image: {image}
"""


def _getter(
    kubectl: Kubectl, kind: str, name: str, namespace: str
) -> Callable[[], dict[str, Any] | None]:
    return lambda: kubectl.get(kind, name, namespace)


def _gone(getter: Callable[[], dict[str, Any] | None]) -> Callable[[], bool]:
    return lambda: getter() is None


def apply_ok(kubectl: Kubectl, manifest: str, namespace: str) -> None:
    result = kubectl.apply(manifest, namespace)
    assert result.returncode == 0, result.stderr


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or ():
        if cond["type"] == type_:
            return dict(cond)
    return None


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_function_gets_its_children_status_and_printer_columns(
    kubectl: Kubectl, namespace: str
) -> None:
    apply_ok(kubectl, JOURNAL + "---" + function("cart"), namespace)
    deployment = wait_for(
        "the Deployment", lambda: kubectl.get("deployment", "cart", namespace)
    )
    fn = kubectl.get("statefulfunction", "cart", namespace)
    assert fn is not None
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "StatefulFunction", "cart", fn["metadata"]["uid"], True,
    )
    pod = deployment["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["name"] == "larder-sidecar"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == "larder:test"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = env_of(sidecar)
    assert env["USER_FUNCTION_PORT"] == "8080"
    assert env["LARDER_JOURNAL_TYPE"] == "memory"
    assert env["LARDER_PASSIVATION_TIMEOUT"] == "30"
    assert env_of(pod["containers"][0])["PORT"] == "8080"
    for kind, name in [
        ("service", "cart"),
        ("service", "cart-internal"),
        ("serviceaccount", "cart-larder"),
        ("role", "cart-larder"),
        ("rolebinding", "cart-larder"),
    ]:
        child = wait_for(f"{kind}/{name}", _getter(kubectl, kind, name, namespace))
        assert child["metadata"]["ownerReferences"][0]["uid"] == fn["metadata"]["uid"]
    headless = kubectl.get("service", "cart-internal", namespace)
    assert headless is not None and headless["spec"]["clusterIP"] == "None"

    # No kubelet here: pods never become ready, and status says exactly that.
    def not_ready() -> dict[str, Any] | None:
        obj = kubectl.get("statefulfunction", "cart", namespace)
        ready = condition(obj, "Ready")
        return obj if ready and ready["reason"] == "PodsNotReady" else None

    fn = wait_for("Ready=False/PodsNotReady", not_ready)
    hint = condition(fn, "Ready")["message"]  # type: ignore[index]
    assert f"kubectl get pods -n {namespace} -l larder.dev/function=cart" in hint, hint
    assert condition(fn, "JournalReady") is not None
    assert condition(fn, "JournalReady")["status"] == "True"  # type: ignore[index]
    assert fn["status"]["selector"] == "larder.dev/function=cart"
    assert fn["status"]["address"] == f"cart.{namespace}.svc:9000"
    assert fn["status"]["observedGeneration"] == fn["metadata"]["generation"]

    table = kubectl.run("get", "statefulfunctions", "-n", namespace)
    header = table.splitlines()[0].split()
    # MAP: how many ready pods agree on the shard map (status.shardMap.agreement).
    assert header[:7] == ["NAME", "READY", "REASON", "REPLICAS", "MAP", "JOURNAL", "AGE"]
    assert table.splitlines()[1].split()[:3] == ["cart", "False", "PodsNotReady"]
    assert "cart" in kubectl.run("get", "sf", "-n", namespace)
    assert "main" in kubectl.run("get", "jn", "-n", namespace)


def test_scale_update_drift_and_garbage_collection(kubectl: Kubectl, namespace: str) -> None:
    apply_ok(kubectl, JOURNAL + "---" + function("cart"), namespace)
    wait_for("the Deployment", lambda: kubectl.get("deployment", "cart", namespace))

    kubectl.run("scale", "statefulfunction", "cart", "--replicas=3", "-n", namespace)
    wait_for(
        "the Deployment scaled to 3",
        lambda: (kubectl.get("deployment", "cart", namespace) or {})["spec"]["replicas"] == 3,
    )
    scale = json.loads(
        kubectl.run("get", "--raw", f"/apis/larder.dev/v1alpha1/namespaces/{namespace}"
                    "/statefulfunctions/cart/scale")
    )
    assert scale["spec"]["replicas"] == 3
    assert scale["status"]["selector"] == "larder.dev/function=cart"

    apply_ok(kubectl, function("cart", image="example/cart:2"), namespace)

    def rolled() -> bool:
        dep = kubectl.get("deployment", "cart", namespace) or {}
        return bool(dep["spec"]["template"]["spec"]["containers"][0]["image"] == "example/cart:2")

    wait_for("the pod template to roll to example/cart:2", rolled)

    # Changing the Journal rolls the pods too (its spec hash is a template annotation).
    def journal_hash() -> str:
        dep = kubectl.get("deployment", "cart", namespace) or {}
        return str(dep["spec"]["template"]["metadata"]["annotations"]["larder.dev/journal-hash"])

    before = journal_hash()
    apply_ok(
        kubectl,
        """
apiVersion: larder.dev/v1alpha1
kind: Journal
metadata: {name: main}
spec:
  type: Cassandra
  cassandra: {contactPoints: [127.0.0.1], port: 1}
""",
        namespace,
    )
    wait_for("a new journal hash on the pod template", lambda: journal_hash() != before)
    env = env_of(
        (kubectl.get("deployment", "cart", namespace) or {})["spec"]["template"]["spec"][
            "initContainers"
        ][0]
    )
    assert env["LARDER_JOURNAL_TYPE"] == "cassandra"
    assert env["LARDER_JOURNAL_CASSANDRA_PORT"] == "1"

    # Drift: a deleted child comes back.
    kubectl.run("delete", "service", "cart", "-n", namespace)
    wait_for("the Service to be recreated", lambda: kubectl.get("service", "cart", namespace))
    kubectl.run("delete", "rolebinding", "cart-larder", "-n", namespace)
    wait_for(
        "the RoleBinding to be recreated by the periodic resync",
        lambda: kubectl.get("rolebinding", "cart-larder", namespace),
        timeout=30,
    )

    kubectl.run("delete", "statefulfunction", "cart", "-n", namespace, "--wait=false")
    for kind, name in [("deployment", "cart"), ("service", "cart"), ("role", "cart-larder")]:
        wait_for(
            f"{kind}/{name} to be garbage-collected",
            _gone(_getter(kubectl, kind, name, namespace)),
            timeout=90,
        )


def test_missing_journal_is_reported_then_resolved(kubectl: Kubectl, namespace: str) -> None:
    apply_ok(kubectl, function("cart", journal="later"), namespace)

    def missing() -> dict[str, Any] | None:
        obj = kubectl.get("statefulfunction", "cart", namespace)
        cond = condition(obj, "JournalReady")
        return cond if cond and cond["reason"] == "JournalMissing" else None

    cond = wait_for("JournalReady=False/JournalMissing", missing)
    assert cond["status"] == "False"
    assert "Journal 'later' does not exist" in cond["message"]
    assert kubectl.get("deployment", "cart", namespace) is None
    # Nothing is built, so there is no Service to address.
    status = (kubectl.get("statefulfunction", "cart", namespace) or {})["status"]
    assert "address" not in status, status

    def described_event() -> str | None:
        text = kubectl.run("describe", "statefulfunction", "cart", "-n", namespace)
        events = text.partition("Events:")[2]
        return text if "JournalMissing" in events else None

    described = wait_for("a JournalMissing Event in kubectl describe", described_event)
    assert "does not exist" in described.partition("Events:")[2]

    apply_ok(kubectl, JOURNAL.replace("name: main", "name: later"), namespace)
    wait_for("the Deployment once the Journal exists",
             lambda: kubectl.get("deployment", "cart", namespace))
    wait_for(
        "JournalReady=True",
        lambda: (condition(kubectl.get("statefulfunction", "cart", namespace), "JournalReady")
                 or {}).get("status") == "True",
    )
    fn = kubectl.get("statefulfunction", "cart", namespace)
    assert fn is not None and fn["status"]["address"] == f"cart.{namespace}.svc:9000"


def test_missing_secret_is_reported(kubectl: Kubectl, namespace: str) -> None:
    journal = """
apiVersion: larder.dev/v1alpha1
kind: Journal
metadata: {name: main}
spec:
  type: Cassandra
  cassandra:
    contactPoints: [127.0.0.1]
    port: 1
    credentialsSecret: {name: cassandra-login}
"""
    apply_ok(kubectl, journal + "---" + function("cart"), namespace)

    def secret_missing() -> dict[str, Any] | None:
        cond = condition(kubectl.get("statefulfunction", "cart", namespace), "JournalReady")
        return cond if cond and cond["reason"] == "SecretMissing" else None

    assert "cassandra-login" in wait_for("JournalReady=False/SecretMissing", secret_missing)[
        "message"
    ]
    assert kubectl.get("deployment", "cart", namespace) is None
    jn = wait_for(
        "the Journal's own SecretMissing",
        lambda: (condition(kubectl.get("journal", "main", namespace), "Ready") or {}).get(
            "reason"
        ) == "SecretMissing",
    )
    assert jn


INVALID = {
    "no containers": (
        """
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {name: bad}
spec: {containers: []}
""",
        "at least one container",
    ),
    "port clash": (
        """
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {name: bad}
spec:
  containers:
    - {name: fn, image: x, ports: [{containerPort: 9603}]}
""",
        "reserved for the Larder sidecar",
    ),
    "PORT of the first container clashes": (
        """
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {name: bad}
spec:
  containers:
    - {name: fn, image: x, env: [{name: PORT, value: "9000"}]}
""",
        "the environment variable PORT must not be 9000, 9603 or 9604",
    ),
    "PORT of another container clashes": (
        """
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {name: bad}
spec:
  containers:
    - {name: fn, image: x}
    - {name: helper, image: helper, env: [{name: A, value: "1"}, {name: PORT, value: "9604"}]}
""",
        "the environment variable PORT must not be 9000, 9603 or 9604",
    ),
    "tracing endpoint without a scheme": (
        """
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {name: bad}
spec:
  containers: [{name: fn, image: x}]
  observability: {tracing: {endpoint: "collector:4317"}}
""",
        "spec.observability.tracing.endpoint: Invalid value",
    ),
    "tracing ratio over 1": (
        """
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {name: bad}
spec:
  containers: [{name: fn, image: x}]
  observability: {tracing: {endpoint: "http://c:4317", ratio: 5}}
""",
        "spec.observability.tracing.ratio: Invalid value",
    ),
    "unknown sampler": (
        """
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {name: bad}
spec:
  containers: [{name: fn, image: x}]
  observability: {tracing: {sampler: sometimes}}
""",
        'Unsupported value: "sometimes"',
    ),
    "unknown journal type": (
        """
apiVersion: larder.dev/v1alpha1
kind: Journal
metadata: {name: bad}
spec: {type: Redis}
""",
        'Unsupported value: "Redis"',
    ),
    "cassandra without settings": (
        """
apiVersion: larder.dev/v1alpha1
kind: Journal
metadata: {name: bad}
spec: {type: Cassandra}
""",
        "spec.cassandra is required when spec.type is Cassandra",
    ),
    "both service and contact points": (
        """
apiVersion: larder.dev/v1alpha1
kind: Journal
metadata: {name: bad}
spec:
  type: Cassandra
  cassandra: {service: cassandra, contactPoints: [a]}
""",
        "exactly one of service or contactPoints",
    ),
}


def test_invalid_resources_are_rejected_with_readable_messages(
    kubectl: Kubectl, namespace: str
) -> None:
    failures = []
    for case, (manifest, message) in INVALID.items():
        result = kubectl.apply(manifest, namespace)
        if result.returncode == 0 or message not in result.stderr:
            failures.append(f"{case}: rc={result.returncode} {result.stderr.strip()}")
    assert failures == []


def test_a_function_with_tracing_settings_is_accepted(kubectl: Kubectl, namespace: str) -> None:
    # Every field of spec.observability.tracing, as the schema allows it (a server-side
    # dry run: the API server validates against the CRD and stores nothing).
    out = kubectl.run(
        "apply", "--dry-run=server", "-n", namespace, "-o", "json", "-f", "-",
        stdin="""
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {name: traced}
spec:
  containers: [{name: fn, image: x}]
  observability:
    tracing:
      {enabled: true, endpoint: "https://collector.obs:4317", sampler: traceidratio, ratio: 0.25}
""",
    )
    assert json.loads(out)["spec"]["observability"]["tracing"] == {
        "enabled": True,
        "endpoint": "https://collector.obs:4317",
        "sampler": "traceidratio",
        "ratio": 0.25,
    }
