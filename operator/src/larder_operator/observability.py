"""Tracing for a function's sidecar: `spec.observability.tracing`, or the operator's
cluster-wide default (the chart's `tracing` values), as the sidecar's OTEL_* variables.

The sidecar reads OpenTelemetry's standard variables (docs/observability.md); this only
writes them, so `spec.sidecar.env` can still set or override any of them by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from larder_operator.settings import SAMPLERS, OperatorSettings


class TracingSpecError(ValueError):
    """`spec.observability.tracing` cannot be used as written: the message says what."""


def tracing_env(
    function: str, spec: Mapping[str, Any], settings: OperatorSettings
) -> list[dict[str, str]]:
    """The sidecar's OTEL_* variables for this function; none when tracing is off."""
    tracing = (spec.get("observability") or {}).get("tracing") or {}
    endpoint = str(tracing.get("endpoint") or settings.tracing_endpoint or "")
    enabled = tracing.get("enabled")
    if enabled is None:
        enabled = bool(endpoint)
    if not enabled:
        return []
    if not endpoint:
        raise TracingSpecError(
            "spec.observability.tracing.enabled is true but there is no collector: set "
            "spec.observability.tracing.endpoint, or the chart's tracing.endpoint for "
            "every function"
        )
    sampler = str(tracing.get("sampler") or settings.tracing_sampler)
    if sampler not in SAMPLERS:  # the CRD enumerates them; an older CRD may not
        raise TracingSpecError(
            f"spec.observability.tracing.sampler={sampler!r} is not one of {', '.join(SAMPLERS)}"
        )
    env = [
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": endpoint},
        {"name": "OTEL_TRACES_SAMPLER", "value": sampler},
        # The function's name, so traces group by function whatever pod served them.
        {"name": "OTEL_SERVICE_NAME", "value": function},
    ]
    if "ratio" in sampler:
        ratio = tracing.get("ratio")
        value = settings.tracing_ratio if ratio is None else float(ratio)
        env.append({"name": "OTEL_TRACES_SAMPLER_ARG", "value": f"{value:g}"})
    return env
