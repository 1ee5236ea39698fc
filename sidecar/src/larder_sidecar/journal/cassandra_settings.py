"""Settings of the Cassandra journal, parsed from `LARDER_JOURNAL_CASSANDRA_*` variables.

Every variable is described in docs/journal.md. A bad value raises
`CassandraSettingsError` naming the variable, so the pod's log says what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..durations import parse_seconds

PREFIX = "LARDER_JOURNAL_CASSANDRA_"

Fencing = Literal["fenced", "unfenced"]

READ_CONSISTENCIES = (
    "ONE",
    "TWO",
    "THREE",
    "QUORUM",
    "ALL",
    "LOCAL_QUORUM",
    "LOCAL_ONE",
    "SERIAL",
    "LOCAL_SERIAL",
)
# ANY is left out: a write stored only as a hint is invisible to every read, so the
# journal could acknowledge events that a recovering entity then does not see.
WRITE_CONSISTENCIES = (
    "ONE",
    "TWO",
    "THREE",
    "QUORUM",
    "ALL",
    "LOCAL_QUORUM",
    "EACH_QUORUM",
    "LOCAL_ONE",
)
SERIAL_CONSISTENCIES = ("SERIAL", "LOCAL_SERIAL")

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
_STRATEGIES = {
    "simplestrategy": "SimpleStrategy",
    "networktopologystrategy": "NetworkTopologyStrategy",
}


class CassandraSettingsError(ValueError):
    """A `LARDER_JOURNAL_CASSANDRA_*` variable has a value the journal cannot use."""


@dataclass(frozen=True, slots=True)
class Replication:
    """The keyspace's replication, used only when the journal creates the keyspace."""

    strategy: Literal["SimpleStrategy", "NetworkTopologyStrategy"] = "SimpleStrategy"
    factor: int = 1
    """Replication factor of SimpleStrategy."""
    per_datacenter: tuple[tuple[str, int], ...] = ()
    """(datacenter, replication factor) pairs of NetworkTopologyStrategy."""

    def cql_map(self) -> str:
        """The `replication = {...}` map literal of CREATE KEYSPACE."""
        if self.strategy == "SimpleStrategy":
            return f"{{'class': 'SimpleStrategy', 'replication_factor': {self.factor}}}"
        dcs = "".join(f", '{dc}': {rf}" for dc, rf in self.per_datacenter)
        return f"{{'class': 'NetworkTopologyStrategy'{dcs}}}"

    def __str__(self) -> str:
        if self.strategy == "SimpleStrategy":
            return f"SimpleStrategy:{self.factor}"
        return "NetworkTopologyStrategy:" + ",".join(f"{d}={f}" for d, f in self.per_datacenter)


