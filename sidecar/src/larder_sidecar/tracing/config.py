"""Tracing's configuration from OpenTelemetry's standard environment variables.

Tracing is on when an exporter is named (`OTEL_TRACES_EXPORTER=otlp` or `console`) or
an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`)
— not by default, unlike OpenTelemetry's own SDK: a sidecar without a collector must not
spend a core on spans nobody receives. `OTEL_SDK_DISABLED=true` or
`OTEL_TRACES_EXPORTER=none` turns it off whatever else is set. A value we cannot use is a
start-up error naming the variable, as for every other setting.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Exporter = Literal["otlp", "console"]
Encoder = Literal["lean", "sdk"]
SamplerName = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
_SAMPLERS: tuple[SamplerName, ...] = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
DEFAULT_ENDPOINT = "http://localhost:4317"


class TracingConfigError(ValueError):
    """An OTEL_* variable cannot be used: the message names it and what would work."""


@dataclass(frozen=True, slots=True)
class TracingConfig:
    exporter: Exporter = "otlp"
    endpoint: str = DEFAULT_ENDPOINT
    """OTLP over gRPC: `host:port` with `http://` (plaintext) or `https://` (TLS)."""
    insecure: bool = True
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """`OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`: often credentials, so never printed."""
    timeout: float = 10.0
    sampler: SamplerName = "parentbased_always_on"
    ratio: float = 1.0
    """For the `traceidratio` samplers: the share of new traces kept."""
    service_name: str = "larder-sidecar"
    resource: Mapping[str, str] = field(default_factory=dict)
    """`OTEL_RESOURCE_ATTRIBUTES` plus the pod's name and namespace."""
    export_delay: float = 5.0
    """Seconds between batch exports (`OTEL_BSP_SCHEDULE_DELAY`, milliseconds there)."""
    encoder: Encoder = "lean"
    """`LARDER_TRACING_ENCODER`: OTLP requests made by the sidecar's own encoder (`lean`,
    `otlp_wire.py`) or by the OTLP exporter's (`sdk`: the same message, at three times
    the CPU; kept to compare, and as a fallback)."""


def _truthy(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"


def _pairs(env: Mapping[str, str], name: str) -> dict[str, str]:
    """`key=value,key=value` with percent-encoded values (the OTEL_* list format)."""
    raw = env.get(name, "").strip()
    out: dict[str, str] = {}
    if not raw:
        return out
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TracingConfigError(f"{name}: {item.strip()!r} is not key=value")
        out[key.strip()] = urllib.parse.unquote(value.strip())
    return out


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise TracingConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise TracingConfigError(f"{name}={raw!r} is negative")
    return value


def tracing_config(env: Mapping[str, str]) -> TracingConfig | None:
    """The tracing configuration, or None when tracing is off."""
    if _truthy(env, "OTEL_SDK_DISABLED"):
        return None
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )
    if exporter == "none" or (not exporter and not endpoint):
        return None
    if exporter not in ("", "otlp", "console"):
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={exporter!r}: the sidecar exports with otlp (to a "
            "collector) or console (to its stdout), or none"
        )
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or "grpc"
    )
    if protocol != "grpc":
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: the sidecar exports OTLP over gRPC "
            "only (a collector's port 4317); set grpc or leave it unset"
        )
    endpoint = endpoint or DEFAULT_ENDPOINT
    parsed = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT={endpoint!r} is not http(s)://host:port"
        )
    insecure = parsed.scheme == "http"
    if env.get("OTEL_EXPORTER_OTLP_INSECURE", "").strip():
        insecure = _truthy(env, "OTEL_EXPORTER_OTLP_INSECURE")
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if sampler not in _SAMPLERS:
        raise TracingConfigError(f"OTEL_TRACES_SAMPLER={sampler!r}: one of {', '.join(_SAMPLERS)}")
    ratio = _number(env, "OTEL_TRACES_SAMPLER_ARG", 1.0)
    if ratio > 1:
        raise TracingConfigError(
            f"OTEL_TRACES_SAMPLER_ARG={ratio:g} is a share of traces: between 0 and 1"
        )
    resource = _pairs(env, "OTEL_RESOURCE_ATTRIBUTES")
    for variable, attribute in (
        ("POD_NAME", "k8s.pod.name"),
        ("POD_NAMESPACE", "k8s.namespace.name"),
    ):
        if env.get(variable, "").strip():
            resource.setdefault(attribute, env[variable].strip())
    encoder = env.get("LARDER_TRACING_ENCODER", "").strip().lower() or "lean"
    if encoder not in ("lean", "sdk"):
        raise TracingConfigError(
            f"LARDER_TRACING_ENCODER={encoder!r}: lean (the sidecar's OTLP encoder, the "
            "default) or sdk (the OTLP exporter's own)"
        )
    headers = _pairs(env, "OTEL_EXPORTER_OTLP_HEADERS")
    headers.update(_pairs(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"))
    return TracingConfig(
        exporter="console" if exporter == "console" else "otlp",
        endpoint=f"{parsed.scheme}://{parsed.netloc}",
        insecure=insecure,
        headers=headers,
        timeout=_number(env, "OTEL_EXPORTER_OTLP_TIMEOUT", 10_000) / 1000,
        sampler=sampler,
        ratio=ratio,
        service_name=env.get("OTEL_SERVICE_NAME", "").strip()
        or resource.get("service.name", "larder-sidecar"),
        resource=resource,
        export_delay=_number(env, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
        encoder="sdk" if encoder == "sdk" else "lean",
    )
