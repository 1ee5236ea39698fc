"""The few Kubernetes API calls the operator makes, behind a Protocol so tests can fake them."""

from __future__ import annotations

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
}


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    """The REST path of a namespaced object, e.g. ``/apis/apps/v1/namespaces/ns/deployments/x``."""
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{root}/namespaces/{namespace}/{_PLURALS[kind]}/{name}"


def function_path(namespace: str, name: str) -> str:
    return object_path(f"{GROUP}/{VERSION}", "StatefulFunction", namespace, name)


def journal_path(namespace: str, name: str) -> str:
    return object_path(f"{GROUP}/{VERSION}", "Journal", namespace, name)


class ClusterError(RuntimeError):
    """The API server refused or failed a call; usually worth retrying later."""


class Cluster(Protocol):
    """What reconciling needs from the API server."""

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or None when it does not exist."""

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` as the operator's field manager; return the live object."""

    async def patch_status(self, path: str, status: dict[str, Any]) -> None:
        """Merge ``status`` into the object's status subresource."""


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
            raise ClusterError(
                f"{method} {path} failed with HTTP {e.status}: {e.reason}; {e.body!s:.500}"
            ) from e
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
