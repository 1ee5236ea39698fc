"""The operator as a real process against a real API server, plus kubectl helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from tests.infra.kube import KubeControlPlane
from tests.infra.process import free_port
from tests.infra.versions import KUBERNETES

ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last saw {last!r}")


@dataclass(frozen=True)
class Kubectl:
    env: dict[str, str]

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            ["kubectl", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result.stdout if result.returncode == 0 else result.stderr

    def apply(
        self, manifest: str, namespace: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        args = ["kubectl", "apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        return subprocess.run(
            args, input=manifest, capture_output=True, text=True, env=self.env, timeout=60,
            check=False,
        )

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        result = subprocess.run(
            ["kubectl", "get", kind, name, "-n", namespace, "-o", "json"],
            capture_output=True, text=True, env=self.env, timeout=60, check=False,
        )
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(f"kubectl get {kind} {name} failed: {result.stderr}")
        obj: dict[str, Any] = json.loads(result.stdout)
        return obj

    def events(self, kind: str, name: str, namespace: str) -> list[dict[str, Any]]:
        """The Events about one object, oldest first."""
        out = self.run(
            "get", "events", "-n", namespace, "-o", "json", "--field-selector",
            f"involvedObject.kind={kind},involvedObject.name={name}",
        )
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return sorted(items, key=lambda e: e.get("eventTime") or e.get("lastTimestamp") or "")


@pytest.fixture(scope="session")
def kubectl(kube: KubeControlPlane) -> Kubectl:
    return Kubectl(env={**os.environ, **kube.env})


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    kubectl.run("apply", "--server-side", "-f", str(ROOT / "crds"))

    def established() -> bool:
        # Not `kubectl wait`: it fails at once while a new CRD has no conditions yet.
        out = kubectl.run(
            "get", "crd", "statefulfunctions.larder.dev", "journals.larder.dev", "-o",
            'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Established")].status}'
            " {end}",
        )
        return out.split() == ["True", "True"]

    wait_for("the CRDs to be established", established)


# Cluster-scoped RBAC objects are named after the release: not "larder", which the chart
# test installs (and so rebinds) in namespaces of its own.
_RBAC_RELEASE = "larder-rbac-under-test"
_RBAC_NAMESPACE = "larder-rbac-under-test"


@pytest.fixture(scope="session")
def chart_rbac_kubeconfig(
    kube: KubeControlPlane,
    kubectl: Kubectl,
    helm_binary: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A kubeconfig acting as the chart's operator ServiceAccount with the chart's own RBAC
    (cluster-wide mode), so every operator test proves the chart grants what it calls."""
    helm = subprocess.run(
        [
            str(helm_binary), "template", _RBAC_RELEASE, str(ROOT / "charts" / "larder"),
            "--namespace", _RBAC_NAMESPACE,
            "--kube-version", KUBERNETES.version.lstrip("v"),
            "--show-only", "templates/serviceaccount.yaml",
            "--show-only", "templates/rbac.yaml",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert helm.returncode == 0, f"helm template failed: {helm.stderr}"
    rendered = helm.stdout
    kubectl.run("create", "namespace", _RBAC_NAMESPACE)
    kubectl.run("apply", "-n", _RBAC_NAMESPACE, "-f", "-", stdin=rendered)
    token = kubectl.run(
        "create", "token", _RBAC_RELEASE, "-n", _RBAC_NAMESPACE, "--duration=24h"
    ).strip()
    config = yaml.safe_load(kube.kubeconfig.read_text())
    user = config["contexts"][0]["context"]["user"]
    config["users"] = [{"name": user, "user": {"token": token}}]
    path = tmp_path_factory.mktemp("operator-rbac") / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


class OperatorProcess:
    """``larder-operator`` as a subprocess appending to one log; stoppable and restartable,
    so a test can see what the cluster does while the operator is down."""

    def __init__(self, env: dict[str, str], log: Path, port: int) -> None:
        self.env = env
        self.log = log
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = Path(sys.executable).with_name("larder-operator")
        with self.log.open("ab") as out:
            proc = subprocess.Popen(
                [str(exe)], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self._proc = proc

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"larder-operator exited with {proc.returncode}:\n{self.log.read_text()}"
                )
            try:
                url = f"http://127.0.0.1:{self._port}/healthz"
                with urllib.request.urlopen(url, timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for("the operator's /healthz", healthy, timeout=60)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The operator is down inside the block and running again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()


# Package scope: the operator watches every namespace, so it must stop with this tier's
# tests; alive for the whole session it would also reconcile (with its test sidecar
# image) the functions of later tiers sharing the API server, such as tests/e2e/cluster.
@pytest.fixture(scope="package")
def operator_process(
    kube: KubeControlPlane,
    crds: None,
    chart_rbac_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """``larder-operator`` with short intervals, running with the chart's RBAC."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    port = free_port()
    env = {
        **os.environ,
        **kube.env,
        "KUBECONFIG": str(chart_rbac_kubeconfig),
        "LARDER_SIDECAR_IMAGE": "larder:test",
        "LARDER_RESYNC_INTERVAL": "5",
        "LARDER_JOURNAL_CHECK_INTERVAL": "3",
        "LARDER_JOURNAL_CHECK_TIMEOUT": "3",
        # Shard maps asked every second, a disagreement reported after 3 s
        # (test_operator_shard_map.py).
        "LARDER_SHARD_MAP_INTERVAL": "1",
        "LARDER_SHARD_MAP_TIMEOUT": "1",
        "LARDER_SHARD_MAP_GRACE": "3",
        "LARDER_OPERATOR_HEALTH_HOST": "127.0.0.1",
        "LARDER_OPERATOR_HEALTH_PORT": str(port),
        "LARDER_LOG_LEVEL": "DEBUG",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    operator = OperatorProcess(env, log, port)
    try:
        operator.start()
        yield operator
    finally:
        operator.stop()
        keep = ROOT / "test-logs" / "operator"
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "operator.log").write_bytes(log.read_bytes())
    # A call the chart's RBAC does not grant may only be retried or logged (an Event, a
    # watch), so no test would notice; the log does.
    denied = [line for line in log.read_text(errors="replace").splitlines() if _rbac_denied(line)]
    assert not denied, "the chart's RBAC refused the operator:\n" + "\n".join(denied[:5])


def _rbac_denied(line: str) -> bool:
    # The authorizer's wording (`... is forbidden: User "<name>" cannot <verb> ...`); a
    # namespace being deleted also answers 403, worded otherwise, which is not RBAC.
    return "is forbidden: User " in line


@pytest.fixture
def namespace(kubectl: Kubectl, operator_process: OperatorProcess) -> Iterator[str]:
    name = f"op-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)
