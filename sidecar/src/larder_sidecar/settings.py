"""The sidecar's settings: parsed from the environment once, at start, and validated.

Every variable is documented in docs/sidecar.md (Cassandra's in docs/journal.md, Kafka's
in docs/eventing.md). A bad value raises `SettingsError` naming the variable, so the
pod's log says exactly what to fix. The journal and eventing packages parse their own
variables; this module gathers everything into the one `Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from .durations import parse_seconds
from .eventing.settings import KafkaSettings, KafkaSettingsError, load_kafka_settings
from .journal.cassandra_settings import CassandraSettings, CassandraSettingsError

JournalType = Literal["memory", "sqlite", "cassandra"]
LogFormat = Literal["text", "json"]


class SettingsError(ValueError):
    """An environment variable has a value the sidecar cannot use: fix the deployment."""


@dataclass(frozen=True, slots=True)
class PodIdentity:
    name: str
    namespace: str
    ip: str


@dataclass(frozen=True, slots=True)
class Settings:
    user_function_host: str = "127.0.0.1"
    user_function_port: int = 8080
    host: str = "127.0.0.1"
    """Interface the public and admin ports bind to (`LARDER_HOST`)."""
    port: int = 9000
    admin_port: int = 9603
    internal_port: int = 9604
    """Sidecar-to-sidecar traffic (reserved for sharding)."""
    journal_type: JournalType = "memory"
    journal_sqlite_path: str = "larder-journal.sqlite3"
    journal_sqlite_synchronous: Literal["normal", "full"] = "normal"
    """SQLite's `synchronous` pragma: `normal` (no fsync per commit: a machine crash, not
    a process crash, can lose the last commits; fine for local development) or `full`."""
    journal_cassandra: CassandraSettings | None = None
    """Parsed (by the Cassandra journal's own settings module) only when
    LARDER_JOURNAL_TYPE=cassandra."""
    journal_unavailable_grace: float = 10.0
    """Seconds the journal may not answer before readiness drops."""
    passivation_timeout: float = 30.0
    """Seconds an entity may stay idle when discovery announces no timeout."""
    max_message_bytes: int = 12 * 1024 * 1024
    log_level: str = "INFO"
    log_format: LogFormat = "text"
    use_uvloop: bool = True
    discovery_timeout: float = 60.0
    """How long start-up keeps retrying Discover while the user function starts."""
    pod: PodIdentity = field(default_factory=lambda: PodIdentity("", "", ""))
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    """Used only when the user function declares eventing."""

    @property
    def user_function_target(self) -> str:
        return f"{self.user_function_host}:{self.user_function_port}"


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if not 0 <= value <= 65535:
        raise SettingsError(f"{name}={value} is not a TCP port (0-65535)")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse_seconds(raw)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a duration (seconds, or with a unit: 500ms, 30s, 2m)"
        ) from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be positive")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in allowed:
        raise SettingsError(f"{name}={raw!r} must be one of {', '.join(allowed)}")
    return raw


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} must be true or false")


def _cassandra(env: Mapping[str, str]) -> CassandraSettings:
    try:
        return CassandraSettings.from_env(env)
    except CassandraSettingsError as e:
        raise SettingsError(str(e)) from e


def _kafka(env: Mapping[str, str]) -> KafkaSettings:
    try:
        return load_kafka_settings(env)
    except KafkaSettingsError as e:
        raise SettingsError(str(e)) from e


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Parse and validate the settings from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    journal_type = _choice(env, "LARDER_JOURNAL_TYPE", "memory", ("memory", "sqlite", "cassandra"))
    log_level = env.get("LARDER_LOG_LEVEL", "").strip().upper() or "INFO"
    if log_level not in _LOG_LEVELS:
        raise SettingsError(f"LARDER_LOG_LEVEL={log_level!r} must be one of {_LOG_LEVELS}")
    max_bytes = _int(env, "LARDER_MAX_MESSAGE_BYTES", 12 * 1024 * 1024)
    if max_bytes < 1024:
        raise SettingsError(f"LARDER_MAX_MESSAGE_BYTES={max_bytes} is too small (minimum 1024)")
    host = env.get("USER_FUNCTION_HOST", "").strip() or "127.0.0.1"
    settings = Settings(
        user_function_host=host,
        user_function_port=_port(env, "USER_FUNCTION_PORT", 8080),
        host=env.get("LARDER_HOST", "").strip() or "127.0.0.1",
        port=_port(env, "LARDER_PORT", 9000),
        admin_port=_port(env, "LARDER_ADMIN_PORT", 9603),
        internal_port=_port(env, "LARDER_INTERNAL_PORT", 9604),
        journal_type=journal_type,  # type: ignore[arg-type]  # checked by _choice
        journal_sqlite_path=env.get("LARDER_JOURNAL_SQLITE_PATH", "").strip()
        or "larder-journal.sqlite3",
        journal_sqlite_synchronous=cast(
            Literal["normal", "full"],
            _choice(env, "LARDER_JOURNAL_SQLITE_SYNCHRONOUS", "normal", ("normal", "full")),
        ),
        journal_cassandra=_cassandra(env) if journal_type == "cassandra" else None,
        journal_unavailable_grace=_seconds(env, "LARDER_JOURNAL_UNAVAILABLE_GRACE", 10.0),
        passivation_timeout=_seconds(env, "LARDER_PASSIVATION_TIMEOUT", 30.0),
        max_message_bytes=max_bytes,
        log_level=log_level,
        log_format=_choice(env, "LARDER_LOG_FORMAT", "text", ("text", "json")),  # type: ignore[arg-type]
        use_uvloop=_bool(env, "LARDER_UVLOOP", True),
        discovery_timeout=_seconds(env, "LARDER_DISCOVERY_TIMEOUT", 60.0),
        pod=PodIdentity(
            name=env.get("POD_NAME", ""),
            namespace=env.get("POD_NAMESPACE", ""),
            ip=env.get("POD_IP", ""),
        ),
        kafka=_kafka(env),
    )
    ports = {
        "LARDER_PORT": settings.port,
        "LARDER_ADMIN_PORT": settings.admin_port,
        "LARDER_INTERNAL_PORT": settings.internal_port,
    }
    taken: dict[int, str] = {}
    for name, port in ports.items():
        if port != 0 and port in taken:
            raise SettingsError(f"{name}={port} is the same port as {taken[port]}")
        taken[port] = name
    return settings
