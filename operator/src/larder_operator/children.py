"""Render a StatefulFunction's Kubernetes children as plain dicts: pure functions, no API calls.

The operator server-side-applies what these return, so each dict holds exactly the fields
the operator owns; anything else on the live object (e.g. a HorizontalPodAutoscaler's or
kubectl's edits to unrelated fields) is left alone.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from larder_operator.journals import JournalConfig, journal_env, spec_hash
from larder_operator.kafka import kafka_wiring
from larder_operator.observability import TracingSpecError, tracing_env
from larder_operator.settings import OperatorSettings

GROUP = "larder.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "larder-operator"

SIDECAR_NAME = "larder-sidecar"
PUBLIC_PORT = 9000
ADMIN_PORT = 9603
INTERNAL_PORT = 9604
RESERVED_PORTS = (PUBLIC_PORT, ADMIN_PORT, INTERNAL_PORT)
DEFAULT_USER_PORT = 8080
# Kubernetes' default of 30 s is shorter than what a stopping pod may need. Native sidecars
# get SIGTERM only after the user containers have exited, and the sidecar's shutdown is
# bounded step by step (app.py, SHUTDOWN_GRACE): hand-off of its shards (up to 10 s),
# in-flight Kafka records (10 s grace), closing its servers (10 s), then draining commands
# and passivating entities. 45 s covers those plus a user function that stops promptly.
DEFAULT_TERMINATION_GRACE_SECONDS = 45

FUNCTION_LABEL = "larder.dev/function"
JOURNAL_HASH_ANNOTATION = "larder.dev/journal-hash"
# Volumes the operator adds to every pod are named with this prefix; users' may not be.
RESERVED_VOLUME_PREFIX = "larder-"
MANAGED_BY = {"app.kubernetes.io/managed-by": FIELD_MANAGER}

_DEFAULT_SIDECAR_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class InvalidSpecError(ValueError):
    """The StatefulFunction cannot be rendered as it is; the user has to fix the resource."""


@dataclass(frozen=True)
class FunctionRef:
    """Identity of the owning StatefulFunction, as needed for names and owner references."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class Children:
    service_account: dict[str, Any]
    role: dict[str, Any]
    role_binding: dict[str, Any]
    headless_service: dict[str, Any]
    service: dict[str, Any]
    deployment: dict[str, Any]
    # Only with more than one replica; None means it must not exist.
    disruption_budget: dict[str, Any] | None

    def in_apply_order(self) -> tuple[dict[str, Any], ...]:
        """RBAC and Services first, so the pods find what they need when they start."""
        budget = () if self.disruption_budget is None else (self.disruption_budget,)
        return (
            self.service_account,
            self.role,
            self.role_binding,
            self.headless_service,
            self.service,
            self.deployment,
            *budget,
        )


def sidecar_account_name(function: str) -> str:
    return f"{function}-larder"


def headless_service_name(function: str) -> str:
    return f"{function}-internal"


def selector_labels(function: str) -> dict[str, str]:
    """Deliberately minimal: a Deployment's selector is immutable."""
    return {FUNCTION_LABEL: function}


def selector_string(function: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(function).items())


def service_address(ref: FunctionRef, spec: Mapping[str, Any]) -> str:
    port = int((spec.get("service") or {}).get("port", PUBLIC_PORT))
    return f"{ref.name}.{ref.namespace}.svc:{port}"


def render_children(
    ref: FunctionRef,
    spec: Mapping[str, Any],
    journal: JournalConfig | None,
    journal_spec: Mapping[str, Any] | None,
    settings: OperatorSettings,
) -> Children:
    """Everything a StatefulFunction owns; ``journal`` None means no Journal (in memory)."""
    account = sidecar_account_name(ref.name)
    return Children(
        service_account={
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(ref, account),
        },
        role={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(ref, account),
            # Membership for sharding: the sidecar watches its headless Service's
            # EndpointSlices (they name each peer's pod), nothing more.
            "rules": [
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        role_binding={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(ref, account),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": account,
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ref.namespace}],
        },
        headless_service=_headless_service(ref),
        service=_service(ref, spec),
        deployment=_deployment(ref, spec, journal, journal_spec, settings),
        disruption_budget=_disruption_budget(ref, spec),
    )


def _disruption_budget(ref: FunctionRef, spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """One pod at a time may be evicted (a node drain), so its shards move to the others.

    With one replica a budget of one unavailable pod protects nothing, and
    ``maxUnavailable: 0`` would block every drain: none then.
    """
    if int(spec.get("replicas", 1)) <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(ref, ref.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(ref.name)},
        },
    }


