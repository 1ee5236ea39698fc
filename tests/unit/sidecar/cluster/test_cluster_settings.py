"""`LARDER_CLUSTER_*` and `LARDER_SHARD_COUNT`: parsed once, errors that name the variable."""

from __future__ import annotations

import pytest
from larder_sidecar.settings import (
    DEFAULT_SHARD_COUNT,
    ClusterSettings,
    SettingsError,
    load_settings,
)


def test_without_cluster_variables_the_sidecar_is_alone() -> None:
    assert load_settings({}).cluster == ClusterSettings()
    assert ClusterSettings().shard_count == DEFAULT_SHARD_COUNT == 16384


def test_a_static_member_list() -> None:
    cluster = load_settings(
        {
            "POD_NAME": "b",
            "LARDER_CLUSTER_MEMBERS": " a=127.0.0.1:9604, b=localhost:9614 ,c=[::1]:9624",
            "LARDER_SHARD_COUNT": "1024",
        }
    ).cluster
    assert cluster.members == (
        ("a", "127.0.0.1:9604"),
        ("b", "localhost:9614"),
        ("c", "[::1]:9624"),
    )
    assert cluster.shard_count == 1024
    assert cluster.service == ""


def test_membership_from_kubernetes() -> None:
    cluster = load_settings(
        {"POD_NAME": "cart-x", "POD_NAMESPACE": "shop", "LARDER_CLUSTER_SERVICE": "cart-internal"}
    ).cluster
    assert cluster == ClusterSettings(service="cart-internal")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LARDER_SHARD_COUNT": "0"}, "LARDER_SHARD_COUNT=0 must be between 1 and 65536"),
        ({"LARDER_SHARD_COUNT": "many"}, "LARDER_SHARD_COUNT='many' is not an integer"),
        (
            {"POD_NAME": "a", "LARDER_CLUSTER_MEMBERS": "a=h:1", "LARDER_CLUSTER_SERVICE": "s"},
            "LARDER_CLUSTER_MEMBERS and LARDER_CLUSTER_SERVICE are both set",
        ),
        (
            {"LARDER_CLUSTER_MEMBERS": "a=h:1"},
            "LARDER_CLUSTER_MEMBERS is set but POD_NAME is empty",
        ),
        (
            {"POD_NAME": "x", "LARDER_CLUSTER_SERVICE": "cart-internal"},
            "LARDER_CLUSTER_SERVICE is set but POD_NAMESPACE is empty",
        ),
        (
            {"POD_NAME": "z", "LARDER_CLUSTER_MEMBERS": "a=h:1,b=h:2"},
            "POD_NAME='z' is not one of the LARDER_CLUSTER_MEMBERS ids (a, b)",
        ),
        (
            {"POD_NAME": "a", "LARDER_CLUSTER_MEMBERS": "a=h:1,h:2"},
            "LARDER_CLUSTER_MEMBERS: 'h:2' is not id=host:port",
        ),
        (
            {"POD_NAME": "a", "LARDER_CLUSTER_MEMBERS": "a=h:1,,b=h:2"},
            "LARDER_CLUSTER_MEMBERS: '' is not id=host:port",
        ),
        (
            {"POD_NAME": "a", "LARDER_CLUSTER_MEMBERS": "a=h"},
            "the address of 'a', 'h', is not host:port",
        ),
        (
            {"POD_NAME": "a", "LARDER_CLUSTER_MEMBERS": "a=h:70000"},
            "the address of 'a', 'h:70000', is not host:port",
        ),
        (
            {"POD_NAME": "a", "LARDER_CLUSTER_MEMBERS": "a=h:1,a=h:2"},
            "the id 'a' appears twice",
        ),
        (
            {"POD_NAME": "a", "LARDER_CLUSTER_MEMBERS": "a=h:1,b=h:1"},
            "the address h:1 appears twice",
        ),
    ],
)
def test_bad_cluster_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert message in str(caught.value)
