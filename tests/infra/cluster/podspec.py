"""What a pod spec asks of a container, resolved the way the kubelet resolves it:
environment (values, `valueFrom`, `envFrom`, `$(VAR)` references), the user to run
as, and the files of the pod's volumes.

The API reads go through a small `Lookup` Protocol so these rules are unit-tested
without an API server.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ConfigError(ValueError):
    """The pod refers to something that does not exist (a kubelet's CreateContainerConfigError)."""


class Lookup(Protocol):
    async def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None: ...

    async def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The secret's data, base64-decoded."""

    async def token(
        self,
        namespace: str,
        account: str,
        pod: Mapping[str, Any],
        audience: str | None,
        seconds: int,
    ) -> str: ...


@dataclass(frozen=True)
class PodFacts:
    """The pod fields the downward API exposes."""

    name: str
    namespace: str
    uid: str
    node: str
    ip: str
    host_ip: str
    service_account: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    @classmethod
    def of(cls, pod: Mapping[str, Any], ip: str, host_ip: str) -> PodFacts:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            uid=str(meta.get("uid", "")),
            node=str(spec.get("nodeName", "")),
            ip=ip,
            host_ip=host_ip,
            service_account=str(spec.get("serviceAccountName") or "default"),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
        )

    def field(self, path: str) -> str:
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.node,
            "spec.serviceAccountName": self.service_account,
            "status.podIP": self.ip,
            "status.podIPs": self.ip,
            "status.hostIP": self.host_ip,
            "status.hostIPs": self.host_ip,
        }
        if path in simple:
            return simple[path]
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if match:
            source = self.labels if match.group(1) == "labels" else self.annotations
            return source.get(match.group(2), "")
        raise ConfigError(f"fieldRef {path!r} is not supported by the downward API")


_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: unknown references stay as written, `$$` escapes."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


async def _key_from(
    lookup: Lookup, namespace: str, kind: str, ref: Mapping[str, Any]
) -> str | None:
    name = str(ref.get("name", ""))
    key = str(ref.get("key", ""))
    optional = bool(ref.get("optional", False))
    data = await (lookup.secret if kind == "secret" else lookup.config_map)(namespace, name)
    if data is None:
        if optional:
            return None
        raise ConfigError(f'{kind} "{name}" not found')
    if key not in data:
        if optional:
            return None
        raise ConfigError(f"couldn't find key {key} in {kind.capitalize()} {namespace}/{name}")
    return data[key]


async def container_env(
    container: Mapping[str, Any],
    facts: PodFacts,
    lookup: Lookup,
    extra: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """The container's environment in the kubelet's order: extras (service env), envFrom, env."""
    env: dict[str, str] = dict(extra)
    for source in container.get("envFrom") or ():
        prefix = str(source.get("prefix", ""))
        for kind, field in (("configMap", "configMapRef"), ("secret", "secretRef")):
            ref = source.get(field)
            if not ref:
                continue
            name = str(ref.get("name", ""))
            data = await (lookup.secret if kind == "secret" else lookup.config_map)(
                facts.namespace, name
            )
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind} "{name}" not found')
            for key, item_value in data.items():
                env[prefix + key] = item_value
    for item in container.get("env") or ():
        name = str(item["name"])
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = facts.field(str(source["fieldRef"]["fieldPath"]))
        elif "secretKeyRef" in source:
            value = await _key_from(lookup, facts.namespace, "secret", source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            value = await _key_from(lookup, facts.namespace, "configmap", source["configMapKeyRef"])
        elif "resourceFieldRef" in source:
            value = _resource_value(container, source["resourceFieldRef"])
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[name] = value
    return list(env.items())


def _resource_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(resource)
    # Without a limit the kubelet reports the node's allocatable; "0" states "unknown" here.
    return str(value) if value is not None else "0"


def run_as(pod: Mapping[str, Any], container: Mapping[str, Any]) -> str:
    """`uid[:gid]` from the security contexts (container wins), or "" for the image's USER."""
    pod_ctx = (pod.get("spec") or {}).get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    if uid is None:
        return ""
    return f"{uid}:{gid}" if gid is not None else str(uid)


def _write(directory: Path, items: Mapping[str, str], mode: int = 0o644) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for key, value in items.items():
        path = directory / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value)
        # Readable by the container's non-root user: this is a test cluster.
        path.chmod(mode)


