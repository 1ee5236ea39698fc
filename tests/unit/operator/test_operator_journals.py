"""Parsing a Journal's spec into the sidecar's settings."""

from __future__ import annotations

import pytest
from larder_operator.journals import (
    CassandraJournal,
    InMemoryJournal,
    InvalidJournalError,
    parse_journal,
    replication_setting,
    spec_hash,
)


def test_in_memory() -> None:
    assert parse_journal("ns", {"type": "InMemory"}) == InMemoryJournal()


def test_service_becomes_an_in_cluster_dns_name_with_defaults() -> None:
    journal = parse_journal("ns", {"type": "Cassandra", "cassandra": {"service": "cassandra"}})
    assert journal == CassandraJournal(
        contact_points=("cassandra.ns.svc",),
        port=9042,
        keyspace="larder",
        replication="SimpleStrategy:3",
        read_consistency="LOCAL_QUORUM",
        write_consistency="LOCAL_QUORUM",
        local_datacenter="datacenter1",
        credentials=None,
    )


def test_network_topology_replication() -> None:
    literal = replication_setting(
        {"strategy": "NetworkTopologyStrategy", "datacenters": {"dc2": 2, "dc1": 3}}
    )
    assert literal == "NetworkTopologyStrategy:dc1=3,dc2=2"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"type": "Redis"}, "not a known journal type"),
        ({"type": "Cassandra"}, "spec.cassandra is required"),
        ({"type": "Cassandra", "cassandra": {}}, "either service or contactPoints"),
        (
            {"type": "Cassandra", "cassandra": {"service": "a", "contactPoints": ["b"]}},
            "both service and contactPoints",
        ),
        (
            {
                "type": "Cassandra",
                "cassandra": {
                    "service": "a",
                    "replication": {"strategy": "NetworkTopologyStrategy"},
                },
            },
            "datacenters is required",
        ),
    ],
)
def test_invalid_journals_name_the_field(spec: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidJournalError, match=fragment):
        parse_journal("ns", spec)


def test_spec_hash_ignores_key_order_but_not_values() -> None:
    assert spec_hash({"a": 1, "b": 2}) == spec_hash({"b": 2, "a": 1})
    assert spec_hash({"a": 1}) != spec_hash({"a": 2})
    assert spec_hash(None) == spec_hash({})
