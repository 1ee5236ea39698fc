"""Kafka settings from LARDER_KAFKA_* and a properties file."""

from __future__ import annotations

from pathlib import Path

import pytest
from larder_sidecar.eventing import KafkaSettingsError, load_kafka_settings


def test_off_without_bootstrap_servers() -> None:
    settings = load_kafka_settings({})
    assert not settings.enabled
    assert not settings.turned_off


def test_env_settings_become_client_config(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = load_kafka_settings({
        "LARDER_KAFKA_BOOTSTRAP_SERVERS": "k1:9093,k2:9093",
        "LARDER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LARDER_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "LARDER_KAFKA_SASL_USERNAME": "u",
        "LARDER_KAFKA_SASL_PASSWORD": "s3cr3t-pw",
        "LARDER_KAFKA_SSL_CA_FILE": str(ca),
        "LARDER_KAFKA_DEAD_LETTER_TOPIC": "dlq",
    })
    assert settings.client_config() == {
        "bootstrap.servers": "k1:9093,k2:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "s3cr3t-pw",
        "ssl.ca.location": str(ca),
    }
    assert settings.dead_letter_topic == "dlq"
    assert "s3cr3t-pw" not in repr(settings)  # secrets stay out of logs


def test_properties_file_with_env_overrides_and_pass_through(tmp_path: Path) -> None:
    props = tmp_path / "kafka.properties"
    props.write_text(
        "# from a ConfigMap\n"
        "bootstrap.servers = file:9092\n"
        "security.protocol: sasl_plaintext\n"
        "sasl.mechanism=PLAIN\n"
        "sasl.username=fileuser\n"
        "sasl.password=a=b\n"
        "session.timeout.ms=6000\n"
    )
    settings = load_kafka_settings({
        "LARDER_KAFKA_PROPERTIES_FILE": str(props),
        "LARDER_KAFKA_SASL_USERNAME": "envuser",
    })
    config = settings.client_config()
    assert config["bootstrap.servers"] == "file:9092"
    assert config["sasl.username"] == "envuser"
    assert config["sasl.password"] == "a=b"
    assert config["session.timeout.ms"] == "6000"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LARDER_KAFKA_SECURITY_PROTOCOL": "tls"},
         "LARDER_KAFKA_SECURITY_PROTOCOL='tls' must be one of plaintext, ssl"),
        ({"LARDER_KAFKA_SECURITY_PROTOCOL": "sasl_ssl"},
         "security protocol sasl_ssl needs LARDER_KAFKA_SASL_MECHANISM"),
        ({"LARDER_KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "LARDER_KAFKA_SASL_MECHANISM": "PLAIN"},
         "needs LARDER_KAFKA_SASL_USERNAME and LARDER_KAFKA_SASL_PASSWORD"),
        ({"LARDER_KAFKA_SASL_MECHANISM": "PLAIN"},
         "LARDER_KAFKA_SASL_MECHANISM='PLAIN' has no effect with security protocol plaintext"),
        ({"LARDER_KAFKA_SSL_CA_FILE": "/nope/ca.pem"},
         "LARDER_KAFKA_SSL_CA_FILE='/nope/ca.pem' is not a file"),
        ({"LARDER_KAFKA_PROPERTIES_FILE": "/nope/kafka.properties"},
         "LARDER_KAFKA_PROPERTIES_FILE='/nope/kafka.properties' cannot be read"),
        ({"LARDER_EVENTING": "maybe"}, "LARDER_EVENTING='maybe' must be on or off"),
    ],
)
def test_bad_settings_name_what_to_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(KafkaSettingsError) as caught:
        load_kafka_settings(env)
    assert message in str(caught.value)


def test_properties_file_may_not_weaken_delivery(tmp_path: Path) -> None:
    props = tmp_path / "p"
    props.write_text("enable.auto.commit=true\nacks=1\n")
    with pytest.raises(KafkaSettingsError, match=r"sets acks, enable\.auto\.commit"):
        load_kafka_settings({"LARDER_KAFKA_PROPERTIES_FILE": str(props)})


def test_bad_properties_line(tmp_path: Path) -> None:
    props = tmp_path / "p"
    props.write_text("bootstrap.servers\n")
    with pytest.raises(KafkaSettingsError, match=r"p:1: expected key=value"):
        load_kafka_settings({"LARDER_KAFKA_PROPERTIES_FILE": str(props)})


def test_eventing_switch() -> None:
    assert load_kafka_settings({"LARDER_EVENTING": "off"}).turned_off
