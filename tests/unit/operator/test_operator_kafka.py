"""`spec.kafka` rendered into the sidecar: references, never copied values."""

from __future__ import annotations

from typing import Any

from larder_operator.children import FunctionRef, render_children
from larder_operator.settings import OperatorSettings

REF = FunctionRef(name="turkey", namespace="kitchen", uid="uid-1")
SETTINGS = OperatorSettings(sidecar_image="larder:test")


def pod_of(spec: dict[str, Any]) -> dict[str, Any]:
    full = {"containers": [{"name": "fn", "image": "example/turkey:1"}], **spec}
    deployment = render_children(REF, full, None, None, SETTINGS).deployment
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def test_config_map_and_secret_are_loaded_by_reference_with_env_from() -> None:
    pod = pod_of({"kafka": {
        "configMapRef": {"name": "kafka-settings"},
        "secretRef": {"name": "kafka-login"},
        "deadLetterTopic": "turkey-dlq",
    }})
    (sidecar,) = pod["initContainers"]
    assert sidecar["envFrom"] == [
        {"configMapRef": {"name": "kafka-settings"}},
        {"secretRef": {"name": "kafka-login"}},
    ]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["LARDER_KAFKA_DEAD_LETTER_TOPIC"] == "turkey-dlq"
    assert not [name for name in env if "SASL" in name or "BOOTSTRAP" in name]
    # The user function gets none of it.
    assert "envFrom" not in pod["containers"][0]


def test_properties_file_from_a_secret_is_mounted_read_only_and_named() -> None:
    pod = pod_of(
        {"kafka": {"propertiesSecretRef": {"name": "kafka-props", "key": "client.properties"}}}
    )
    (sidecar,) = pod["initContainers"]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["LARDER_KAFKA_PROPERTIES_FILE"] == "/etc/larder/kafka/kafka.properties"
    assert {"name": "larder-kafka-properties", "mountPath": "/etc/larder/kafka",
            "readOnly": True} in sidecar["volumeMounts"]
    assert {"name": "larder-kafka-properties", "secret": {
        "secretName": "kafka-props",
        "items": [{"key": "client.properties", "path": "kafka.properties"}],
    }} in pod["volumes"]
    assert "envFrom" not in sidecar


def test_without_spec_kafka_nothing_is_added() -> None:
    pod = pod_of({})
    (sidecar,) = pod["initContainers"]
    assert "envFrom" not in sidecar
    assert not [e for e in sidecar["env"] if e["name"].startswith("LARDER_KAFKA_")]
    assert [v["name"] for v in pod["volumes"]] == ["larder-tmp"]
