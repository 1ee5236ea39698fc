"""This sidecar as a member of its function's cluster: membership, router, internal
server and peer clients, started and stopped together (only when membership is set)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from ..entities import EntityHost
from ..model import Method
from ..settings import Settings
from .file_membership import FileMembership
from .internal import InternalServer
from .membership import MemberId, MembershipSource, StaticMembership
from .metrics import ClusterMetrics
from .peers import PeerClients
from .sharded import ShardedRouter

log = logging.getLogger("larder_sidecar.cluster")

LEAVE_NOTICE = 5.0
"""Seconds a stopping sidecar waits for its membership to mark it terminating (on
Kubernetes the endpoint says so within about a second of the pod's deletion)."""


def clustered(settings: Settings) -> bool:
    """Whether membership is configured (a list, a list file or a Kubernetes Service)."""
    c = settings.cluster
    return bool(c.members or c.service or c.members_file)


def membership_source(settings: Settings) -> MembershipSource:
    if settings.cluster.members:
        return StaticMembership(settings.cluster.members)
    if settings.cluster.members_file:
        return FileMembership(settings.cluster.members_file)
    # Imported here: the Kubernetes client is only needed on Kubernetes.
    from .kube_membership import KubernetesMembership  # noqa: PLC0415

    return KubernetesMembership(settings.pod.namespace, settings.cluster.service)


class ClusterNode:
    def __init__(
        self,
        settings: Settings,
        host: EntityHost,
        methods: Mapping[str, Method],
        registry: CollectorRegistry,
        source: MembershipSource | None = None,
    ) -> None:
        self._settings = settings
        self.metrics = ClusterMetrics(registry)
        self.peers = PeerClients(settings.max_message_bytes)
        self.router = ShardedRouter(
            host,
            MemberId(settings.pod.name),
            settings.cluster.shard_count,
            source=source or membership_source(settings),
            transport=self.peers,
            metrics=self.metrics,
        )
        self.server = InternalServer(self.router, methods, self.metrics, settings.max_message_bytes)

    @property
    def ready(self) -> bool:
        return self.router.ready

    async def start(self) -> None:
        """The internal port first (peers may ask as soon as they see this member), then
        the membership and the hand-offs it starts."""
        s = self._settings
        port = await self.server.start(s.host, s.internal_port)
        log.info("internal port %s:%d (member %s)", s.host, port, s.pod.name)
        await self.router.start()

    async def leave(self, within: float) -> bool:
        """Wait until this member serves no shard (membership says it is terminating and
        its hand-offs are done), at most `within` seconds. A static member list never
        says so, and a membership that has not said so within `LEAVE_NOTICE` seconds is
        not going to soon: then there is nothing to wait for (its shards stay with it)."""
        if self._settings.cluster.members:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        if not await self.router.marked_leaving(min(LEAVE_NOTICE, within)):
            log.info(
                "membership does not mark this sidecar terminating; stopping with its shards "
                "(their commands fail with UNAVAILABLE until membership moves them)"
            )
            return False
        return await self.router.handed_off(max(0.0, deadline - loop.time()))

    async def close(self, grace: float) -> None:
        await self.router.close()
        await self.server.stop(grace)
        await self.peers.close()
