"""The operator's settings come from the environment, validated with the variable named."""

from __future__ import annotations

import pytest
from larder_operator.settings import OperatorSettings, SettingsError


def test_defaults_are_clusterwide_and_standalone() -> None:
    settings = OperatorSettings.from_env({"LARDER_SIDECAR_IMAGE": "larder:1"})
    assert settings.clusterwide
    assert settings.peering_name is None
    assert settings.sidecar_image_pull_policy == "IfNotPresent"


def test_namespaces_and_peering() -> None:
    settings = OperatorSettings.from_env(
        {
            "LARDER_SIDECAR_IMAGE": "larder:1",
            "LARDER_WATCH_NAMESPACES": "b, a,,b",
            "LARDER_PEERING_NAME": "larder",
            "LARDER_RESYNC_INTERVAL": "5",
        }
    )
    assert settings.namespaces == ("a", "b")
    assert not settings.clusterwide
    assert settings.peering_name == "larder"
    assert settings.resync_interval == 5.0


def test_shard_map_check_settings() -> None:
    defaults = OperatorSettings.from_env({"LARDER_SIDECAR_IMAGE": "x"})
    assert (
        defaults.shard_map_interval, defaults.shard_map_timeout, defaults.shard_map_grace
    ) == (15.0, 2.0, 30.0)
    settings = OperatorSettings.from_env(
        {
            "LARDER_SIDECAR_IMAGE": "x",
            "LARDER_SHARD_MAP_INTERVAL": "2",
            "LARDER_SHARD_MAP_TIMEOUT": "0.5",
            "LARDER_SHARD_MAP_GRACE": "6",
        }
    )
    assert (
        settings.shard_map_interval, settings.shard_map_timeout, settings.shard_map_grace
    ) == (2.0, 0.5, 6.0)


def test_star_means_all_namespaces() -> None:
    env = {"LARDER_SIDECAR_IMAGE": "x", "LARDER_WATCH_NAMESPACES": "*"}
    assert OperatorSettings.from_env(env).clusterwide


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "LARDER_SIDECAR_IMAGE"),
        ({"LARDER_SIDECAR_IMAGE": "x", "LARDER_RESYNC_INTERVAL": "soon"}, "LARDER_RESYNC_INTERVAL"),
        ({"LARDER_SIDECAR_IMAGE": "x", "LARDER_JOURNAL_CHECK_TIMEOUT": "0"}, "CHECK_TIMEOUT"),
        ({"LARDER_SIDECAR_IMAGE": "x", "LARDER_SIDECAR_IMAGE_PULL_POLICY": "Sometimes"}, "PULL"),
        ({"LARDER_SIDECAR_IMAGE": "x", "LARDER_LOG_LEVEL": "loud"}, "LARDER_LOG_LEVEL"),
        ({"LARDER_SIDECAR_IMAGE": "x", "LARDER_SHARD_MAP_GRACE": "-1"}, "SHARD_MAP_GRACE"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        OperatorSettings.from_env(env)
