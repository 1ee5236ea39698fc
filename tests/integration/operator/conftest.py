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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.infra.kube import KubeControlPlane
from tests.infra.process import free_port

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


@pytest.fixture(scope="session")
def kubectl(kube: KubeControlPlane) -> Kubectl:
    return Kubectl(env={**os.environ, **kube.env})


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    kubectl.run("apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl.run(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/statefulfunctions.larder.dev", "crd/journals.larder.dev",
    )


@pytest.fixture(scope="session")
def operator_process(
    kube: KubeControlPlane, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """``larder-operator`` as a subprocess with short intervals; yields its log file."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    port = free_port()
    env = {
        **os.environ,
        **kube.env,
        "LARDER_SIDECAR_IMAGE": "larder:test",
        "LARDER_RESYNC_INTERVAL": "5",
        "LARDER_JOURNAL_CHECK_INTERVAL": "3",
        "LARDER_JOURNAL_CHECK_TIMEOUT": "3",
        "LARDER_OPERATOR_HEALTH_HOST": "127.0.0.1",
        "LARDER_OPERATOR_HEALTH_PORT": str(port),
        "LARDER_LOG_LEVEL": "DEBUG",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    exe = Path(sys.executable).with_name("larder-operator")
    with log.open("wb") as out:
        proc = subprocess.Popen([str(exe)], env=env, stdout=out, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"larder-operator exited with {proc.returncode}:\n{log.read_text()}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for("the operator's /healthz", healthy, timeout=60)
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        keep = ROOT / "test-logs" / "operator"
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "operator.log").write_bytes(log.read_bytes())


@pytest.fixture
def namespace(kubectl: Kubectl, operator_process: Path) -> Iterator[str]:
    name = f"op-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)