def _labels(ref: FunctionRef) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": ref.name,
        "app.kubernetes.io/instance": ref.name,
        "app.kubernetes.io/component": "statefulfunction",
        "app.kubernetes.io/part-of": "larder",
        **MANAGED_BY,
        **selector_labels(ref.name),
    }


def _metadata(ref: FunctionRef, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": _labels(ref),
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": "StatefulFunction",
                "name": ref.name,
                "uid": ref.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def _service(ref: FunctionRef, spec: Mapping[str, Any]) -> dict[str, Any]:
    svc = spec.get("service") or {}
    port: dict[str, Any] = {
        "name": "http",
        "port": int(svc.get("port", PUBLIC_PORT)),
        "targetPort": "http",
        "protocol": "TCP",
    }
    if svc.get("nodePort") is not None:
        port["nodePort"] = int(svc["nodePort"])
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ref, ref.name),
        "spec": {
            "type": str(svc.get("type", "ClusterIP")),
            "selector": selector_labels(ref.name),
            "ports": [port],
        },
    }


def _headless_service(ref: FunctionRef) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ref, headless_service_name(ref.name)),
        "spec": {
            "clusterIP": "None",
            # Sidecars must see peers that are starting, to hand shards over before ready.
            "publishNotReadyAddresses": True,
            "selector": selector_labels(ref.name),
            "ports": [
                {
                    "name": "internal",
                    "port": INTERNAL_PORT,
                    "targetPort": "internal",
                    "protocol": "TCP",
                },
                # Listed so the EndpointSlices say where each pod's admin port is: the
                # operator reads every ready pod's shard map there (pod_views.py).
                {
                    "name": "admin",
                    "port": ADMIN_PORT,
                    "targetPort": "admin",
                    "protocol": "TCP",
                },
            ],
        },
    }


def _user_containers(spec: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    raw = spec.get("containers") or []
    if not raw:
        raise InvalidSpecError(
            "spec.containers is empty; list at least one container (the user function)"
        )
    names: set[str] = set()
    containers: list[dict[str, Any]] = []
    for index, given in enumerate(raw):
        container = copy.deepcopy(dict(given))
        name = container.get("name")
        if not name or not container.get("image"):
            raise InvalidSpecError(f"spec.containers[{index}] needs both name and image")
        if name == SIDECAR_NAME or name in names:
            raise InvalidSpecError(
                f"spec.containers[{index}].name={name!r} is used twice or is reserved for "
                "the Larder sidecar"
            )
        names.add(name)
        for port in container.get("ports") or ():
            if int(port.get("containerPort", 0)) in RESERVED_PORTS:
                raise InvalidSpecError(
                    f"spec.containers[{index}] uses port {port['containerPort']}, reserved "
                    "for the Larder sidecar (9000, 9603, 9604); choose another containerPort"
                )
        containers.append(container)
    # The first container is the user function; the sidecar talks to it on PORT.
    first = containers[0]
    env = first.setdefault("env", [])
    given_port = next((e for e in env if e.get("name") == "PORT"), None)
    if given_port is None:
        env.append({"name": "PORT", "value": str(DEFAULT_USER_PORT)})
        return containers, DEFAULT_USER_PORT
    try:
        return containers, int(given_port.get("value", ""))
    except ValueError:
        raise InvalidSpecError(
            f"spec.containers[0] sets PORT={given_port.get('value')!r}; the sidecar needs "
            "a literal port number there"
        ) from None


def passivation_seconds(value: str) -> str:
    """``30s`` / ``5m`` / ``1h`` / ``500ms`` as seconds, the unit the sidecar reads."""
    match = _DURATION.match(value)
    if match is None:
        raise InvalidSpecError(
            f"spec.passivationTimeout={value!r} is not a duration like 30s, 5m or 1h"
        )
    seconds = float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    return f"{seconds:g}"


def _sidecar(
    function: str,
    spec: Mapping[str, Any],
    journal: JournalConfig | None,
    user_port: int,
    settings: OperatorSettings,
) -> dict[str, Any]:
    overrides = spec.get("sidecar") or {}
    kafka = kafka_wiring(spec)
    env: list[dict[str, Any]] = [
        # The sidecar binds 127.0.0.1 by default (right for `larder dev`); in a pod the
        # kubelet probes the admin port, and clients and Services reach the public port,
        # at the pod IP, so both must listen on every interface.
        {"name": "LARDER_HOST", "value": "0.0.0.0"},
        {"name": "USER_FUNCTION_HOST", "value": "127.0.0.1"},
        {"name": "USER_FUNCTION_PORT", "value": str(user_port)},
        *journal_env(journal),
        {"name": "LARDER_LOG_LEVEL", "value": str(overrides.get("logLevel", "info"))},
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("POD_IP", "status.podIP"),
        # Membership: the sidecar watches this Service's EndpointSlices in POD_NAMESPACE.
        {"name": "LARDER_CLUSTER_SERVICE", "value": headless_service_name(function)},
        *kafka.env,
    ]
    if spec.get("passivationTimeout"):
        env.append(
            {
                "name": "LARDER_PASSIVATION_TIMEOUT",
                "value": passivation_seconds(str(spec["passivationTimeout"])),
            }
        )
    try:
        env.extend(tracing_env(function, spec, settings))
    except TracingSpecError as e:
        raise InvalidSpecError(str(e)) from e
    # User-supplied extras come last so they can override ours deliberately.
    extra = [copy.deepcopy(dict(e)) for e in overrides.get("env") or ()]
    overridden = {x["name"] for x in extra}
    env = [e for e in env if e["name"] not in overridden] + extra
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": str(overrides.get("image") or settings.sidecar_image),
        "imagePullPolicy": settings.sidecar_image_pull_policy,
        "command": ["larder-sidecar"],
        # A native sidecar: started before, stopped after, the user function (k8s >= 1.29).
        "restartPolicy": "Always",
        "ports": [
            {"name": "http", "containerPort": PUBLIC_PORT, "protocol": "TCP"},
            {"name": "admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
            {"name": "internal", "containerPort": INTERNAL_PORT, "protocol": "TCP"},
        ],
        "env": env,
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "admin"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "admin"},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": copy.deepcopy(dict(overrides.get("resources") or _DEFAULT_SIDECAR_RESOURCES)),
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            # Also set on the pod, unless spec.pod.securityContext says otherwise: the
            # sidecar passes PodSecurity `restricted` whatever the pod's choice.
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The root filesystem is read-only; Python and gRPC still want a scratch directory.
        "volumeMounts": [{"name": "larder-tmp", "mountPath": "/tmp"}, *kafka.mounts],
    }
    if kafka.env_from:
        container["envFrom"] = kafka.env_from
    return container


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


