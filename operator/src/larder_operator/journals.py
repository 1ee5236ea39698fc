"""A Journal resource's spec, parsed once into what the sidecar and the reachability check need."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

JOURNAL_TYPES = ("Cassandra", "InMemory")
DEFAULT_CASSANDRA_PORT = 9042
DEFAULT_KEYSPACE = "larder"
DEFAULT_LOCAL_DC = "datacenter1"
DEFAULT_CONSISTENCY = "LOCAL_QUORUM"
# Three copies, so that LOCAL_QUORUM writes (two acknowledgements) survive a node crash
# whatever the nodes' commit log mode (durability.py); a trial on one node says 1.
DEFAULT_REPLICATION_FACTOR = 3


class InvalidJournalError(ValueError):
    """The Journal's spec cannot be used; the user has to fix the resource."""


@dataclass(frozen=True)
class CredentialsRef:
    """Where the Cassandra username and password live: keys of a Secret in the same namespace."""

    secret_name: str
    username_key: str = "username"
    password_key: str = "password"


@dataclass(frozen=True)
class CassandraJournal:
    contact_points: tuple[str, ...]
    port: int
    keyspace: str
    # The sidecar's LARDER_JOURNAL_CASSANDRA_REPLICATION syntax:
    # `SimpleStrategy:<factor>` or `NetworkTopologyStrategy:<dc>=<factor>,...`.
    replication: str
    read_consistency: str
    write_consistency: str
    local_datacenter: str
    credentials: CredentialsRef | None


@dataclass(frozen=True)
class InMemoryJournal:
    pass


JournalConfig = CassandraJournal | InMemoryJournal


def parse_journal(namespace: str, spec: Mapping[str, Any]) -> JournalConfig:
    """Turn ``Journal.spec`` into a config; raise InvalidJournalError naming the field at fault."""
    kind = spec.get("type")
    if kind == "InMemory":
        return InMemoryJournal()
    if kind != "Cassandra":
        raise InvalidJournalError(
            f"spec.type={kind!r} is not a known journal type; use one of {', '.join(JOURNAL_TYPES)}"
        )
    cass = spec.get("cassandra")
    if not isinstance(cass, Mapping):
        raise InvalidJournalError("spec.cassandra is required when spec.type is Cassandra")
    service = cass.get("service")
    points = tuple(str(p) for p in cass.get("contactPoints") or ())
    if service and points:
        raise InvalidJournalError(
            "spec.cassandra sets both service and contactPoints; set exactly one"
        )
    if service:
        # The Service's DNS name inside the cluster; the driver discovers the other nodes.
        points = (f"{service}.{namespace}.svc",)
    if not points:
        raise InvalidJournalError("spec.cassandra needs either service or contactPoints")
    creds = cass.get("credentialsSecret")
    credentials = None
    if isinstance(creds, Mapping):
        credentials = CredentialsRef(
            secret_name=str(creds["name"]),
            username_key=str(creds.get("usernameKey", "username")),
            password_key=str(creds.get("passwordKey", "password")),
        )
    consistency = cass.get("consistency") or {}
    return CassandraJournal(
        contact_points=points,
        port=int(cass.get("port", DEFAULT_CASSANDRA_PORT)),
        keyspace=str(cass.get("keyspace", DEFAULT_KEYSPACE)),
        replication=replication_setting(cass.get("replication") or {}),
        read_consistency=str(consistency.get("read", DEFAULT_CONSISTENCY)),
        write_consistency=str(consistency.get("write", DEFAULT_CONSISTENCY)),
        local_datacenter=str(cass.get("localDatacenter", DEFAULT_LOCAL_DC)),
        credentials=credentials,
    )


def replication_setting(replication: Mapping[str, Any]) -> str:
    """The keyspace replication in the sidecar's syntax, e.g. ``SimpleStrategy:1``."""
    strategy = replication.get("strategy", "SimpleStrategy")
    if strategy == "NetworkTopologyStrategy":
        dcs = replication.get("datacenters") or {}
        if not dcs:
            raise InvalidJournalError(
                "spec.cassandra.replication.datacenters is required for NetworkTopologyStrategy"
            )
        items = ",".join(f"{dc}={int(n)}" for dc, n in sorted(dcs.items()))
        return f"NetworkTopologyStrategy:{items}"
    if strategy != "SimpleStrategy":
        raise InvalidJournalError(
            f"spec.cassandra.replication.strategy={strategy!r} is not SimpleStrategy or "
            "NetworkTopologyStrategy"
        )
    factor = int(replication.get("replicationFactor", DEFAULT_REPLICATION_FACTOR))
    return f"SimpleStrategy:{factor}"


def replication_factors(setting: str) -> dict[str, int]:
    """Replication factor per datacenter (`*` for SimpleStrategy) of a replication
    setting made by `replication_setting`."""
    strategy, _, rest = setting.partition(":")
    if strategy == "SimpleStrategy":
        return {"*": int(rest)}
    return {dc: int(n) for dc, _, n in (item.partition("=") for item in rest.split(","))}


def journal_env(journal: JournalConfig | None) -> list[dict[str, Any]]:
    """The sidecar's ``LARDER_JOURNAL_*`` variables; credentials only as Secret references."""
    if not isinstance(journal, CassandraJournal):
        return [{"name": "LARDER_JOURNAL_TYPE", "value": "memory"}]
    prefix = "LARDER_JOURNAL_CASSANDRA_"
    env: list[dict[str, Any]] = [
        {"name": "LARDER_JOURNAL_TYPE", "value": "cassandra"},
        {"name": prefix + "CONTACT_POINTS", "value": ",".join(journal.contact_points)},
        {"name": prefix + "PORT", "value": str(journal.port)},
        {"name": prefix + "KEYSPACE", "value": journal.keyspace},
        {"name": prefix + "LOCAL_DC", "value": journal.local_datacenter},
        {"name": prefix + "REPLICATION", "value": journal.replication},
        {"name": prefix + "READ_CONSISTENCY", "value": journal.read_consistency},
        {"name": prefix + "WRITE_CONSISTENCY", "value": journal.write_consistency},
    ]
    if journal.credentials is not None:
        ref = journal.credentials
        for var, key in (("USERNAME", ref.username_key), ("PASSWORD", ref.password_key)):
            env.append(
                {
                    "name": prefix + var,
                    "valueFrom": {"secretKeyRef": {"name": ref.secret_name, "key": key}},
                }
            )
    return env


def spec_hash(spec: Mapping[str, Any] | None) -> str:
    """A short stable digest of a Journal spec; a change rolls the function's pods."""
    canonical = json.dumps(spec or {}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
