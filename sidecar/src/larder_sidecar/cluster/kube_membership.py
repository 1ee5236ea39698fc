"""Membership on Kubernetes: the function's headless Service's EndpointSlices, watched.

The operator's headless Service publishes not-ready addresses, so its EndpointSlices
list every pod with an IP, `ready` set true whatever the pod's readiness; `serving` says
whether the pod passes its readiness probe. A pod joins once it serves: a sidecar is
ready with its first shard map, whether or not that map has it, so a starting pod learns
the map, turns ready, and only then takes shards — never while its internal port is not
yet listening (an owner that cannot take its forwards). A pod that stops passing its
probe (its user function gone, cut off from the kubelet) leaves, and its shards move to
pods that can serve them. A terminating pod stays, marked, until its hand-off is done. An
endpoint's conditions decide (nil `ready`/`serving` mean true, nil `terminating` false,
as the API defines them; nil `serving` takes `ready`'s value, as older API servers leave
it unset):

| terminating | serving (else ready) | ready or serving | member?                                |
|-------------|----------------------|------------------|----------------------------------------|
| no          | yes                  | -                | yes, active                            |
| no          | no                   | -                | no (starting, or failing its probe)    |
| yes         | -                    | either           | yes, terminating (no shards; hand-off) |
| yes         | -                    | neither          | no                                     |

The member id is the endpoint's Pod name (what the pod knows as `POD_NAME`), the address
the endpoint's first address with the slice's port named `internal`. A pod in several
slices (dual stack, or for a moment while the controller repacks slices) is one member:
terminating if any slice says so (a pod never stops terminating), at its IPv4 address
if it has one.

`KubernetesMembership` lists the slices, then watches from the list's resource version,
yielding a snapshot whenever the members change. An expired resource version (410 Gone)
means list again at once; any other failure, list again after a backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from .membership import Member, MemberId, Membership, describe_change

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
INTERNAL_PORT_NAME = "internal"


class MembershipUnavailableError(RuntimeError):
    """The API server did not answer as expected; listing again later may succeed."""


class WatchExpiredError(Exception):
    """The watch's resource version is too old (410 Gone): list again."""


# -- endpoint slices -> members (no I/O) ------------------------------------------------


def _member_id(endpoint: Mapping[str, Any]) -> str | None:
    target = endpoint.get("targetRef") or {}
    if target.get("kind") == "Pod" and target.get("name"):
        return str(target["name"])
    hostname = endpoint.get("hostname")
    return str(hostname) if hostname else None


def _terminating(conditions: Mapping[str, Any]) -> bool | None:
    """False: an active member; True: a terminating one; None: not a member."""
    ready = conditions.get("ready") is not False
    serving_value = conditions.get("serving")
    serving = ready if serving_value is None else serving_value is not False
    if conditions.get("terminating") is True:
        return True if ready or serving else None
    # Not `ready`: with published not-ready addresses it is true for a pod that does not
    # pass its readiness probe yet.
    return False if serving else None


def _address_preference(address: str) -> tuple[bool, str]:
    return (address.startswith("["), address)


def members_from_slices(
    slices: Iterable[Mapping[str, Any]], port_name: str = INTERNAL_PORT_NAME
) -> tuple[Member, ...]:
    """The members the slices describe, sorted by id."""
    found: dict[str, Member] = {}
    for endpoint_slice in slices:
        address_type = endpoint_slice.get("addressType")
        if address_type not in ("IPv4", "IPv6"):
            continue
        port = next(
            (
                p.get("port")
                for p in endpoint_slice.get("ports") or ()
                if p.get("name") == port_name and p.get("port")
            ),
            None,
        )
        if port is None:
            continue
        for endpoint in endpoint_slice.get("endpoints") or ():
            member_id = _member_id(endpoint)
            addresses = endpoint.get("addresses") or ()
            terminating = _terminating(endpoint.get("conditions") or {})
            if member_id is None or not addresses or terminating is None:
                continue
            host = str(addresses[0])
            address = f"[{host}]:{port}" if address_type == "IPv6" else f"{host}:{port}"
            member = Member(MemberId(member_id), address, terminating)
            seen = found.get(member_id)
            if seen is not None:
                member = Member(
                    member.id,
                    min(seen.address, member.address, key=_address_preference),
                    seen.terminating or member.terminating,
                )
            found[member_id] = member
    return tuple(sorted(found.values(), key=lambda m: m.id))


