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
from pathlib import Path
from typing import Literal, cast

from .durations import parse_seconds
from .eventing.settings import KafkaSettings, KafkaSettingsError, load_kafka_settings
from .journal.cassandra_settings import CassandraSettings, CassandraSettingsError
from .tracing.config import TracingConfig, TracingConfigError, tracing_config

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
class PublicPortLimits:
    """What one client may ask of the public port (`LARDER_HTTP_*`, `LARDER_GRPC_IDLE_TIMEOUT`,
    `LARDER_MAX_CONNECTIONS`); the body limit is `Settings.max_message_bytes`."""

    max_url_bytes: int = 8 * 1024
    """Request target (path and query) of an HTTP/1.1 request; longer is 414."""
    max_header_count: int = 100
    """Header fields of an HTTP/1.1 request (trailers count too); more is 431."""
    max_header_bytes: int = 32 * 1024
    """Total bytes of an HTTP/1.1 request's header fields; more is 431."""
    head_timeout: float = 10.0
    """Seconds from a request's first byte until its head (request line and headers) is
    complete."""
    body_timeout: float = 20.0
    """Seconds a request body may take, plus one second per `min_body_rate` bytes received."""
    min_body_rate: int = 1024
    """Bytes per second a slow body must keep up on average beyond `body_timeout`."""
    idle_timeout: float = 75.0
    """Seconds an HTTP/1.1 connection may wait for its next request (its first, too)."""
    grpc_idle_timeout: float = 300.0
    """Seconds an HTTP/2 (gRPC) connection without calls stays open (then GOAWAY)."""
    max_connections: int = 10_000
    """Open connections on the public port; more are refused with 503."""


# --- Cluster membership and shards (`cluster/`) ---

DEFAULT_SHARD_COUNT = 16384
"""Why this many: the docstring of cluster/shards.py."""
MAX_SHARD_COUNT = 65536


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """This sidecar's peers (`LARDER_CLUSTER_*`, `LARDER_SHARD_COUNT`). Membership is static
    when `members` is set, watched on Kubernetes when `service` is, else the sidecar is alone.
    Either way `POD_NAME` is this sidecar's member id."""

    shard_count: int = DEFAULT_SHARD_COUNT
    members: tuple[tuple[str, str], ...] = ()
    """`LARDER_CLUSTER_MEMBERS`: (id, host:port of its internal port) of every member."""
    service: str = ""
    """`LARDER_CLUSTER_SERVICE`: the headless Service whose EndpointSlices list the members,
    in the namespace `POD_NAMESPACE`."""
    members_file: str = ""
    """`LARDER_CLUSTER_MEMBERS_FILE`: a member list (as `members`, one may be marked
    `terminating`) read again whenever it changes (`cluster/file_membership.py`)."""


@dataclass(frozen=True, slots=True)
class Settings:
    user_function_host: str = "127.0.0.1"
    user_function_port: int = 8080
    host: str = "127.0.0.1"
    """Interface the public and admin ports bind to (`LARDER_HOST`)."""
    port: int = 9000
    admin_port: int = 9603
    admin_token: str | None = field(default=None, repr=False)
    """`LARDER_ADMIN_TOKEN` (or the file `LARDER_ADMIN_TOKEN_FILE` names): a bearer token
    the admin port's `/inspect` routes require; without one they answer loopback only."""
    internal_port: int = 9604
    """Sidecar-to-sidecar traffic (forwarded commands, hand-off); bound only with membership."""
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
    user_function_unavailable_grace: float = 3.0
    """Seconds the user function may not answer its health check before readiness drops."""
    passivation_timeout: float = 30.0
    """Seconds an entity may stay idle when discovery announces no timeout."""
    idempotency_window: float = 24 * 3600.0
    """Seconds an entity keeps the record of a command sent with an idempotency key."""
    idempotency_max_keys: int = 100
    """Idempotency records kept per entity; beyond it the oldest are forgotten."""
    view_gather: float = 0.05
    """`LARDER_VIEW_GATHER`: on the Cassandra view store, seconds the oldest queued view
    change may wait for more to join its delivery batch (a Paxos round per bucket covers
    them all); 0: none. The other stores do not wait (a local transaction has no fixed
    round to share)."""
    max_message_bytes: int = 12 * 1024 * 1024
    user_function_max_message_bytes: int = 4 * 1024 * 1024
    """The largest message the user function accepts (its gRPC server's receive limit;
    gRPC's and the SDKs' default is 4 MiB). Larger requests are refused before they are
    sent."""
    max_entity_id_bytes: int = 1024
    """Longest entity id (UTF-8 bytes); a longer key is INVALID_ARGUMENT."""
    user_function_transport: Literal["h2", "grpc"] = "h2"
    """`LARDER_USER_FUNCTION_TRANSPORT`: what carries the entities' streams and the unary
    action calls to the user function: the sidecar's own HTTP/2 client (`h2/`, the
    default) or grpc.aio (as before it; kept to compare, and as a way out should a user
    function's gRPC server and our client ever disagree). Discovery, streamed actions and
    views use grpc.aio either way."""
    public: PublicPortLimits = field(default_factory=PublicPortLimits)
    log_level: str = "INFO"
    log_format: LogFormat = "text"
    use_uvloop: bool = True
    discovery_timeout: float = 60.0
    """How long start-up keeps retrying Discover while the user function starts."""
    pod: PodIdentity = field(default_factory=lambda: PodIdentity("", "", ""))
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    """Used only when the user function declares eventing."""
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    """Membership and shards; without membership every entity is served here."""
    tracing: TracingConfig | None = None
    """From OpenTelemetry's OTEL_* variables (`tracing/config.py`); None: tracing off."""

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


