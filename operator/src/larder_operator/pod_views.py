"""Asking each ready pod of a function which shard map it has: the I/O behind map_agreement.

Which pods, and where: the EndpointSlices of the function's headless Service
(`<name>-internal`), which the operator may already read (it grants the sidecars that
permission, and RBAC lets it grant only what it holds), so this needs no new rights. A
serving, not terminating endpoint is a ready pod; its admin port is the slice's port named
`admin`. Each pod is asked `GET /cluster` on it, all at once, each with a short timeout:
a pod that does not answer in time counts as not agreeing, and says so in the status.

Pods do not publish their view themselves: writing it to their own Pod (or any object)
would need a patch right on Pods for every sidecar's ServiceAccount, and RBAC cannot limit
that to the pod's own object, so every pod could rewrite every other pod of its namespace.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# kopf and kubernetes_asyncio are built on aiohttp: the operator already depends on it.
import aiohttp

from larder_operator.children import ADMIN_PORT, headless_service_name
from larder_operator.kube import Cluster, collection_path
from larder_operator.map_agreement import PodView, view_from_answer

# The label the EndpointSlice controller puts on a Service's slices.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class PodEndpoint:
    """Where one ready pod's admin port is."""

    pod: str
    address: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/cluster"


def ready_endpoints(slices: Iterable[Mapping[str, Any]]) -> list[PodEndpoint]:
    """The ready, not terminating pods of these slices, each once (a pod can be in two
    slices while the controller moves it), sorted by name."""
    found: dict[str, PodEndpoint] = {}
    for endpoint_slice in slices:
        port = next(
            (
                int(p["port"])
                for p in endpoint_slice.get("ports") or ()
                if p.get("name") == "admin" and p.get("port")
            ),
            # Slices of a Service rendered before it listed the admin port.
            ADMIN_PORT,
        )
        for endpoint in endpoint_slice.get("endpoints") or ():
            conditions = endpoint.get("conditions") or {}
            # The -internal Service publishes not-ready addresses, so `ready` is true for
            # every pod that is not terminating; `serving` is the pod's own readiness
            # (nil: as `ready`, as for Services that do not publish them).
            serving = conditions.get("serving", conditions.get("ready"))
            if serving is False or conditions.get("terminating") is True:
                continue
            target = endpoint.get("targetRef") or {}
            addresses = endpoint.get("addresses") or ()
            pod = target.get("name") or endpoint.get("hostname")
            if not pod or not addresses:
                continue
            found.setdefault(str(pod), PodEndpoint(str(pod), str(addresses[0]), port))
    return [found[name] for name in sorted(found)]


class ViewReader(Protocol):
    """Asks pods for their view; tests without pods give their own."""

    async def read(self, endpoints: Sequence[PodEndpoint]) -> list[PodView]: ...


class HttpViewReader:
    """`GET /cluster` of every pod at once, each within ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    async def read(self, endpoints: Sequence[PodEndpoint]) -> list[PodView]:
        if not endpoints:
            return []
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        # A session per round: pods come and go, there is nothing worth keeping alive.
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return list(await asyncio.gather(*(self._one(session, e) for e in endpoints)))

    async def _one(self, session: aiohttp.ClientSession, endpoint: PodEndpoint) -> PodView:
        try:
            async with session.get(endpoint.url) as response:
                text = await response.text()
                status = response.status
        except TimeoutError:
            return PodView(
                endpoint.pod, error=f"{endpoint.url} did not answer within {self._timeout:g} s"
            )
        except aiohttp.ClientError as e:
            return PodView(endpoint.pod, error=f"{endpoint.url}: {e}")
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return PodView(
                endpoint.pod, error=f"{endpoint.url} answered HTTP {status}, not JSON: {text:.200}"
            )
        if status != 200:
            return PodView(
                endpoint.pod, error=f"{endpoint.url} answered HTTP {status}: {body.get('error')}"
            )
        return view_from_answer(endpoint.pod, body)


async def read_pod_views(
    cluster: Cluster, reader: ViewReader, namespace: str, function: str
) -> list[PodView]:
    """Every ready pod's view of the shard map of ``function``."""
    slices = await cluster.list(
        collection_path("discovery.k8s.io/v1", "EndpointSlice", namespace),
        f"{SERVICE_NAME_LABEL}={headless_service_name(function)}",
    )
    return await reader.read(ready_endpoints(slices))