# -- the API server ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SliceEvent:
    type: str
    """ADDED, MODIFIED, DELETED or BOOKMARK."""
    object: Mapping[str, Any]

    @property
    def resource_version(self) -> str:
        return str((self.object.get("metadata") or {}).get("resourceVersion") or "")


class EndpointSliceApi(Protocol):
    """What membership needs from the API server: one Service's EndpointSlices."""

    async def list(self) -> tuple[list[Mapping[str, Any]], str]:
        """The slices and the list's resource version. Raises MembershipUnavailableError."""
        ...

    def watch(self, resource_version: str) -> AsyncIterator[SliceEvent]:
        """The changes after `resource_version` until the server ends the watch. Raises
        WatchExpiredError (list again) or MembershipUnavailableError."""
        ...


class ApiEndpointSlices:
    """`EndpointSliceApi` over kubernetes_asyncio's ApiClient (JSON in, dicts out)."""

    def __init__(
        self, client: ApiClient, namespace: str, service: str, watch_timeout: int = 290
    ) -> None:
        self._client = client
        self._path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        self._selector = f"{SERVICE_NAME_LABEL}={service}"
        self._watch_timeout = watch_timeout

    def _failed(self, what: str, status: int, body: str) -> MembershipUnavailableError:
        hint = (
            ": the pod's ServiceAccount needs get, list and watch on discovery.k8s.io "
            "endpointslices in its namespace (the operator's Role grants them)"
            if status in (401, 403)
            else ""
        )
        return MembershipUnavailableError(
            f"{what} {self._path}?labelSelector={self._selector} failed with HTTP "
            f"{status}{hint}; {body:.300}"
        )

    async def list(self) -> tuple[list[Mapping[str, Any]], str]:
        try:
            result = await self._client.call_api(
                self._path,
                "GET",
                query_params=[("labelSelector", self._selector)],
                header_params={"Accept": "application/json"},
                response_types_map={200: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=30,
            )
        except ApiException as e:
            raise self._failed("listing", int(e.status or 0), str(e.body)) from e
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise MembershipUnavailableError(f"listing {self._path} failed: {e!r}") from e
        body = dict(result or {})
        items = list(body.get("items") or [])
        return items, str((body.get("metadata") or {}).get("resourceVersion") or "")

    async def watch(self, resource_version: str) -> AsyncIterator[SliceEvent]:
        query = [
            ("labelSelector", self._selector),
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self._watch_timeout)),
        ]
        # The server ends the watch after timeoutSeconds and sends bookmarks meanwhile;
        # silence much longer than that is a dead connection.
        timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=self._watch_timeout + 30)
        try:
            response: aiohttp.ClientResponse = await self._client.call_api(
                self._path,
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise MembershipUnavailableError(f"watching {self._path} failed: {e!r}") from e
        try:
            if response.status == 410:
                raise WatchExpiredError(resource_version)
            if response.status != 200:
                raise self._failed("watching", response.status, await response.text())
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield self._event(line)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise MembershipUnavailableError(f"watching {self._path} broke: {e!r}") from e
        finally:
            response.release()

    def _event(self, line: bytes) -> SliceEvent:
        try:
            raw = json.loads(line)
            kind, obj = str(raw["type"]), raw["object"]
        except (ValueError, KeyError, TypeError) as e:
            raise MembershipUnavailableError(f"a watch event is not JSON: {line[:200]!r}") from e
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpiredError(obj.get("message", ""))
            raise self._failed("watching", int(obj.get("code") or 0), str(obj.get("message")))
        return SliceEvent(kind, obj)


@asynccontextmanager
async def in_cluster_api(namespace: str, service: str) -> AsyncIterator[EndpointSliceApi]:
    """An API client from the pod's ServiceAccount (token, CA, `KUBERNETES_SERVICE_*`)."""
    configuration = Configuration()
    try:
        # Reads small files; off the event loop all the same.
        await asyncio.to_thread(
            kube_config.load_incluster_config,
            client_configuration=configuration,
        )
    except kube_config.ConfigException as e:
        raise MembershipUnavailableError(
            f"no in-cluster Kubernetes configuration ({e}); LARDER_CLUSTER_SERVICE needs the "
            "sidecar to run in a pod with a ServiceAccount token mounted"
        ) from e
    client = ApiClient(configuration)
    try:
        yield ApiEndpointSlices(client, namespace, service)
    finally:
        await client.close()


# -- the source -------------------------------------------------------------------------


ApiFactory = Callable[[], AbstractAsyncContextManager[EndpointSliceApi]]


class KubernetesMembership:
    """A `MembershipSource` watching one headless Service's EndpointSlices."""

    def __init__(
        self,
        namespace: str,
        service: str,
        *,
        port_name: str = INTERNAL_PORT_NAME,
        api: ApiFactory | None = None,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
    ) -> None:
        self._where = f"{namespace}/{service}"
        self._port_name = port_name
        self._api: ApiFactory = api or (lambda: in_cluster_api(namespace, service))
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay

    def _backoff(self, failures: int) -> float:
        ceiling = min(self._max_retry_delay, self._retry_delay * 2.0 ** (failures - 1))
        # Jittered, so the pods of a function do not all list again at the same moment.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def snapshots(self) -> AsyncGenerator[Membership, None]:
        view = _SliceView(self._where, self._port_name)
        # Failures since the last watch event: a list that works followed by a watch that
        # fails at once is no progress, and must not reset the backoff.
        failures = 0
        async with self._api() as api:
            while True:
                try:
                    items, version = await api.list()
                    if (snapshot := view.replace(items)) is not None:
                        yield snapshot
                    while True:
                        started, events = asyncio.get_running_loop().time(), 0
                        async for event in api.watch(version):
                            events += 1
                            failures = 0
                            version = event.resource_version or version
                            if (snapshot := view.apply(event)) is not None:
                                yield snapshot
                        # The server's timeout ended the watch: go on from `version`.
                        _check_watch_ended(started, events)
                except WatchExpiredError:
                    if failures == 0:
                        failures = 1
                        log.info("membership watch of %s expired; listing again", self._where)
                        continue
                    failures += 1
                    delay = self._backoff(failures)
                    log.warning(
                        "membership watch of %s expired again at once; listing again in %.1fs",
                        self._where,
                        delay,
                    )
                    await asyncio.sleep(delay)
                except MembershipUnavailableError as e:
                    failures += 1
                    delay = self._backoff(failures)
                    log.warning(
                        "membership of %s unavailable (%s); listing again in %.1fs",
                        self._where,
                        e,
                        delay,
                    )
                    await asyncio.sleep(delay)


def _check_watch_ended(started: float, events: int) -> None:
    if events == 0 and asyncio.get_running_loop().time() - started < 1.0:
        raise MembershipUnavailableError("the API server ended a watch at once, without an event")


class _SliceView:
    """The slices seen so far, and the last snapshot made of them."""

    def __init__(self, where: str, port_name: str) -> None:
        self._where = where
        self._port_name = port_name
        self._slices: dict[str, Mapping[str, Any]] = {}
        self._last: Membership | None = None

    def replace(self, items: Iterable[Mapping[str, Any]]) -> Membership | None:
        self._slices = {_name(s): s for s in items}
        return self._snapshot()

    def apply(self, event: SliceEvent) -> Membership | None:
        if event.type in ("ADDED", "MODIFIED"):
            self._slices[_name(event.object)] = event.object
        elif event.type == "DELETED":
            self._slices.pop(_name(event.object), None)
        else:
            return None
        return self._snapshot()

    def _snapshot(self) -> Membership | None:
        members = members_from_slices(self._slices.values(), self._port_name)
        if self._last is not None and self._last.members == members:
            return None
        snapshot = Membership(members, 1 if self._last is None else self._last.version + 1)
        log.info("%s (%s)", describe_change(self._last, snapshot), self._where)
        self._last = snapshot
        return snapshot


def _name(endpoint_slice: Mapping[str, Any]) -> str:
    return str((endpoint_slice.get("metadata") or {}).get("name", ""))
