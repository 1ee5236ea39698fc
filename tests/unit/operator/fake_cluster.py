"""An in-memory fake of the few API calls the operator makes (the ``Cluster`` protocol)."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from larder_operator.kube import ConflictError, RejectedError, object_path


class FakeCluster:
    """Objects by REST path; apply replaces, patches merge; ``reject`` makes applies fail."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.applied: list[str] = []
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.deleted: list[str] = []
        # Kind -> the API server's message, for applies the API server would refuse.
        self.reject: dict[str, str] = {}
        self._versions = itertools.count(1)

    def put(self, path: str, obj: dict[str, Any]) -> None:
        obj.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
        self.objects[path] = obj

    async def get(self, path: str) -> dict[str, Any] | None:
        obj = self.objects.get(path)
        return copy.deepcopy(obj) if obj is not None else None

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        if obj["kind"] in self.reject:
            message = self.reject[obj["kind"]]
            raise RejectedError(f"PATCH {path} failed with HTTP 422: {message}", message)
        live = copy.deepcopy(obj)
        old = self.objects.get(path)
        if old is not None:
            live["status"] = old.get("status", {})
            live["metadata"]["generation"] = old["metadata"].get("generation", 1)
            # Fields other managers own stay, as with server-side apply (e.g. the uid, the
            # Deployment controller's revision annotation).
            if "uid" in old["metadata"]:
                live["metadata"]["uid"] = old["metadata"]["uid"]
            annotations = {
                **old["metadata"].get("annotations", {}),
                **live["metadata"].get("annotations", {}),
            }
            if annotations:
                live["metadata"]["annotations"] = annotations
        self.put(path, live)
        self.applied.append(path)
        return copy.deepcopy(live)

    async def patch_status(self, path: str, status: dict[str, Any]) -> None:
        current = self.objects[path].setdefault("status", {})
        for key, value in copy.deepcopy(status).items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value

    async def patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        obj = self.objects.get(path)
        if obj is None:
            return None
        meta_patch = dict(patch.get("metadata") or {})
        expected = meta_patch.pop("resourceVersion", None)
        if expected is not None and expected != obj["metadata"].get("resourceVersion"):
            raise ConflictError(f"PATCH {path} failed with HTTP 409: the object has changed")
        obj["metadata"].update(copy.deepcopy(meta_patch))
        self.put(path, obj)
        self.patches.append((path, copy.deepcopy(patch)))
        return copy.deepcopy(obj)

    async def list(self, path: str, label_selector: str = "") -> list[dict[str, Any]]:
        prefix = path + "/"
        # Equality selectors only (k=v,k2=v2): all the operator uses.
        wanted = dict(t.split("=", 1) for t in label_selector.split(",") if t)
        return [
            copy.deepcopy(obj)
            for key, obj in sorted(self.objects.items())
            if key.startswith(prefix) and "/" not in key[len(prefix):]
            and wanted.items() <= (obj.get("metadata", {}).get("labels") or {}).items()
        ]

    async def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.created.append((path, copy.deepcopy(obj)))
        return copy.deepcopy(obj)

    async def delete(self, path: str, uid: str) -> None:
        obj = self.objects.get(path)
        if obj is None:
            return
        if obj["metadata"].get("uid") != uid:
            raise ConflictError(f"DELETE {path} failed with HTTP 409: the UID differs")
        del self.objects[path]
        self.deleted.append(path)
