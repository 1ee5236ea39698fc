"""A local cluster: the control plane from tests.infra.kube plus the node agent,
started as a subprocess (its own log, its own cleanup on SIGTERM)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.infra.cluster.__main__ import READY_LINE
from tests.infra.cluster.images import REPO_ROOT
from tests.infra.cluster.netns import NetworkConfig
from tests.infra.kube import KubeControlPlane
from tests.infra.process import ManagedProcess, free_port

AGENT_READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ClusterInfo:
    kubeconfig: Path
    env: dict[str, str]
    nodes: tuple[str, ...]
    api_port: int


class LocalCluster:
    def __init__(
        self,
        kube: KubeControlPlane,
        workdir: Path,
        *,
        forwarded_ports: tuple[int, ...] = (),
        nodes: tuple[str, ...] = ("larder-node-0",),
        network: NetworkConfig | None = None,
    ) -> None:
        self.kube = kube
        self.workdir = workdir
        port = urlsplit(kube.server).port
        assert port is not None
        self.info = ClusterInfo(kube.kubeconfig, kube.env, nodes, port)
        argv = [
            sys.executable,
            "-m",
            "tests.infra.cluster",
            "--kubeconfig",
            str(kube.kubeconfig),
            "--workdir",
            str(workdir / "agent"),
            "--api-port",
            str(port),
        ]
        for forwarded in forwarded_ports:
            argv += ["--forward", str(forwarded)]
        for node in nodes:
            argv += ["--node", node, "--kubelet-port", str(free_port())]
        self.network = network or NetworkConfig()
        argv += [
            "--bridge",
            self.network.bridge,
            "--subnet",
            self.network.subnet,
            "--prefix",
            self.network.prefix,
        ]
        self._agent = ManagedProcess("node-agent", argv, workdir / "node-agent.log", cwd=REPO_ROOT)

    @property
    def log_paths(self) -> list[Path]:
        return [self._agent.log_path]

    def start(self) -> None:
        self._agent.start()
        self._agent.wait_until(self._ready, AGENT_READY_TIMEOUT_S, "ready (Nodes Ready)")

    def _ready(self) -> bool:
        if READY_LINE not in self._agent.tail(200):
            return False
        done = subprocess.run(
            ["kubectl", "get", "nodes", "-o", "json"],
            env=self.info.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if done.returncode != 0:
            return False
        ready = {
            n["metadata"]["name"]
            for n in json.loads(done.stdout)["items"]
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n["status"].get("conditions", [])
            )
        }
        return set(self.info.nodes) <= ready

    def close(self) -> None:
        # The agent removes its pods' containers, namespaces and veths on SIGTERM.
        self._agent.stop(timeout=90)

    def stop_agent(self) -> None:
        """Stop only the node agent (SIGTERM): it removes everything it made."""
        self._agent.stop(timeout=90)
