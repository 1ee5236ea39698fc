"""Tracing for a function's sidecar: spec.observability.tracing or the operator's default,
written as the sidecar's OTEL_* variables."""

from __future__ import annotations

from typing import Any

import pytest
from larder_operator.children import FunctionRef, InvalidSpecError, render_children
from larder_operator.settings import OperatorSettings, SettingsError

REF = FunctionRef(name="cart", namespace="shop", uid="uid-1")
PLAIN = OperatorSettings(sidecar_image="larder:test")
DEFAULTED = OperatorSettings(
    sidecar_image="larder:test", tracing_endpoint="http://collector.obs:4317"
)


def sidecar_env(settings: OperatorSettings, **extra: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": "fn", "image": "example/cart:1"}], **extra}
    deployment = render_children(REF, spec, None, None, settings).deployment
    [sidecar] = deployment["spec"]["template"]["spec"]["initContainers"]
    return {e["name"]: e.get("value") for e in sidecar["env"]}


def otel(env: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in env.items() if k.startswith("OTEL_")}


def test_off_without_a_collector_anywhere() -> None:
    assert otel(sidecar_env(PLAIN)) == {}


def test_the_operators_default_collector_applies_to_every_function() -> None:
    assert otel(sidecar_env(DEFAULTED)) == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.obs:4317",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_SERVICE_NAME": "cart",
    }


def test_the_functions_own_settings_win_and_it_can_opt_out() -> None:
    own = {"tracing": {"endpoint": "https://mine:4317", "sampler": "always_on"}}
    assert otel(sidecar_env(DEFAULTED, observability=own)) == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://mine:4317",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_SERVICE_NAME": "cart",
    }
    ratio = {"tracing": {"ratio": 0.01}}
    assert otel(sidecar_env(DEFAULTED, observability=ratio))["OTEL_TRACES_SAMPLER_ARG"] == "0.01"
    off = {"tracing": {"enabled": False}}
    assert otel(sidecar_env(DEFAULTED, observability=off)) == {}


def test_spec_sidecar_env_still_overrides_by_hand() -> None:
    env = sidecar_env(
        DEFAULTED,
        sidecar={"env": [{"name": "OTEL_TRACES_SAMPLER", "value": "always_off"}]},
    )
    assert env["OTEL_TRACES_SAMPLER"] == "always_off"
    assert list(env).count("OTEL_TRACES_SAMPLER") == 1


def test_enabled_without_an_endpoint_is_an_invalid_spec() -> None:
    with pytest.raises(InvalidSpecError, match=r"no collector: set spec\.observability"):
        sidecar_env(PLAIN, observability={"tracing": {"enabled": True}})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LARDER_TRACING_ENDPOINT": "collector:4317"}, "not an OTLP/gRPC collector address"),
        ({"LARDER_TRACING_SAMPLER": "sometimes"}, "not one of"),
        ({"LARDER_TRACING_SAMPLER_ARG": "2"}, "between 0 and 1"),
        ({"LARDER_TRACING_SAMPLER_ARG": "half"}, "not a number"),
    ],
)
def test_the_operators_tracing_settings_are_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        OperatorSettings.from_env({"LARDER_SIDECAR_IMAGE": "larder:test", **env})


def test_the_operators_tracing_settings_are_read() -> None:
    settings = OperatorSettings.from_env({
        "LARDER_SIDECAR_IMAGE": "larder:test",
        "LARDER_TRACING_ENDPOINT": "http://c:4317",
        "LARDER_TRACING_SAMPLER": "always_on",
        "LARDER_TRACING_SAMPLER_ARG": "0.5",
    })
    assert (settings.tracing_endpoint, settings.tracing_sampler, settings.tracing_ratio) == (
        "http://c:4317", "always_on", 0.5,
    )