@dataclass(frozen=True, slots=True)
class CassandraSettings:
    contact_points: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    local_datacenter: str | None = None
    """Datacenter whose nodes coordinate requests; None lets the driver take the
    datacenter of the first contact point it reaches."""
    keyspace: str = "larder"
    replication: Replication = field(default_factory=Replication)
    read_consistency: str = "LOCAL_QUORUM"
    write_consistency: str = "LOCAL_QUORUM"
    serial_consistency: str = "SERIAL"
    """Paxos consistency of the fencing transactions. SERIAL keeps two writers in
    different datacenters apart; LOCAL_SERIAL is only safe when every writer of an
    entity runs in the same datacenter."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    create_schema: bool = True
    request_timeout: float = 10.0
    """Seconds the driver waits for any one request before giving up."""
    partition_size: int = 10_000
    """Events per Cassandra partition: partition number = sequence number // this."""
    fencing: Fencing = "fenced"
    fetch_size: int = 5_000
    """Rows per page when replaying events."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CassandraSettings:
        """Parse every `LARDER_JOURNAL_CASSANDRA_*` variable of `environ`; others are ignored."""
        env = _Env(environ)
        username = env.text("USERNAME")
        password = env.text("PASSWORD")
        if (username is None) != (password is None):
            given, missing = ("USERNAME", "PASSWORD") if username else ("PASSWORD", "USERNAME")
            raise CassandraSettingsError(
                f"{PREFIX}{given} is set but {PREFIX}{missing} is not: "
                "password authentication needs both"
            )
        defaults = cls()
        fencing = env.choice("FENCING", defaults.fencing, ("fenced", "unfenced"))
        return cls(
            contact_points=env.hosts("CONTACT_POINTS", defaults.contact_points),
            port=env.integer("PORT", defaults.port, 1, 65535),
            local_datacenter=env.text("LOCAL_DC"),
            keyspace=env.identifier("KEYSPACE", defaults.keyspace),
            replication=env.replication("REPLICATION", defaults.replication),
            read_consistency=env.consistency(
                "READ_CONSISTENCY", defaults.read_consistency, READ_CONSISTENCIES
            ),
            write_consistency=env.consistency(
                "WRITE_CONSISTENCY", defaults.write_consistency, WRITE_CONSISTENCIES
            ),
            serial_consistency=env.consistency(
                "SERIAL_CONSISTENCY", defaults.serial_consistency, SERIAL_CONSISTENCIES
            ),
            username=username,
            password=password,
            create_schema=env.boolean("CREATE_SCHEMA", defaults.create_schema),
            request_timeout=env.seconds("REQUEST_TIMEOUT", defaults.request_timeout),
            partition_size=env.integer("PARTITION_SIZE", defaults.partition_size, 1, 10**9),
            fencing="fenced" if fencing == "fenced" else "unfenced",
            fetch_size=env.integer("FETCH_SIZE", defaults.fetch_size, 1, 1_000_000),
        )


class _Env:
    """Typed reads of the prefixed variables; every error names the full variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        raw = self._environ.get(PREFIX + name, "").strip()
        return raw or None

    def _fail(self, name: str, problem: str) -> CassandraSettingsError:
        raw = self._environ.get(PREFIX + name, "")
        return CassandraSettingsError(f"{PREFIX}{name}={raw!r} {problem}")

    def hosts(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self.text(name)
        if raw is None:
            return default
        hosts = tuple(h.strip() for h in raw.split(","))
        if any(not h for h in hosts):
            raise self._fail(name, "has an empty entry; give host names separated by commas")
        if any(":" in h and h.count(":") == 1 for h in hosts):
            raise self._fail(
                name, f"contains host:port; give bare hosts and the port in {PREFIX}PORT"
            )
        return hosts

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self._fail(name, "is not an integer") from None
        if not low <= value <= high:
            raise self._fail(name, f"is out of range ({low}..{high})")
        return value

    def seconds(self, name: str, default: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = parse_seconds(raw)
        except ValueError:
            raise self._fail(name, "is not a duration (seconds, or 500ms, 10s, 1m)") from None
        if value <= 0:
            raise self._fail(name, "must be positive")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = (self.text(name) or "").lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise self._fail(name, "must be true or false")

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = (self.text(name) or default).lower()
        if raw not in allowed:
            raise self._fail(name, f"must be one of {', '.join(allowed)}")
        return raw

    def consistency(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = (self.text(name) or default).upper()
        if raw not in allowed:
            raise self._fail(name, f"must be one of {', '.join(allowed)}")
        return raw

    def identifier(self, name: str, default: str) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        if not _IDENTIFIER.fullmatch(raw):
            raise self._fail(
                name, "is not a Cassandra name (a letter, then letters, digits or _; at most 48)"
            )
        return raw

    def replication(self, name: str, default: Replication) -> Replication:
        raw = self.text(name)
        if raw is None:
            return default
        strategy_text, sep, spec = raw.partition(":")
        strategy = _STRATEGIES.get(strategy_text.strip().lower())
        if not sep or strategy is None:
            raise self._fail(
                name,
                "must be SimpleStrategy:<factor> or NetworkTopologyStrategy:<dc>=<factor>,...",
            )
        if strategy == "SimpleStrategy":
            return Replication("SimpleStrategy", factor=self._factor(name, spec))
        pairs: list[tuple[str, int]] = []
        for item in spec.split(","):
            dc, eq, factor = item.partition("=")
            dc = dc.strip()
            if not eq or not dc or not re.fullmatch(r"[A-Za-z0-9_.\-]+", dc):
                raise self._fail(name, f"has {item.strip()!r}; expected <datacenter>=<factor>")
            if dc in dict(pairs):
                raise self._fail(name, f"names datacenter {dc!r} twice")
            pairs.append((dc, self._factor(name, factor)))
        return Replication("NetworkTopologyStrategy", per_datacenter=tuple(pairs))

    def _factor(self, name: str, text: str) -> int:
        try:
            factor = int(text.strip())
        except ValueError:
            raise self._fail(
                name, f"has replication factor {text.strip()!r}, not an integer"
            ) from None
        if factor < 1:
            raise self._fail(name, "has a replication factor below 1")
        return factor
