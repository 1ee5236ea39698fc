"""`spec.kafka` on a real kube-apiserver: the CRD accepts it and the operator wires the
referenced ConfigMap, Secret and properties file into the sidecar."""

from __future__ import annotations

from tests.integration.operator.conftest import Kubectl, wait_for

MANIFEST = """
apiVersion: larder.dev/v1alpha1
kind: Journal
metadata: {name: main}
spec: {type: InMemory}
---
apiVersion: v1
kind: Secret
metadata: {name: kafka-login}
stringData:
  LARDER_KAFKA_SASL_PASSWORD: not-in-the-deployment
---
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {name: turkey}
spec:
  journal: main
  containers:
    - name: fn
      image: example/turkey:1
  kafka:
    configMapRef: {name: kafka-settings}
    secretRef: {name: kafka-login}
    propertiesSecretRef: {name: kafka-props}
    deadLetterTopic: turkey-dlq
"""


def test_kafka_settings_reach_the_sidecar_by_reference(
    kubectl: Kubectl, namespace: str
) -> None:
    result = kubectl.apply(MANIFEST, namespace)
    assert result.returncode == 0, result.stderr
    deployment = wait_for(
        "the Deployment", lambda: kubectl.get("deployment", "turkey", namespace)
    )
    pod = deployment["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["envFrom"] == [
        {"configMapRef": {"name": "kafka-settings"}},
        {"secretRef": {"name": "kafka-login"}},
    ]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["LARDER_KAFKA_PROPERTIES_FILE"] == "/etc/larder/kafka/kafka.properties"
    assert env["LARDER_KAFKA_DEAD_LETTER_TOPIC"] == "turkey-dlq"
    assert "not-in-the-deployment" not in str(deployment)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "larder-kafka-properties"]
    # The CRD's default key, filled in by the API server.
    assert volume["secret"]["secretName"] == "kafka-props"
    assert volume["secret"]["items"] == [{"key": "kafka.properties", "path": "kafka.properties"}]
    assert {"name": "larder-kafka-properties", "mountPath": "/etc/larder/kafka",
            "readOnly": True} in sidecar["volumeMounts"]


def test_the_crd_refuses_a_reference_without_a_name(kubectl: Kubectl, namespace: str) -> None:
    bad = """
apiVersion: larder.dev/v1alpha1
kind: StatefulFunction
metadata: {name: nameless}
spec:
  containers: [{name: fn, image: example/turkey:1}]
  kafka: {secretRef: {}}
"""
    result = kubectl.apply(bad, namespace)
    assert result.returncode != 0
    assert "spec.kafka.secretRef.name: Required value" in result.stderr
