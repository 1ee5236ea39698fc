from __future__ import annotations

import re

from tests.infra import versions
from tests.infra.provision import COMPONENTS, GROUPS

_SEMVER = re.compile(r"^v?\d+\.\d+\.\d+$")


def test_every_pinned_version_is_an_exact_release() -> None:
    pinned = [
        versions.CASSANDRA.version,
        versions.KAFKA.version,
        versions.KAFKA_LOG_BINDING.version,
        versions.KUBERNETES.version,
        versions.KUBERNETES.staging_version,
        versions.ETCD.version,
        versions.HELM.version,
    ]
    for version in pinned:
        assert _SEMVER.match(version), f"{version} is a range or pre-release, not a pin"


def test_cassandra_and_kafka_majors_are_the_supported_ones() -> None:
    assert versions.CASSANDRA.version.startswith("5.0.")
    assert versions.KAFKA.version.startswith("4.")


def test_kubernetes_staging_modules_follow_the_release() -> None:
    release = versions.KUBERNETES.version.removeprefix("v1.")
    assert versions.KUBERNETES.staging_version == f"v0.{release}"


def test_every_group_names_known_components() -> None:
    for members in GROUPS.values():
        assert set(members) <= set(COMPONENTS)
    assert {m for members in GROUPS.values() for m in members} == set(COMPONENTS)


def test_cache_entries_are_named_by_version() -> None:
    for component in COMPONENTS.values():
        assert component.entry.name.startswith(f"{component.version}-")
        assert component.entry.parent.name == component.name
