"""Settings: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import pytest
from larder_sidecar.settings import PublicPortLimits, SettingsError, load_settings


def test_defaults() -> None:
    s = load_settings({})
    assert (s.user_function_host, s.user_function_port) == ("127.0.0.1", 8080)
    assert (s.port, s.admin_port, s.internal_port) == (9000, 9603, 9604)
    assert s.journal_type == "memory"
    assert s.passivation_timeout == 30.0
    assert s.max_message_bytes == 12 * 1024 * 1024
    assert (s.log_level, s.log_format) == ("INFO", "text")
    assert s.journal_cassandra is None
    assert s.user_function_max_message_bytes == 4 * 1024 * 1024
    assert s.max_entity_id_bytes == 1024
    assert s.public == PublicPortLimits(
        max_url_bytes=8192,
        max_header_count=100,
        max_header_bytes=32768,
        head_timeout=10.0,
        body_timeout=20.0,
        min_body_rate=1024,
        idle_timeout=75.0,
        grpc_idle_timeout=300.0,
        max_connections=10_000,
    )


def test_public_port_limits_parsing() -> None:
    s = load_settings(
        {
            "LARDER_HTTP_MAX_URL_BYTES": "4096",
            "LARDER_HTTP_MAX_HEADERS": "50",
            "LARDER_HTTP_MAX_HEADER_BYTES": "16384",
            "LARDER_HTTP_HEAD_TIMEOUT": "500ms",
            "LARDER_HTTP_BODY_TIMEOUT": "1m",
            "LARDER_HTTP_MIN_BODY_RATE": "100",
            "LARDER_HTTP_IDLE_TIMEOUT": "5",
            "LARDER_GRPC_IDLE_TIMEOUT": "2m",
            "LARDER_MAX_CONNECTIONS": "64",
            "LARDER_USER_FUNCTION_MAX_MESSAGE_BYTES": "16777216",
            "LARDER_MAX_ENTITY_ID_BYTES": "256",
        }
    )
    assert s.public == PublicPortLimits(4096, 50, 16384, 0.5, 60.0, 100, 5.0, 120.0, 64)
    assert (s.user_function_max_message_bytes, s.max_entity_id_bytes) == (16 * 1024 * 1024, 256)


def test_parsing() -> None:
    s = load_settings(
        {
            "USER_FUNCTION_HOST": "uf",
            "USER_FUNCTION_PORT": "8081",
            "LARDER_JOURNAL_TYPE": "SQLite",
            "LARDER_JOURNAL_SQLITE_PATH": "/data/j.db",
            "LARDER_PASSIVATION_TIMEOUT": "500ms",
            "LARDER_LOG_LEVEL": "debug",
            "LARDER_LOG_FORMAT": "json",
            "POD_NAME": "p-1",
            "POD_NAMESPACE": "ns",
            "POD_IP": "10.0.0.1",
        }
    )
    assert s.user_function_target == "uf:8081"
    assert (s.journal_type, s.journal_sqlite_path) == ("sqlite", "/data/j.db")
    assert s.passivation_timeout == 0.5
    assert (s.log_level, s.log_format) == ("DEBUG", "json")
    assert (s.pod.name, s.pod.namespace, s.pod.ip) == ("p-1", "ns", "10.0.0.1")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"USER_FUNCTION_PORT": "x"}, "USER_FUNCTION_PORT='x' is not an integer"),
        ({"LARDER_PORT": "70000"}, "LARDER_PORT=70000 is not a TCP port"),
        ({"LARDER_JOURNAL_TYPE": "postgres"}, "LARDER_JOURNAL_TYPE='postgres' must be one of"),
        ({"LARDER_PASSIVATION_TIMEOUT": "soon"}, "LARDER_PASSIVATION_TIMEOUT='soon' is not a"),
        ({"LARDER_PASSIVATION_TIMEOUT": "0"}, "must be positive"),
        ({"LARDER_MAX_MESSAGE_BYTES": "10"}, "LARDER_MAX_MESSAGE_BYTES=10 is too small"),
        ({"LARDER_LOG_LEVEL": "loud"}, "LARDER_LOG_LEVEL='LOUD'"),
        ({"LARDER_ADMIN_PORT": "9000"}, "LARDER_ADMIN_PORT=9000 is the same port as LARDER_PORT"),
        ({"LARDER_UVLOOP": "maybe"}, "LARDER_UVLOOP='maybe' must be true or false"),
        ({"LARDER_HTTP_MAX_URL_BYTES": "100"}, "LARDER_HTTP_MAX_URL_BYTES=100 is too small"),
        ({"LARDER_HTTP_MAX_HEADERS": "lots"}, "LARDER_HTTP_MAX_HEADERS='lots' is not an integer"),
        ({"LARDER_HTTP_HEAD_TIMEOUT": "0"}, "LARDER_HTTP_HEAD_TIMEOUT='0' must be positive"),
        ({"LARDER_HTTP_IDLE_TIMEOUT": "never"}, "LARDER_HTTP_IDLE_TIMEOUT='never' is not a"),
        ({"LARDER_MAX_CONNECTIONS": "0"}, "LARDER_MAX_CONNECTIONS=0 is too small"),
        ({"LARDER_MAX_ENTITY_ID_BYTES": "4"}, "LARDER_MAX_ENTITY_ID_BYTES=4 is too small"),
        (
            {"LARDER_USER_FUNCTION_MAX_MESSAGE_BYTES": "1"},
            "LARDER_USER_FUNCTION_MAX_MESSAGE_BYTES=1 is too small",
        ),
        (
            {"LARDER_USER_FUNCTION_TRANSPORT": "quic"},
            "LARDER_USER_FUNCTION_TRANSPORT='quic' must be one of",
        ),
        # Parsed by the eventing package, reported like every other setting.
        ({"LARDER_KAFKA_MAX_IN_FLIGHT": "many"}, "LARDER_KAFKA_MAX_IN_FLIGHT"),
    ],
)
def test_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings(env)


def test_the_user_function_transport_is_ours_unless_grpc_is_asked_for() -> None:
    assert load_settings({}).user_function_transport == "h2"
    settings = load_settings({"LARDER_USER_FUNCTION_TRANSPORT": "grpc"})
    assert settings.user_function_transport == "grpc"


def test_view_gather_is_a_duration_and_zero_turns_it_off() -> None:
    assert load_settings({}).view_gather == 0.05
    assert load_settings({"LARDER_VIEW_GATHER": "0"}).view_gather == 0.0
    assert load_settings({"LARDER_VIEW_GATHER": "20ms"}).view_gather == 0.02
    with pytest.raises(SettingsError, match="LARDER_VIEW_GATHER='-1' must be 0 or more"):
        load_settings({"LARDER_VIEW_GATHER": "-1"})
    with pytest.raises(SettingsError, match="LARDER_VIEW_GATHER='soon' is not a duration"):
        load_settings({"LARDER_VIEW_GATHER": "soon"})
