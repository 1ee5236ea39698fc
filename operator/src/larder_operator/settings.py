"""The operator's settings: one frozen dataclass, parsed from the environment once at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
SAMPLERS = (
    "parentbased_traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "traceidratio",
    "always_on",
    "always_off",
)
"""OpenTelemetry's samplers as OTEL_TRACES_SAMPLER names them (the sidecar takes these)."""


class SettingsError(ValueError):
    """An environment variable is missing or malformed; fix the deployment and restart."""


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator reads from its environment.

    Every field names its variable in ``from_env``; the Helm chart sets them all.
    """

    sidecar_image: str
    sidecar_image_pull_policy: str = "IfNotPresent"
    # Empty means cluster-wide: one watch over every namespace.
    namespaces: tuple[str, ...] = ()
    # None means standalone: one operator replica, no peering resource needed.
    peering_name: str | None = None
    resync_interval: float = 60.0
    journal_check_interval: float = 30.0
    journal_check_timeout: float = 5.0
    # How often every function's ready pods are asked for their shard map, how long each
    # may take to answer, and how long they may disagree before it is reported.
    shard_map_interval: float = 15.0
    shard_map_timeout: float = 2.0
    shard_map_grace: float = 30.0
    # All interfaces by default: the kubelet probes the pod's IP.
    health_host: str = "0.0.0.0"
    health_port: int = 8081
    log_level: str = "INFO"
    # Tracing for every function without its own `spec.observability.tracing`: the
    # collector (OTLP over gRPC; empty: off), the sampler and its ratio.
    tracing_endpoint: str = ""
    tracing_sampler: str = "parentbased_traceidratio"
    tracing_ratio: float = 0.1

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        """Parse and validate; the error names the variable at fault."""
        env = os.environ if env is None else env
        image = env.get("LARDER_SIDECAR_IMAGE", "").strip()
        if not image:
            raise SettingsError(
                "LARDER_SIDECAR_IMAGE is not set; the operator injects this image as the "
                "sidecar of every StatefulFunction (the Helm chart sets it to its own image)"
            )
        pull = env.get("LARDER_SIDECAR_IMAGE_PULL_POLICY", "IfNotPresent").strip()
        if pull not in _PULL_POLICIES:
            raise SettingsError(
                f"LARDER_SIDECAR_IMAGE_PULL_POLICY={pull!r} is not one of "
                f"{', '.join(_PULL_POLICIES)}"
            )
        raw_ns = env.get("LARDER_WATCH_NAMESPACES", "").strip()
        namespaces: tuple[str, ...] = ()
        if raw_ns not in ("", "*"):
            namespaces = tuple(sorted({n.strip() for n in raw_ns.split(",") if n.strip()}))
        peering = env.get("LARDER_PEERING_NAME", "").strip() or None
        level = env.get("LARDER_LOG_LEVEL", "INFO").strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(
                f"LARDER_LOG_LEVEL={level!r} is not one of DEBUG, INFO, WARNING, ERROR"
            )
        return cls(
            sidecar_image=image,
            sidecar_image_pull_policy=pull,
            namespaces=namespaces,
            peering_name=peering,
            resync_interval=_positive(env, "LARDER_RESYNC_INTERVAL", 60.0),
            journal_check_interval=_positive(env, "LARDER_JOURNAL_CHECK_INTERVAL", 30.0),
            journal_check_timeout=_positive(env, "LARDER_JOURNAL_CHECK_TIMEOUT", 5.0),
            shard_map_interval=_positive(env, "LARDER_SHARD_MAP_INTERVAL", 15.0),
            shard_map_timeout=_positive(env, "LARDER_SHARD_MAP_TIMEOUT", 2.0),
            shard_map_grace=_positive(env, "LARDER_SHARD_MAP_GRACE", 30.0),
            health_host=env.get("LARDER_OPERATOR_HEALTH_HOST", "").strip() or "0.0.0.0",
            health_port=int(_positive(env, "LARDER_OPERATOR_HEALTH_PORT", 8081)),
            log_level=level,
            **_tracing(env),
        )


def _tracing(env: Mapping[str, str]) -> dict[str, Any]:
    endpoint = env.get("LARDER_TRACING_ENDPOINT", "").strip()
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise SettingsError(
            f"LARDER_TRACING_ENDPOINT={endpoint!r} is not an OTLP/gRPC collector address "
            "like http://collector.observability:4317"
        )
    sampler = env.get("LARDER_TRACING_SAMPLER", "").strip() or "parentbased_traceidratio"
    if sampler not in SAMPLERS:
        raise SettingsError(f"LARDER_TRACING_SAMPLER={sampler!r} is not one of {SAMPLERS}")
    raw = env.get("LARDER_TRACING_SAMPLER_ARG", "").strip()
    try:
        ratio = float(raw) if raw else 0.1
    except ValueError:
        raise SettingsError(f"LARDER_TRACING_SAMPLER_ARG={raw!r} is not a number") from None
    if not 0 <= ratio <= 1:
        raise SettingsError(f"LARDER_TRACING_SAMPLER_ARG={raw!r} is a share: between 0 and 1")
    return {"tracing_endpoint": endpoint, "tracing_sampler": sampler, "tracing_ratio": ratio}


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number (seconds or a port)") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be greater than zero")
    return value
