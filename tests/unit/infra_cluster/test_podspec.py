"""Environment, users and volumes resolved the kubelet's way, with a fake API."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.infra.cluster import podspec

POD: dict[str, Any] = {
    "metadata": {
        "name": "p",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"app": "a"},
        "annotations": {"note": "n"},
    },
    "spec": {"nodeName": "node-0", "serviceAccountName": "sa"},
}
FACTS = podspec.PodFacts.of(POD, "10.244.7.9", "127.0.0.1")


class FakeLookup:
    def __init__(self) -> None:
        self.maps = {"settings": {"greeting": "hello", "color": "blue"}}
        self.secrets = {"creds": {"password": "s3cret"}}
        self.tokens: list[tuple[str, str, str | None]] = []

    async def config_map(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.maps.get(name)

    async def secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.secrets.get(name)

    async def token(
        self,
        namespace: str,
        account: str,
        pod: Mapping[str, Any],
        audience: str | None,
        seconds: int,
    ) -> str:
        self.tokens.append((namespace, account, audience))
        return "token-for-" + account


def test_expansion_of_references() -> None:
    env = {"A": "1", "B": "two"}
    assert podspec.expand("$(A)-$(B)-$(C)-$$(A)", env) == "1-two-$(C)-$(A)"


async def test_env_in_the_kubelets_order_with_every_source() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "env": [
            {
                "name": "PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
            },
            {
                "name": "GREETING",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}},
            },
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "MSG", "value": "$(GREETING) $(POD)"},
            {"name": "EMPTY"},
            {
                "name": "MAYBE",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
        ],
    }
    env = dict(await podspec.container_env(container, FACTS, FakeLookup(), [("HOST", "h")]))
    assert env == {
        "HOST": "h",
        "CFG_greeting": "hello",
        "CFG_color": "blue",
        "PASSWORD": "s3cret",
        "GREETING": "hello",
        "POD": "p",
        "IP": "10.244.7.9",
        "APP": "a",
        "MSG": "hello p",
        "EMPTY": "",
    }


async def test_a_missing_key_is_a_config_error_naming_it() -> None:
    container = {
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}}]
    }
    with pytest.raises(podspec.ConfigError, match="couldn't find key user in Secret ns/creds"):
        await podspec.container_env(container, FACTS, FakeLookup())
    with pytest.raises(podspec.ConfigError, match='configMap "gone" not found'):
        await podspec.container_env(
            {"envFrom": [{"configMapRef": {"name": "gone"}}]}, FACTS, FakeLookup()
        )


def test_run_as_prefers_the_containers_context() -> None:
    pod = {"spec": {"securityContext": {"runAsUser": 1, "runAsGroup": 2}}}
    assert podspec.run_as(pod, {}) == "1:2"
    assert podspec.run_as(pod, {"securityContext": {"runAsUser": 5}}) == "5:2"
    assert podspec.run_as({"spec": {}}, {}) == ""


async def test_volumes_are_materialized_with_the_service_account_files(tmp_path: Path) -> None:
    pod = {
        **POD,
        "spec": {
            **POD["spec"],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {
                    "name": "cfg",
                    "configMap": {"name": "settings", "items": [{"key": "color", "path": "c.txt"}]},
                },
                {
                    "name": "api",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"path": "token"}},
                            {
                                "configMap": {
                                    "name": "settings",
                                    "items": [{"key": "greeting", "path": "ca.crt"}],
                                }
                            },
                            {
                                "downwardAPI": {
                                    "items": [
                                        {
                                            "path": "namespace",
                                            "fieldRef": {"fieldPath": "metadata.namespace"},
                                        }
                                    ]
                                }
                            },
                        ]
                    },
                },
            ],
        },
    }
    lookup = FakeLookup()
    paths = await podspec.materialize_volumes(pod, FACTS, lookup, tmp_path)
    assert paths["scratch"].is_dir()
    assert (paths["cfg"] / "c.txt").read_text() == "blue"
    api = paths["api"]
    assert {p.name: p.read_text() for p in api.iterdir()} == {
        "token": "token-for-sa",
        "ca.crt": "hello",
        "namespace": "ns",
    }
    assert lookup.tokens == [("ns", "sa", None)]
    mounts = podspec.container_mounts(
        {"volumeMounts": [{"name": "api", "mountPath": "/var/run/x", "readOnly": True}]}, paths
    )
    assert mounts == [(str(api), "/var/run/x:ro")]
    with pytest.raises(podspec.ConfigError, match="names no volume"):
        podspec.container_mounts({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, paths)


async def test_an_unsupported_volume_is_refused_by_name(tmp_path: Path) -> None:
    pod = {**POD, "spec": {"volumes": [{"name": "disk", "hostPath": {"path": "/"}}]}}
    with pytest.raises(podspec.ConfigError, match="volume 'disk'"):
        await podspec.materialize_volumes(pod, FACTS, FakeLookup(), tmp_path)
