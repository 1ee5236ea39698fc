"""The Helm chart lints, renders and applies to a real API server."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import yaml
from larder_operator.children import ADMIN_PORT, FunctionRef, render_children
from larder_operator.settings import OperatorSettings

from tests.infra.versions import KUBERNETES
from tests.integration.operator.conftest import ROOT, Kubectl

CHART = ROOT / "charts" / "larder"


def helm(helm_binary: Path, *args: str) -> str:
    result = subprocess.run(
        [str(helm_binary), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_chart_lints_renders_and_applies(
    helm_binary: Path, kubectl: Kubectl, crds: None
) -> None:
    helm(helm_binary, "lint", "--strict", str(CHART))
    namespace = f"chart-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", namespace)
    cluster_scoped: set[str] = set()
    try:
        for values in ([], ["--set", "operator.replicas=2", "--set",
                            f"operator.watchNamespaces={{{namespace}}}"]):
            # helm template does not ask the server; tell it which Kubernetes it renders for
            # (the chart needs >= 1.29 for native sidecars).
            rendered = helm(
                helm_binary, "template", "larder", str(CHART), "--namespace", namespace,
                "--include-crds", "--kube-version", KUBERNETES.version.lstrip("v"), *values,
            )
            docs = [d for d in yaml.safe_load_all(rendered) if d]
            cluster_scoped |= {
                f"{d['kind'].lower()}/{d['metadata']['name']}"
                for d in docs
                if d["kind"] in ("ClusterRole", "ClusterRoleBinding")
            }
            deployment = next(d for d in docs if d["kind"] == "Deployment")
            pod = deployment["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            container = pod["containers"][0]
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
            result = kubectl.apply(rendered, namespace)
            assert result.returncode == 0, result.stderr
        kinds = {d["kind"] for d in docs}
        assert {"Role", "RoleBinding", "KopfPeering"} <= kinds
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["LARDER_PEERING_NAME"] == "larder"
        assert env["LARDER_WATCH_NAMESPACES"] == namespace
        assert kubectl.get("deployment", "larder", namespace) is not None
    finally:
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)
        # The namespace takes its objects, not the cluster-wide RBAC: left behind, that
        # blocks a later `helm install larder` on the same API server (the local cluster
        # e2e tests), which will not adopt objects it did not create.
        if cluster_scoped:
            kubectl.run("delete", "--ignore-not-found", *sorted(cluster_scoped), check=False)


def test_notes_say_the_default_image_is_a_placeholder_and_how_to_build_one(
    helm_binary: Path, kubectl: Kubectl, crds: None
) -> None:
    # NOTES are rendered only by install/upgrade: a server-side dry run installs nothing.
    def notes(*values: str) -> str:
        out = helm(
            helm_binary, "--kubeconfig", kubectl.env["KUBECONFIG"], "upgrade", "--install",
            "larder-notes", str(CHART), "--namespace", f"notes-{uuid.uuid4().hex[:6]}",
            "--dry-run=server", *values,
        )
        return out[out.index("NOTES:"):]

    def paragraphs(notes: str) -> list[str]:
        """The first word of each paragraph."""
        return [p.split()[0] for p in notes.split("\n\n") if p.strip()]

    default = notes()
    assert "ghcr.io/larder-dev/larder:0.1.0 is a placeholder" in default, default
    assert "docker build -t <registry>/larder:dev ." in default
    assert "--set image.repository=<registry>/larder --set image.tag=dev" in default
    own = notes("--set", "image.repository=registry.example/larder", "--set", "image.tag=1")
    assert "placeholder" not in own and "Watching: every namespace." in own
    # Each part its own paragraph, placeholder note or not.
    assert paragraphs(default) == ["NOTES:", "Note:", "Watching:", "Next:"], default
    assert paragraphs(own) == ["NOTES:", "Watching:", "Next:"], own


def test_secrets_are_only_read_by_name_in_the_watched_namespaces(helm_binary: Path) -> None:
    # docs/operator.md "RBAC": why `get` on Secrets remains, and why nothing wider may.
    for values, cluster_wide in (([], True),
                                 (["--set", "operator.watchNamespaces={team-a,team-b}"], False)):
        rendered = helm(
            helm_binary, "template", "larder", str(CHART), "--namespace", "larder-system",
            "--kube-version", KUBERNETES.version.lstrip("v"), *values,
        )
        secret_rules = [
            (d["kind"], d["metadata"].get("namespace"), rule)
            for d in yaml.safe_load_all(rendered)
            if d and d["kind"] in ("ClusterRole", "Role")
            for rule in d["rules"]
            if {"secrets", "*"} & set(rule.get("resources", []))
        ]
        expected_rule = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
        if cluster_wide:
            assert secret_rules == [("ClusterRole", None, expected_rule)]
        else:
            assert secret_rules == [("Role", "team-a", expected_rule),
                                    ("Role", "team-b", expected_rule)]


def test_monitoring_scrapes_the_sidecars_admin_port_and_ships_the_dashboard(
    helm_binary: Path, kubectl: Kubectl
) -> None:
    # Off by default: the PodMonitor kind exists only where the Prometheus Operator runs.
    plain = helm(helm_binary, "template", "larder", str(CHART),
                 "--kube-version", KUBERNETES.version.lstrip("v"))
    assert {d["kind"] for d in yaml.safe_load_all(plain) if d}.isdisjoint({"PodMonitor"})
    namespace = f"monitoring-{uuid.uuid4().hex[:6]}"
    rendered = helm(
        helm_binary, "template", "larder", str(CHART), "--namespace", namespace,
        "--kube-version", KUBERNETES.version.lstrip("v"),
        "--set", "monitoring.podMonitor.enabled=true", "--set", "monitoring.dashboard.enabled=true",
        "--set", "monitoring.podMonitor.labels.release=kube-prometheus-stack",
    )
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    monitor = next(d for d in docs if d["kind"] == "PodMonitor")
    dashboard = next(d for d in docs if d["kind"] == "ConfigMap")

    # The monitor selects the pods the operator really creates, on the port the sidecar
    # really names `admin`, where /metrics is served.
    function = render_children(
        FunctionRef(name="cart", namespace="shop", uid="u"),
        {"containers": [{"name": "fn", "image": "example/cart:1"}]},
        None, None, OperatorSettings(sidecar_image="larder:test"),
    ).deployment["spec"]["template"]
    pod_labels = function["metadata"]["labels"]
    ports = {
        port["name"]: port["containerPort"]
        for container in function["spec"].get("initContainers", []) + function["spec"]["containers"]
        for port in container.get("ports", [])
    }
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [expression] = monitor["spec"]["selector"]["matchExpressions"]
    assert expression["operator"] == "Exists" and expression["key"] in pod_labels
    assert monitor["spec"]["podTargetLabels"] == [expression["key"]]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert ports[endpoint["port"]] == ADMIN_PORT and endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}

    # The dashboard's ConfigMap carries the JSON file unchanged, with Grafana's label, and
    # the API server takes it.
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(dashboard["data"]["larder.json"])
    assert shipped == json.loads((CHART / "dashboards" / "larder.json").read_text())
    kubectl.run("create", "namespace", namespace)
    try:
        result = kubectl.apply(yaml.safe_dump(dashboard), namespace)
        assert result.returncode == 0, result.stderr
        stored = kubectl.get("configmap", dashboard["metadata"]["name"], namespace)
        assert stored is not None
        assert json.loads(stored["data"]["larder.json"]) == shipped
    finally:
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)
