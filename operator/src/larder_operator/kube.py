"""The few Kubernetes API calls the operator makes, behind a Protocol so tests can fake them."""

from __future__ import annotations

import json
from typing import Any, Protocol

from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from larder_operator.children import FIELD_MANAGER, GROUP, VERSION

_PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "Secret": "secrets",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "StatefulFunction": "statefulfunctions",
    "Journal": "journals",
    "Event": "events",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "ReplicaSet": "replicasets",
    "EndpointSlice": "endpointslices",
}


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    """The REST path of a namespaced object, e.g. ``/apis/apps/v1/namespaces/ns/deployments/x``."""
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{root}/namespaces/{namespace}/{_PLURALS[kind]}/{name}"


def function_path(namespace: str, name: str) -> str:
    return object_path(f"{GROUP}/{VERSION}", "StatefulFunction", namespace, name)


def journal_path(namespace: str, name: str) -> str:
    return object_path(f"{GROUP}/{VERSION}", "Journal", namespace, name)


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    """The REST path of a namespaced collection, e.g. ``/api/v1/namespaces/ns/events``."""
    return object_path(api_version, kind, namespace, "").rstrip("/")


class ClusterError(RuntimeError):
    """The API server refused or failed a call; usually worth retrying later."""


class RejectedError(ClusterError):
    """The API server found the object itself invalid: retrying the same object cannot help.

    ``api_message`` is the server's own explanation (it names the object and the field).
    """

    def __init__(self, message: str, api_message: str) -> None:
        super().__init__(message)
        self.api_message = api_message


class ConflictError(ClusterError):
    """The object changed since it was read (its resourceVersion is stale): read it again."""


def _status_message(body: object) -> str:
    """The ``message`` of a Kubernetes Status body, or the raw body when it is not one."""
    try:
        parsed = json.loads(body) if isinstance(body, (str, bytes)) else None
    except ValueError:
        parsed = None
    message = parsed.get("message") if isinstance(parsed, dict) else None
    if isinstance(message, str):
        return message
    return f"{body!s:.500}"


def _is_rejection(status: int, message: str) -> bool:
    if status in (400, 422):
        return True
    # A value the API server cannot decode (e.g. a resource quantity "lots") fails its
    # conversion of the applied object with a 500, every time: the object is at fault.
    return status == 500 and "unable to convert unstructured object" in message


class Cluster(Protocol):
    """What reconciling needs from the API server."""

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or None when it does not exist."""

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` as the operator's field manager; return the live object."""

    async def patch_status(self, path: str, status: dict[str, Any]) -> None:
        """Merge ``status`` into the object's status subresource."""

    async def patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch the object (metadata only, by convention); None when it is gone.

        A ``metadata.resourceVersion`` in ``patch`` makes it conditional: ConflictError
        when the object changed meanwhile.
        """

    async def list(self, path: str, label_selector: str = "") -> list[dict[str, Any]]:
        """The items of the collection at ``path`` (those matching ``label_selector``)."""

    async def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ``obj`` in the collection at ``path``."""

    async def delete(self, path: str, uid: str) -> None:
        """Delete the object at ``path`` if it is still the one with ``uid``; gone is fine."""


class ApiCluster:
    """The real thing, over kubernetes_asyncio's ApiClient (dicts in, dicts out)."""

    def __init__(self, client: ApiClient) -> None:
        self._client = client

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            result = await self._client.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                response_types_map={200: "object", 201: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        except ApiException as e:
            if e.status == 404:
                raise
            described = f"{method} {path} failed with HTTP {e.status}: {e.reason}"
            message = _status_message(e.body)
            if e.status == 409:
                raise ConflictError(f"{described}; {message}") from e
            if _is_rejection(e.status, message):
                raise RejectedError(f"{described}; {message}", message) from e
            raise ClusterError(f"{described}; {message}") from e
        return dict(result or {})

    async def get(self, path: str) -> dict[str, Any] | None:
        try:
            return await self._call("GET", path)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        try:
            return await self._call(
                "PATCH",
                path,
                body=obj,
                content_type="application/apply-patch+yaml",
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            )
        except ApiException as e:
            raise ClusterError(f"applying {path} failed with HTTP 404: {e.reason}") from e

    async def patch_status(self, path: str, status: dict[str, Any]) -> None:
        try:
            await self._call(
                "PATCH",
                path + "/status",
                body={"status": status},
                content_type="application/merge-patch+json",
            )
        except ApiException as e:
            # Deleted meanwhile: nothing left to report on.
            if e.status != 404:
                raise

    async def patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return await self._call(
                "PATCH", path, body=patch, content_type="application/merge-patch+json"
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def list(self, path: str, label_selector: str = "") -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else None
        try:
            result = await self._call("GET", path, query=query)
        except ApiException as e:
            # The namespace (or the CRD) is gone: nothing is in it.
            if e.status == 404:
                return []
            raise
        return list(result.get("items") or [])

    async def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._call("POST", path, body=obj, content_type="application/json")
        except ApiException as e:
            raise ClusterError(f"creating in {path} failed with HTTP 404: {e.reason}") from e

    async def delete(self, path: str, uid: str) -> None:
        # The precondition: a same-named object created meanwhile is not ours to delete.
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            await self._call("DELETE", path, body=body, content_type="application/json")
        except ApiException as e:
            if e.status != 404:
                raise
