"""A private Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler on loopback ports, started the way controller-runtime's envtest does.

There is no kubelet: Pods are scheduled but never run. Deployments, ReplicaSets,
garbage collection, service accounts and RBAC all work.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.infra.certs import ControlPlaneCerts, make_certs
from tests.infra.process import ManagedProcess, free_port

ETCD_READY_TIMEOUT_S = 60.0
APISERVER_READY_TIMEOUT_S = 180.0
CONTROLLERS_READY_TIMEOUT_S = 120.0

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"  # a config value only: nothing routes to it
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class KubeConnection:
    """What a client needs: a kubeconfig file (admin, `system:masters`) and the URL."""

    kubeconfig: Path
    server: str
    env: dict[str, str] = field(hash=False)


def render_kubeconfig(server: str, certs: ControlPlaneCerts) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "larder-test",
                "cluster": {"server": server, "certificate-authority": str(certs.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": str(certs.admin_cert),
                    "client-key": str(certs.admin_key),
                },
            }
        ],
        "contexts": [
            {"name": "larder-test", "context": {"cluster": "larder-test", "user": "admin"}}
        ],
        "current-context": "larder-test",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def etcd_args(data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        f"--data-dir={data_dir}",
        "--name=default",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        # Test data need not survive a power cut; fsync would only slow every write.
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def apiserver_args(certs: ControlPlaneCerts, etcd_url: str, secure_port: int) -> list[str]:
    return [
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={secure_port}",
        f"--tls-cert-file={certs.serving_cert}",
        f"--tls-private-key-file={certs.serving_key}",
        f"--client-ca-file={certs.ca_cert}",
        "--authorization-mode=RBAC",
        # Without a request-header CA every controller logs an error per resync; only
        # a certificate named front-proxy-client (none is issued) may use the headers.
        f"--requestheader-client-ca-file={certs.ca_cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={certs.service_account_pub}",
        f"--service-account-signing-key-file={certs.service_account_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--allow-privileged=true",
        # The `kubernetes` Service's endpoint would be 127.0.0.1, which Endpoints reject.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        f"--cert-dir={certs.ca_cert.parent}",
    ]


def controller_manager_args(
    certs: ControlPlaneCerts, kubeconfig: Path, secure_port: int
) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={secure_port}",
        "--controllers=*",
        "--leader-elect=false",
        f"--service-account-private-key-file={certs.service_account_key}",
        f"--root-ca-file={certs.ca_cert}",
        "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={certs.ca_cert}",
        f"--cluster-signing-key-file={certs.ca_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--profiling=false",
    ]


def scheduler_args(kubeconfig: Path, secure_port: int) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={secure_port}",
        "--leader-elect=false",
        "--profiling=false",
    ]


class KubeControlPlane:
    """The control plane's processes; ``kubectl_bin``, when given, leads ``env``'s PATH so
    subprocesses run the provisioned kubectl, not whatever the machine has (or lacks)."""

    def __init__(
        self, kube_bin: Path, etcd_bin: Path, workdir: Path, kubectl_bin: Path | None = None
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.certs = make_certs(workdir / "pki")
        self._etcd_port = free_port()
        self._apiserver_port = free_port()
        self.server = f"https://127.0.0.1:{self._apiserver_port}"
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(render_kubeconfig(self.server, self.certs))
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        if kubectl_bin is not None:
            env["PATH"] = os.pathsep.join([str(kubectl_bin), env.get("PATH", os.defpath)])
        self.connection = KubeConnection(kubeconfig, self.server, env)
        logs = workdir
        self._etcd = ManagedProcess(
            "etcd",
            [str(etcd_bin / "etcd"), *etcd_args(workdir / "etcd", self._etcd_port, free_port())],
            logs / "etcd.log",
        )
        self._apiserver = ManagedProcess(
            "kube-apiserver",
            [
                str(kube_bin / "kube-apiserver"),
                *apiserver_args(
                    self.certs, f"http://127.0.0.1:{self._etcd_port}", self._apiserver_port
                ),
            ],
            logs / "kube-apiserver.log",
        )
        self._controller_manager = ManagedProcess(
            "kube-controller-manager",
            [
                str(kube_bin / "kube-controller-manager"),
                *controller_manager_args(self.certs, kubeconfig, free_port()),
            ],
            logs / "kube-controller-manager.log",
        )
        self._scheduler = ManagedProcess(
            "kube-scheduler",
            [str(kube_bin / "kube-scheduler"), *scheduler_args(kubeconfig, free_port())],
            logs / "kube-scheduler.log",
        )
        self._ssl = ssl.create_default_context(cafile=str(self.certs.ca_cert))
        self._ssl.load_cert_chain(str(self.certs.admin_cert), str(self.certs.admin_key))

    @property
    def kubeconfig(self) -> Path:
        return self.connection.kubeconfig

    @property
    def env(self) -> dict[str, str]:
        return dict(self.connection.env)

    def details(self) -> dict[str, str]:
        return {"server": self.server, "kubeconfig": str(self.kubeconfig)}

    def start(self) -> None:
        self._etcd.start()
        self._etcd.wait_until(self._etcd_healthy, ETCD_READY_TIMEOUT_S, "healthy")
        self._apiserver.start()
        self._apiserver.wait_until(
            lambda: self._get("/readyz") is not None, APISERVER_READY_TIMEOUT_S, "ready (/readyz)"
        )
        self._controller_manager.start()
        self._scheduler.start()
        # The service-account controller creating `default` proves the controller
        # manager runs with working credentials.
        self._controller_manager.wait_until(
            lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            CONTROLLERS_READY_TIMEOUT_S,
            "done creating the default ServiceAccount",
        )

    def close(self) -> None:
        for process in (self._scheduler, self._controller_manager, self._apiserver, self._etcd):
            process.stop()

    @property
    def log_paths(self) -> list[Path]:
        return [
            p.log_path
            for p in (self._etcd, self._apiserver, self._controller_manager, self._scheduler)
        ]

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self._etcd_port}/health", timeout=2
            ) as response:
                body: Any = json.loads(response.read())
        except (OSError, ValueError):
            return False
        return isinstance(body, dict) and body.get("health") == "true"

    def _get(self, path: str) -> bytes | None:
        """The body of a 200 answer from the API server as admin, or None."""
        try:
            with urllib.request.urlopen(
                f"{self.server}{path}", timeout=5, context=self._ssl
            ) as response:
                return bytes(response.read())
        except urllib.error.HTTPError:
            return None
        except (OSError, ssl.SSLError):
            return None
