"""`spec.kafka`: where the sidecar finds Kafka for eventing, rendered into its container.

Settings come from the user's ConfigMap and Secret by reference (`envFrom`) or as a
properties file mounted from a Secret; the operator never reads them, so credentials
are never copied into the Deployment's plain env values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PROPERTIES_DIR = "/etc/larder/kafka"
PROPERTIES_FILE = "kafka.properties"
PROPERTIES_VOLUME = "larder-kafka-properties"


@dataclass(frozen=True)
class KafkaWiring:
    """What `spec.kafka` adds to the sidecar container and the pod."""

    env: list[dict[str, Any]] = field(default_factory=list)
    env_from: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)


def kafka_wiring(spec: Mapping[str, Any]) -> KafkaWiring:
    """The sidecar's Kafka settings from `spec.kafka` (nothing when it is absent).

    - `configMapRef.name` / `secretRef.name`: every key is a `LARDER_KAFKA_*` variable
      (e.g. `LARDER_KAFKA_BOOTSTRAP_SERVERS` in the ConfigMap,
      `LARDER_KAFKA_SASL_PASSWORD` in the Secret), loaded with `envFrom`.
    - `propertiesSecretRef: {name, key}`: a Kafka properties file, mounted read-only
      and named by `LARDER_KAFKA_PROPERTIES_FILE`.
    - `deadLetterTopic`: `LARDER_KAFKA_DEAD_LETTER_TOPIC`.
    """
    kafka = spec.get("kafka") or {}
    wiring = KafkaWiring()
    if kafka.get("configMapRef"):
        wiring.env_from.append({"configMapRef": {"name": kafka["configMapRef"]["name"]}})
    if kafka.get("secretRef"):
        wiring.env_from.append({"secretRef": {"name": kafka["secretRef"]["name"]}})
    properties = kafka.get("propertiesSecretRef")
    if properties:
        wiring.volumes.append({
            "name": PROPERTIES_VOLUME,
            "secret": {
                "secretName": properties["name"],
                "items": [{"key": properties.get("key") or PROPERTIES_FILE,
                           "path": PROPERTIES_FILE}],
            },
        })
        wiring.mounts.append(
            {"name": PROPERTIES_VOLUME, "mountPath": PROPERTIES_DIR, "readOnly": True}
        )
        wiring.env.append({
            "name": "LARDER_KAFKA_PROPERTIES_FILE",
            "value": f"{PROPERTIES_DIR}/{PROPERTIES_FILE}",
        })
    if kafka.get("deadLetterTopic"):
        wiring.env.append(
            {"name": "LARDER_KAFKA_DEAD_LETTER_TOPIC", "value": str(kafka["deadLetterTopic"])}
        )
    return wiring