def _select(data: Mapping[str, str], items: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    if not items:
        return dict(data)
    return {str(i.get("path", i["key"])): data[i["key"]] for i in items if i["key"] in data}


async def materialize_volumes(
    pod: Mapping[str, Any], facts: PodFacts, lookup: Lookup, root: Path
) -> dict[str, Path]:
    """Host directories for the pod's volumes, by volume name."""
    paths: dict[str, Path] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or ():
        name = str(volume["name"])
        target = root / name
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o1777)  # any container user may write, like an fsGroup'd emptyDir
        elif "configMap" in volume or "secret" in volume:
            kind = "configMap" if "configMap" in volume else "secret"
            source = volume[kind]
            ref_name = str(source.get("name") or source.get("secretName") or "")
            data = await (lookup.config_map if kind == "configMap" else lookup.secret)(
                facts.namespace, ref_name
            )
            if data is None:
                if not source.get("optional"):
                    raise ConfigError(f'{kind} "{ref_name}" not found')
                data = {}
            _write(target, _select(data, source.get("items")))
        elif "projected" in volume:
            files: dict[str, str] = {}
            for projection in volume["projected"].get("sources") or ():
                files.update(await _projection(projection, pod, facts, lookup))
            _write(target, files)
        elif "downwardAPI" in volume:
            files = {
                str(i["path"]): facts.field(str(i["fieldRef"]["fieldPath"]))
                for i in volume["downwardAPI"].get("items") or ()
                if "fieldRef" in i
            }
            _write(target, files)
        else:
            raise ConfigError(
                f"volume {name!r}: only emptyDir, configMap, secret, projected "
                "and downwardAPI volumes are supported by the test node agent"
            )
        paths[name] = target
    return paths


async def _projection(
    projection: Mapping[str, Any], pod: Mapping[str, Any], facts: PodFacts, lookup: Lookup
) -> dict[str, str]:
    if "serviceAccountToken" in projection:
        source = projection["serviceAccountToken"]
        token = await lookup.token(
            facts.namespace,
            facts.service_account,
            pod,
            source.get("audience"),
            int(source.get("expirationSeconds", 3607)),
        )
        return {str(source["path"]): token}
    if "configMap" in projection or "secret" in projection:
        kind = "configMap" if "configMap" in projection else "secret"
        source = projection[kind]
        data = await (lookup.config_map if kind == "configMap" else lookup.secret)(
            facts.namespace, str(source.get("name", ""))
        )
        if data is None:
            if source.get("optional"):
                return {}
            raise ConfigError(f'{kind} "{source.get("name")}" not found')
        return _select(data, source.get("items"))
    if "downwardAPI" in projection:
        return {
            str(i["path"]): facts.field(str(i["fieldRef"]["fieldPath"]))
            for i in projection["downwardAPI"].get("items") or ()
            if "fieldRef" in i
        }
    return {}


def container_mounts(
    container: Mapping[str, Any], volumes: Mapping[str, Path]
) -> list[tuple[str, str]]:
    mounts: list[tuple[str, str]] = []
    for mount in container.get("volumeMounts") or ():
        host = volumes.get(str(mount["name"]))
        if host is None:
            raise ConfigError(f"volumeMount {mount['name']!r} names no volume of the pod")
        if mount.get("subPath"):
            host = host / str(mount["subPath"])
        suffix = ":ro" if mount.get("readOnly") else ""
        mounts.append((f"{host}", f"{mount['mountPath']}{suffix}"))
    return mounts


def decode_secret(data: Mapping[str, str] | None) -> dict[str, str] | None:
    if data is None:
        return None
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
