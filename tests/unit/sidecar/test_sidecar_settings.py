"""Settings: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import pytest
from larder_sidecar.settings import SettingsError, load_settings


def test_defaults() -> None:
    s = load_settings({})
    assert (s.user_function_host, s.user_function_port) == ("127.0.0.1", 8080)
    assert (s.port, s.admin_port, s.internal_port) == (9000, 9603, 9604)
    assert s.journal_type == "memory"
    assert s.passivation_timeout == 30.0
    assert s.max_message_bytes == 12 * 1024 * 1024
    assert (s.log_level, s.log_format) == ("INFO", "text")
    assert s.journal_cassandra is None


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
        # Parsed by the eventing package, reported like every other setting.
        ({"LARDER_KAFKA_MAX_IN_FLIGHT": "many"}, "LARDER_KAFKA_MAX_IN_FLIGHT"),
    ],
)
def test_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings(env)
