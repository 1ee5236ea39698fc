"""The private control plane serves CRDs and runs its controllers (Deployments, GC)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.infra.kube import KubeControlPlane
from tests.infra.provision import installed
from tests.infra.versions import KUBERNETES

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.larder.dev
spec:
  group: smoke.larder.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {type: integer}
"""

WIDGET = """
apiVersion: smoke.larder.dev/v1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {size: 3}
"""

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      containers: [{name: main, image: example.invalid/smoke:1}]
"""


def kubectl(kube: KubeControlPlane, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", *args],
        input=stdin,
        env=kube.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def kubectl_json(kube: KubeControlPlane, *args: str) -> Any:
    return json.loads(kubectl(kube, *args, "-o", "json"))


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    # The controllers act asynchronously; there is no watch to await through kubectl
    # for "some ReplicaSet exists", so the state is polled until a deadline.
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {timeout}s")
        time.sleep(0.5)


def test_connection_details(kube: KubeControlPlane) -> None:
    assert kube.server.startswith("https://127.0.0.1:")
    assert isinstance(kube.kubeconfig, Path)


def test_env_runs_the_provisioned_kubectl(kube: KubeControlPlane) -> None:
    # A fresh machine has no kubectl; the one on the env's PATH comes from the cache.
    found = shutil.which("kubectl", path=kube.env["PATH"])
    assert found == str(installed("kubectl") / "bin" / "kubectl")
    assert kubectl_json(kube, "get", "namespace", "default")["metadata"]["name"] == "default"
    assert kube.env["KUBECONFIG"] == str(kube.kubeconfig)
    assert "ok" in kubectl(kube, "get", "--raw", "/readyz")


def test_servers_and_kubectl_report_the_pinned_release(kube: KubeControlPlane) -> None:
    # Built from the module proxy without version linker flags they would say
    # v0.0.0-master+$Format:%H$: helm refuses charts with a kubeVersion range and
    # `kubectl version` exits 1 on it.
    major, minor = KUBERNETES.version.removeprefix("v").split(".")[:2]
    server = json.loads(kubectl(kube, "get", "--raw", "/version"))
    assert (server["gitVersion"], server["major"], server["minor"]) == (
        KUBERNETES.version,
        major,
        minor,
    )
    assert server["gitTreeState"] == "clean"
    both = kubectl_json(kube, "version")
    assert both["clientVersion"]["gitVersion"] == KUBERNETES.version
    assert both["serverVersion"]["gitVersion"] == KUBERNETES.version
    for binary in ("kube-controller-manager", "kube-scheduler"):
        done = subprocess.run(
            [str(installed("kube") / "bin" / binary), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.split() == ["Kubernetes", KUBERNETES.version]


def test_crd_and_custom_resource(kube: KubeControlPlane) -> None:
    kubectl(kube, "apply", "-f", "-", stdin=CRD)
    kubectl(
        kube, "wait", "--for=condition=Established", "crd/widgets.smoke.larder.dev", "--timeout=60s"
    )
    kubectl(kube, "apply", "-f", "-", stdin=WIDGET)
    widget = kubectl_json(kube, "get", "widget", "w1", "-n", "default")
    assert widget["spec"] == {"size": 3}


def test_deployment_creates_replicaset_and_pods_then_gc(kube: KubeControlPlane) -> None:
    kubectl(kube, "apply", "-f", "-", stdin=DEPLOYMENT)

    def replica_sets() -> list[Any]:
        items: list[Any] = kubectl_json(kube, "get", "rs", "-n", "default", "-l", "app=smoke")[
            "items"
        ]
        return items

    def pods() -> list[Any]:
        items: list[Any] = kubectl_json(kube, "get", "pods", "-n", "default", "-l", "app=smoke")[
            "items"
        ]
        return items

    eventually(lambda: len(replica_sets()) == 1, 60, "one ReplicaSet created")
    eventually(lambda: len(pods()) == 2, 60, "two Pods created")
    rs = replica_sets()[0]
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"

    kubectl(kube, "delete", "deployment", "smoke", "-n", "default")
    kubectl(
        kube,
        "wait",
        "--for=delete",
        f"rs/{rs['metadata']['name']}",
        "-n",
        "default",
        "--timeout=60s",
    )
    eventually(lambda: pods() == [], 60, "Pods garbage-collected")