def _positive_int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    value = _int(env, name, default)
    if value < minimum:
        raise SettingsError(f"{name}={value} is too small (minimum {minimum})")
    return value


def _public_limits(env: Mapping[str, str]) -> PublicPortLimits:
    d = PublicPortLimits()
    return PublicPortLimits(
        max_url_bytes=_positive_int(env, "LARDER_HTTP_MAX_URL_BYTES", d.max_url_bytes, 256),
        max_header_count=_positive_int(env, "LARDER_HTTP_MAX_HEADERS", d.max_header_count, 8),
        max_header_bytes=_positive_int(
            env, "LARDER_HTTP_MAX_HEADER_BYTES", d.max_header_bytes, 1024
        ),
        head_timeout=_seconds(env, "LARDER_HTTP_HEAD_TIMEOUT", d.head_timeout),
        body_timeout=_seconds(env, "LARDER_HTTP_BODY_TIMEOUT", d.body_timeout),
        min_body_rate=_positive_int(env, "LARDER_HTTP_MIN_BODY_RATE", d.min_body_rate),
        idle_timeout=_seconds(env, "LARDER_HTTP_IDLE_TIMEOUT", d.idle_timeout),
        grpc_idle_timeout=_seconds(env, "LARDER_GRPC_IDLE_TIMEOUT", d.grpc_idle_timeout),
        max_connections=_positive_int(env, "LARDER_MAX_CONNECTIONS", d.max_connections),
    )


def _seconds(
    env: Mapping[str, str], name: str, default: float, *, zero: bool = False
) -> float:
    """A duration; with `zero`, 0 is allowed (off)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse_seconds(raw)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a duration (seconds, or with a unit: 500ms, 30s, 2m)"
        ) from None
    if not value > 0 and not (zero and value == 0):  # NaN too
        raise SettingsError(
            f"{name}={raw!r} must be {'0 or more' if zero else 'positive'}"
        )
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
    max_bytes = _positive_int(env, "LARDER_MAX_MESSAGE_BYTES", 12 * 1024 * 1024, 1024)
    host = env.get("USER_FUNCTION_HOST", "").strip() or "127.0.0.1"
    settings = Settings(
        user_function_host=host,
        user_function_port=_port(env, "USER_FUNCTION_PORT", 8080),
        host=env.get("LARDER_HOST", "").strip() or "127.0.0.1",
        port=_port(env, "LARDER_PORT", 9000),
        admin_port=_port(env, "LARDER_ADMIN_PORT", 9603),
        admin_token=_admin_token(env),
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
        user_function_unavailable_grace=_seconds(
            env, "LARDER_USER_FUNCTION_UNAVAILABLE_GRACE", 3.0
        ),
        passivation_timeout=_seconds(env, "LARDER_PASSIVATION_TIMEOUT", 30.0),
        idempotency_window=_seconds(env, "LARDER_IDEMPOTENCY_WINDOW", 24 * 3600.0),
        idempotency_max_keys=_positive_int(env, "LARDER_IDEMPOTENCY_MAX_KEYS", 100),
        view_gather=_seconds(env, "LARDER_VIEW_GATHER", 0.05, zero=True),
        max_message_bytes=max_bytes,
        user_function_max_message_bytes=_positive_int(
            env, "LARDER_USER_FUNCTION_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024
        ),
        max_entity_id_bytes=_positive_int(env, "LARDER_MAX_ENTITY_ID_BYTES", 1024, 16),
        user_function_transport=cast(
            Literal["h2", "grpc"],
            _choice(env, "LARDER_USER_FUNCTION_TRANSPORT", "h2", ("h2", "grpc")),
        ),
        public=_public_limits(env),
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
        cluster=_cluster(env),
        tracing=_tracing(env),
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


def _tracing(env: Mapping[str, str]) -> TracingConfig | None:
    try:
        return tracing_config(env)
    except TracingConfigError as e:
        raise SettingsError(str(e)) from e


MIN_ADMIN_TOKEN_CHARS = 16


def _admin_token(env: Mapping[str, str]) -> str | None:
    """The admin token from LARDER_ADMIN_TOKEN or the file LARDER_ADMIN_TOKEN_FILE names
    (a mounted Secret); None when neither is set."""
    inline = env.get("LARDER_ADMIN_TOKEN", "").strip()
    path = env.get("LARDER_ADMIN_TOKEN_FILE", "").strip()
    if inline and path:
        raise SettingsError("set LARDER_ADMIN_TOKEN or LARDER_ADMIN_TOKEN_FILE, not both")
    name, token = "LARDER_ADMIN_TOKEN", inline
    if path:
        name = f"LARDER_ADMIN_TOKEN_FILE={path}"
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise SettingsError(f"{name} cannot be read: {e}") from e
    if not token and not path:
        return None
    if len(token) < MIN_ADMIN_TOKEN_CHARS or any(c.isspace() for c in token):
        # The token guards user data: a short one is guessable, and whitespace cannot
        # travel in an Authorization header intact.
        raise SettingsError(
            f"{name}: the admin token must be at least {MIN_ADMIN_TOKEN_CHARS} characters "
            "without spaces (e.g. `openssl rand -hex 24`)"
        )
    return token


# --- Cluster membership and shards: parsing ---


def _cluster(env: Mapping[str, str]) -> ClusterSettings:
    shard_count = _int(env, "LARDER_SHARD_COUNT", DEFAULT_SHARD_COUNT)
    if not 1 <= shard_count <= MAX_SHARD_COUNT:
        raise SettingsError(
            f"LARDER_SHARD_COUNT={shard_count} must be between 1 and {MAX_SHARD_COUNT} "
            "(and the same on every pod of the function)"
        )
    raw_members = env.get("LARDER_CLUSTER_MEMBERS", "").strip()
    service = env.get("LARDER_CLUSTER_SERVICE", "").strip()
    pod_name = env.get("POD_NAME", "").strip()
    if raw_members and service:
        raise SettingsError(
            "LARDER_CLUSTER_MEMBERS and LARDER_CLUSTER_SERVICE are both set: membership is "
            "either a static list or watched on Kubernetes; unset one of them"
        )
    members_file = env.get("LARDER_CLUSTER_MEMBERS_FILE", "").strip()
    if members_file:
        if raw_members or service:
            raise SettingsError(
                "LARDER_CLUSTER_MEMBERS_FILE is set together with LARDER_CLUSTER_MEMBERS or "
                "LARDER_CLUSTER_SERVICE: membership has one source; unset the others"
            )
        if not pod_name:
            raise SettingsError(
                "LARDER_CLUSTER_MEMBERS_FILE is set but POD_NAME is empty: set it to this "
                "sidecar's id"
            )
        return ClusterSettings(shard_count=shard_count, members_file=members_file)
    if not raw_members and not service:
        return ClusterSettings(shard_count=shard_count)
    if not pod_name:
        which = "LARDER_CLUSTER_MEMBERS" if raw_members else "LARDER_CLUSTER_SERVICE"
        raise SettingsError(f"{which} is set but POD_NAME is empty: set it to this sidecar's id")
    if service:
        if not env.get("POD_NAMESPACE", "").strip():
            raise SettingsError(
                "LARDER_CLUSTER_SERVICE is set but POD_NAMESPACE is empty: set it to the "
                "namespace of the Service (the pod's own)"
            )
        return ClusterSettings(shard_count=shard_count, service=service)
    members = _static_members(raw_members)
    ids = [member_id for member_id, _ in members]
    if pod_name not in ids:
        raise SettingsError(
            f"POD_NAME={pod_name!r} is not one of the LARDER_CLUSTER_MEMBERS ids "
            f"({', '.join(ids)}): this sidecar must be in the list"
        )
    return ClusterSettings(shard_count=shard_count, members=members)


def parse_members(raw: str, name: str) -> tuple[tuple[str, str], ...]:
    """`id=host:port,...` as (id, address) pairs; SettingsError names `name`."""
    return _static_members(raw, name)


def _static_members(raw: str, name: str = "LARDER_CLUSTER_MEMBERS") -> tuple[tuple[str, str], ...]:
    members: list[tuple[str, str]] = []
    seen_ids: set[str] = set()
    seen_addresses: set[str] = set()
    for item in (part.strip() for part in raw.split(",")):
        member_id, sep, address = (x.strip() for x in item.partition("="))
        host, colon, port = address.rpartition(":")
        if not sep or not member_id or any(c.isspace() for c in member_id):
            raise SettingsError(f"{name}: {item!r} is not id=host:port (e.g. cart-0=10.0.0.5:9604)")
        if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise SettingsError(
                f"{name}: the address of {member_id!r}, {address!r}, is not host:port "
                "(IPv6 in brackets: [::1]:9604)"
            )
        if member_id in seen_ids:
            raise SettingsError(f"{name}: the id {member_id!r} appears twice")
        if address in seen_addresses:
            raise SettingsError(f"{name}: the address {address} appears twice")
        seen_ids.add(member_id)
        seen_addresses.add(address)
        members.append((member_id, address))
    return tuple(members)
