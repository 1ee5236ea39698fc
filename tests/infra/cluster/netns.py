"""Pod networking: one bridge on the host, one network namespace and veth pair per pod.

The subnet is a test subnet that exists only on our bridge and inside our own
namespaces: nothing is routed anywhere else and IP forwarding is not touched.
The host holds the bridge's first address, which is where pods reach the
forwarders to the host's loopback servers (Cassandra, the API server).
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass

from tests.infra.cluster.commands import run, run_quietly


@dataclass(frozen=True)
class NetworkConfig:
    bridge: str = "larder0"
    subnet: str = "10.244.7.0/24"
    # Every name this agent creates starts with this, so cleanup finds exactly its own.
    prefix: str = "lrd"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway(self) -> str:
        return str(self.network.network_address + 1)


def host_veth_name(config: NetworkConfig, key: str) -> str:
    """The host end of a pod's veth pair (`key`: the pod's key, pods.pod_key)."""
    return f"{config.prefix}{key}"[:15]


def set_pod_link(config: NetworkConfig, key: str, up: bool) -> None:
    """Cut a pod off the bridge (its link down) or connect it again, from the test
    process (synchronously). Cut off, the pod reaches nothing on the pod network and
    nothing there reaches it - peers, clients and the probes - while its loopback
    forwarders (the API server, Cassandra) still work: a network partition of one pod."""
    veth = host_veth_name(config, key)
    done = subprocess.run(
        ["ip", "link", "set", veth, "up" if up else "down"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"`ip link set {veth} {'up' if up else 'down'}` failed: {done.stderr.strip()} "
            "(is the pod still running on this agent's bridge?)"
        )


@dataclass(frozen=True)
class PodNetwork:
    namespace: str
    host_veth: str
    ip: str


class Network:
    """The bridge and the addresses of pods on it; not safe across processes."""

    def __init__(self, config: NetworkConfig) -> None:
        self.config = config
        self._free = [str(h) for h in list(config.network.hosts())[1:]]
        self._used: dict[str, str] = {}

    async def setup(self) -> None:
        await self.teardown_leftovers()
        cfg = self.config
        await run(["ip", "link", "add", cfg.bridge, "type", "bridge"])
        await run(
            ["ip", "addr", "add", f"{cfg.gateway}/{cfg.network.prefixlen}", "dev", cfg.bridge]
        )
        await run(["ip", "link", "set", cfg.bridge, "up"])

    async def teardown_leftovers(self) -> None:
        """Remove what an earlier agent with this config left (e.g. after a kill -9)."""
        for namespace in await self.namespaces():
            await run_quietly(["ip", "netns", "delete", namespace])
        await run_quietly(["ip", "link", "delete", self.config.bridge])

    async def namespaces(self) -> list[str]:
        out = await run(["ip", "netns", "list"])
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        return [n for n in names if n.startswith(f"{self.config.prefix}-")]

    async def teardown(self) -> None:
        await self.teardown_leftovers()

    async def add_pod(self, key: str) -> PodNetwork:
        """A namespace `<prefix>-<key>` with lo up and eth0 on the bridge.

        `key` is short (a pod uid prefix): interface names are limited to 15 bytes.
        """
        if not self._free:
            raise RuntimeError(f"no free address left in {self.config.subnet}")
        ip = self._free.pop(0)
        self._used[key] = ip
        cfg = self.config
        namespace = f"{cfg.prefix}-{key}"
        host_veth = host_veth_name(cfg, key)
        peer = f"{cfg.prefix}p{key}"[:15]
        try:
            await run(["ip", "netns", "add", namespace])
            await run(["ip", "-n", namespace, "link", "set", "lo", "up"])
            await run(["ip", "link", "add", host_veth, "type", "veth", "peer", "name", peer])
            await run(["ip", "link", "set", peer, "netns", namespace])
            await run(["ip", "-n", namespace, "link", "set", peer, "name", "eth0"])
            await run(
                [
                    "ip",
                    "-n",
                    namespace,
                    "addr",
                    "add",
                    f"{ip}/{cfg.network.prefixlen}",
                    "dev",
                    "eth0",
                ]
            )
            await run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
            await run(["ip", "link", "set", host_veth, "master", cfg.bridge])
            await run(["ip", "link", "set", host_veth, "up"])
        except BaseException:
            await self.remove_pod(PodNetwork(namespace, host_veth, ip), key)
            raise
        return PodNetwork(namespace, host_veth, ip)

    async def remove_pod(self, pod: PodNetwork, key: str) -> None:
        # Deleting the namespace destroys eth0 and with it the host end of the pair.
        await run_quietly(["ip", "netns", "delete", pod.namespace])
        await run_quietly(["ip", "link", "delete", pod.host_veth])
        ip = self._used.pop(key, None)
        if ip is not None:
            self._free.append(ip)