# spec.pod fields copied into the pod spec as given (the CRD's schema validated them).
_POD_FIELDS = (
    "imagePullSecrets",
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
)


def _user_volumes(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    volumes = [copy.deepcopy(dict(v)) for v in pod.get("volumes") or ()]
    for index, volume in enumerate(volumes):
        if str(volume.get("name", "")).startswith(RESERVED_VOLUME_PREFIX):
            raise InvalidSpecError(
                f"spec.pod.volumes[{index}].name={volume.get('name')!r}: names starting with "
                f"{RESERVED_VOLUME_PREFIX!r} are reserved for the volumes the operator adds; "
                "rename it"
            )
    return volumes


def _deployment(
    ref: FunctionRef,
    spec: Mapping[str, Any],
    journal: JournalConfig | None,
    journal_spec: Mapping[str, Any] | None,
    settings: OperatorSettings,
) -> dict[str, Any]:
    containers, user_port = _user_containers(spec)
    pod = spec.get("pod") or {}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": sidecar_account_name(ref.name),
        "initContainers": [_sidecar(ref.name, spec, journal, user_port, settings)],
        "containers": containers,
        "securityContext": {
            "seccompProfile": {"type": "RuntimeDefault"},
            **copy.deepcopy(dict(pod.get("securityContext") or {})),
        },
        "terminationGracePeriodSeconds": int(
            pod.get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_SECONDS)
        ),
        "volumes": [
            {"name": "larder-tmp", "emptyDir": {}},
            *kafka_wiring(spec).volumes,
            *_user_volumes(pod),
        ],
    }
    for key in _POD_FIELDS:
        if pod.get(key):
            pod_spec[key] = copy.deepcopy(pod[key])
    # Ours win: the selector label and the Journal's hash must stay as the operator sets them.
    labels = {**dict(pod.get("labels") or {}), **_labels(ref)}
    annotations = {
        **dict(pod.get("annotations") or {}),
        JOURNAL_HASH_ANNOTATION: spec_hash(journal_spec),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(ref, ref.name),
        "spec": {
            "replicas": int(spec.get("replicas", 1)),
            "selector": {"matchLabels": selector_labels(ref.name)},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }
