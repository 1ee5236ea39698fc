"""Kafka client settings: from `LARDER_KAFKA_*` variables and an optional properties file.

The properties file holds `key=value` lines in Kafka's own names (`bootstrap.servers`,
`security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`,
`ssl.ca.location`, ...), as a ConfigMap or Secret mounted into the pod would. A
variable wins over the same setting in the file. Keys the sidecar does not know are
handed to the Kafka client as they are, so any librdkafka setting can be tuned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SECURITY_PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

# (environment variable, Kafka property)
_NAMED = (
    ("LARDER_KAFKA_BOOTSTRAP_SERVERS", "bootstrap.servers"),
    ("LARDER_KAFKA_SECURITY_PROTOCOL", "security.protocol"),
    ("LARDER_KAFKA_SASL_MECHANISM", "sasl.mechanism"),
    ("LARDER_KAFKA_SASL_USERNAME", "sasl.username"),
    ("LARDER_KAFKA_SASL_PASSWORD", "sasl.password"),
    ("LARDER_KAFKA_SSL_CA_FILE", "ssl.ca.location"),
)
_KNOWN = {prop for _, prop in _NAMED}
# The consumer and producer set these themselves; a file must not weaken the guarantees.
REBOOTSTRAP = {"metadata.recovery.rebootstrap.trigger.ms": 10000}
"""A default of both clients (a properties file may change it). When every broker the
client knows is removed from the cluster's metadata (e.g. a single node fencing itself
after a long pause: SIGSTOP, a hung host, a long GC) librdkafka has no broker left to ask
and, by default, only goes back to `bootstrap.servers` after 5 minutes, consuming and
publishing nothing meanwhile; with this it does so after 10 s."""

_RESERVED = {"enable.auto.commit", "enable.idempotence", "acks", "group.id"}


class KafkaSettingsError(ValueError):
    """A Kafka setting cannot be used: fix the variable or the properties file it names."""


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: str = ""
    """Empty: eventing is off."""
    security_protocol: str = "plaintext"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_ca_file: str = ""
    dead_letter_topic: str = ""
    """Where records that a method rejects go; empty: they are logged and skipped."""
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Other client properties from the properties file, passed through."""
    turned_off: bool = False
    """`LARDER_EVENTING=off`: serve eventing methods without topics (local development)."""
    max_in_flight: int = 100
    """Records of one partition started and not yet finished; 1 runs a partition's
    records strictly one after another."""
    deduplicate: bool = True
    """`LARDER_KAFKA_DEDUPLICATE`: entity commands from records carry an idempotency key
    derived from the record, so a redelivered record is not applied twice (`dedup.py`)."""

    @property
    def enabled(self) -> bool:
        return self.bootstrap_servers != ""

    def client_config(self) -> dict[str, str]:
        """The librdkafka configuration shared by the consumers and the producer."""
        config = dict(self.extra)
        config["bootstrap.servers"] = self.bootstrap_servers
        config["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = self.sasl_password
        if self.ssl_ca_file:
            config["ssl.ca.location"] = self.ssl_ca_file
        return config


def read_properties(path: Path) -> dict[str, str]:
    """Java-style properties: `key=value` or `key: value`, `#`/`!` comments."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise KafkaSettingsError(
            f"LARDER_KAFKA_PROPERTIES_FILE={str(path)!r} cannot be read: {e.strerror}; "
            "is the ConfigMap or Secret mounted there?"
        ) from e
    props: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if cut <= 0:
            raise KafkaSettingsError(
                f"{path}:{number}: expected key=value, got {line!r}"
            )
        props[line[:cut].strip()] = line[cut + 1 :].strip()
    return props


def load_kafka_settings(env: Mapping[str, str] | None = None) -> KafkaSettings:
    """Parse and validate; raise KafkaSettingsError naming the variable or file."""
    env = os.environ if env is None else env
    switch = env.get("LARDER_EVENTING", "").strip().lower() or "on"
    if switch not in ("on", "off"):
        raise KafkaSettingsError(f"LARDER_EVENTING={switch!r} must be on or off")
    props: dict[str, str] = {}
    props_file = env.get("LARDER_KAFKA_PROPERTIES_FILE", "").strip()
    if props_file:
        props = read_properties(Path(props_file))
        reserved = sorted(_RESERVED & props.keys())
        if reserved:
            raise KafkaSettingsError(
                f"{props_file} sets {', '.join(reserved)}, which the sidecar sets itself "
                "(at-least-once delivery depends on them); remove them from the file"
            )
    for variable, prop in _NAMED:
        value = env.get(variable, "").strip()
        if value:
            props[prop] = value
    source = {prop: variable for variable, prop in _NAMED}

    def where(prop: str) -> str:
        variable = source[prop]
        return variable if env.get(variable, "").strip() else f"{prop} in {props_file}"

    protocol = props.get("security.protocol", "plaintext").lower()
    if protocol not in SECURITY_PROTOCOLS:
        raise KafkaSettingsError(
            f"{where('security.protocol')}={protocol!r} must be one of "
            f"{', '.join(SECURITY_PROTOCOLS)}"
        )
    mechanism = props.get("sasl.mechanism", "").upper()
    if protocol.startswith("sasl_"):
        if mechanism not in SASL_MECHANISMS:
            raise KafkaSettingsError(
                f"security protocol {protocol} needs LARDER_KAFKA_SASL_MECHANISM (or "
                f"sasl.mechanism) set to one of {', '.join(SASL_MECHANISMS)}, got {mechanism!r}"
            )
        if not props.get("sasl.username") or not props.get("sasl.password"):
            raise KafkaSettingsError(
                f"security protocol {protocol} needs LARDER_KAFKA_SASL_USERNAME and "
                "LARDER_KAFKA_SASL_PASSWORD (or sasl.username/sasl.password in the file)"
            )
    elif mechanism:
        raise KafkaSettingsError(
            f"{where('sasl.mechanism')}={mechanism!r} has no effect with security protocol "
            f"{protocol}; use sasl_plaintext or sasl_ssl"
        )
    ca_file = props.get("ssl.ca.location", "")
    if ca_file and not Path(ca_file).is_file():
        raise KafkaSettingsError(f"{where('ssl.ca.location')}={ca_file!r} is not a file")
    raw_in_flight = env.get("LARDER_KAFKA_MAX_IN_FLIGHT", "").strip() or "100"
    try:
        max_in_flight = int(raw_in_flight)
    except ValueError:
        max_in_flight = 0
    if not 1 <= max_in_flight <= 10000:
        raise KafkaSettingsError(
            f"LARDER_KAFKA_MAX_IN_FLIGHT={raw_in_flight!r} must be a whole number from 1 "
            "to 10000 (records of one partition in flight)"
        )
    dedup_switch = env.get("LARDER_KAFKA_DEDUPLICATE", "").strip().lower() or "on"
    if dedup_switch not in ("on", "off"):
        raise KafkaSettingsError(
            f"LARDER_KAFKA_DEDUPLICATE={dedup_switch!r} must be on or off (off: a record "
            "redelivered after a crash or rebalance may apply its command twice)"
        )
    return KafkaSettings(
        bootstrap_servers=props.get("bootstrap.servers", ""),
        security_protocol=protocol,
        sasl_mechanism=mechanism if protocol.startswith("sasl_") else "",
        sasl_username=props.get("sasl.username", ""),
        sasl_password=props.get("sasl.password", ""),
        ssl_ca_file=ca_file,
        dead_letter_topic=env.get("LARDER_KAFKA_DEAD_LETTER_TOPIC", "").strip(),
        extra={k: v for k, v in props.items() if k not in _KNOWN},
        turned_off=switch == "off",
        max_in_flight=max_in_flight,
        deduplicate=dedup_switch == "on",
    )
