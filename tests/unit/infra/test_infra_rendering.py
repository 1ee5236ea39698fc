from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.infra import provision, versions
from tests.infra.cassandra import CassandraConfig, jvm_options, render_yaml
from tests.infra.certs import ControlPlaneCerts
from tests.infra.gobuild import (
    kubernetes_version_ldflags,
    ldflags_arg,
    render_go_mod,
    staging_modules,
)
from tests.infra.kafka import KafkaConfig, new_cluster_id, render_properties
from tests.infra.kube import apiserver_args, render_kubeconfig
from tests.infra.maven import render_pom
from tests.infra.versions import MavenArtifact


def test_cassandra_yaml_is_a_single_loopback_node(tmp_path: Path) -> None:
    config = CassandraConfig(tmp_path, port=19042, storage_port=17000)
    settings = yaml.safe_load(render_yaml(config))
    assert settings["native_transport_port"] == 19042
    assert settings["storage_port"] == 17000
    assert settings["num_tokens"] == 1
    assert settings["listen_address"] == settings["rpc_address"] == "127.0.0.1"
    assert settings["authenticator"] == "AllowAllAuthenticator"
    seeds = settings["seed_provider"][0]["parameters"][0]["seeds"]
    assert seeds == "127.0.0.1:17000"
    for key in ("commitlog_directory", "hints_directory", "saved_caches_directory"):
        assert Path(settings[key]).is_relative_to(tmp_path)
    assert all(Path(d).is_relative_to(tmp_path) for d in settings["data_file_directories"])


def test_cassandra_jvm_options_bound_the_heap_and_open_jdk_internals(tmp_path: Path) -> None:
    options = jvm_options(CassandraConfig(tmp_path, port=1, storage_port=2))
    assert "-Xmx1g" in options
    assert "--add-opens=java.base/java.nio=ALL-UNNAMED" in options
    assert "-Dcassandra.skip_wait_for_gossip_to_settle=0" in options
    assert not any(o.startswith("-Dcom.sun.management.jmxremote.port") for o in options)


def test_kafka_properties_are_one_kraft_node(tmp_path: Path) -> None:
    config = KafkaConfig(tmp_path, port=19092, controller_port=19093, cluster_id="x")
    lines = render_properties(config).splitlines()
    props = dict(line.split("=", 1) for line in lines)
    assert len(props) == len(lines)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert config.bootstrap_servers == "127.0.0.1:19092"


def test_kafka_cluster_ids_are_random_16_byte_uuids() -> None:
    first, second = new_cluster_id(), new_cluster_id()
    assert first != second
    assert len(first) == 22
    assert len(base64.urlsafe_b64decode(first + "==")) == 16


def test_pom_lists_the_server_and_extras() -> None:
    pom = render_pom(MavenArtifact("g", "a", "1"), [MavenArtifact("h", "b", "2")])
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    deps = ET.fromstring(pom).findall("m:dependencies/m:dependency", ns)
    found = [
        tuple(d.findtext(f"m:{t}", namespaces=ns) for t in ("groupId", "artifactId", "version"))
        for d in deps
    ]
    assert found == [("g", "a", "1"), ("h", "b", "2")]


def test_go_mod_requires_and_replaces() -> None:
    text = render_go_mod(
        "example/w", "1.24.0", [("k8s.io/kubernetes", "v1.34.4")], [("k8s.io/api", "v0.34.4")]
    )
    assert "module example/w" in text
    assert "\tk8s.io/kubernetes v1.34.4" in text
    assert "\tk8s.io/api => k8s.io/api v0.34.4" in text


def test_staging_modules_are_read_from_the_replace_block() -> None:
    go_mod = """module k8s.io/kubernetes
require (
\tk8s.io/api v0.0.0
\tgithub.com/x/y v1.0.0
)
replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/x/y => github.com/x/y v1.0.1
)
"""
    assert staging_modules(go_mod) == ["k8s.io/api", "k8s.io/client-go"]


def _x_flags(flags: tuple[str, ...]) -> dict[str, str]:
    assert flags[::2] == ("-X",) * (len(flags) // 2)
    return dict(flag.split("=", 1) for flag in flags[1::2])


def test_kubernetes_version_flags_set_both_version_packages() -> None:
    found = _x_flags(kubernetes_version_ldflags("v1.34.4"))
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert found[f"{package}.gitVersion"] == "v1.34.4"
        assert found[f"{package}.gitMajor"] == "1"
        assert found[f"{package}.gitMinor"] == "34"
        assert found[f"{package}.gitTreeState"] == "clean"
    assert len(found) == 8


@pytest.mark.parametrize("version", ["1.34.4", "v1.34", "v1.34.4-rc.1", "master"])
def test_kubernetes_version_flags_refuse_what_is_not_a_release(version: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes release version"):
        kubernetes_version_ldflags(version)


def test_ldflags_keep_the_stripping_flags_first() -> None:
    assert ldflags_arg() == "-ldflags=-s -w"
    assert ldflags_arg(("-X", "a.b=c")) == "-ldflags=-s -w -X a.b=c"


def test_kubernetes_entries_are_built_with_the_pinned_version_flags() -> None:
    # The flags are part of the recipe, so the cache key changes with the version
    # they stamp; the other Go programs' entries do not depend on them.
    flags = ldflags_arg(kubernetes_version_ldflags(versions.KUBERNETES.version))
    for name in ("kube", "kubectl"):
        assert flags in provision.COMPONENTS[name].recipe
    for name in ("etcd", "helm"):
        assert "-X" not in provision.COMPONENTS[name].recipe


def _certs(d: Path) -> ControlPlaneCerts:
    return ControlPlaneCerts(
        *(
            d / n
            for n in ("ca.crt", "ca.key", "s.crt", "s.key", "a.crt", "a.key", "sa.key", "sa.pub")
        )
    )


def test_kubeconfig_points_at_the_server_with_admin_credentials(tmp_path: Path) -> None:
    config = yaml.safe_load(render_kubeconfig("https://127.0.0.1:6443", _certs(tmp_path)))
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert config["users"][0]["user"]["client-certificate"] == str(tmp_path / "a.crt")
    assert config["current-context"] == config["contexts"][0]["name"]


def test_apiserver_uses_rbac_and_service_account_keys(tmp_path: Path) -> None:
    args = apiserver_args(_certs(tmp_path), "http://127.0.0.1:2379", 16443)
    assert "--authorization-mode=RBAC" in args
    assert "--secure-port=16443" in args
    assert "--bind-address=127.0.0.1" in args
    assert f"--service-account-signing-key-file={tmp_path / 'sa.key'}" in args
