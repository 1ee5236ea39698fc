"""Parsing LARDER_JOURNAL_CASSANDRA_* into CassandraSettings."""

from __future__ import annotations

import pytest
from larder_sidecar.journal.cassandra_settings import (
    CassandraSettings,
    CassandraSettingsError,
    Replication,
)

P = "LARDER_JOURNAL_CASSANDRA_"


def test_defaults_when_nothing_is_set() -> None:
    settings = CassandraSettings.from_env({"UNRELATED": "x"})
    assert settings == CassandraSettings()
    assert settings.fencing == "fenced"
    assert settings.create_schema is True
    assert settings.serial_consistency == "SERIAL"


def test_every_variable_is_parsed() -> None:
    settings = CassandraSettings.from_env(
        {
            P + "CONTACT_POINTS": "cass-0.cass, cass-1.cass",
            P + "PORT": "9142",
            P + "LOCAL_DC": "dc1",
            P + "KEYSPACE": "shop_journal",
            P + "REPLICATION": "NetworkTopologyStrategy:dc1=3,dc2=2",
            P + "READ_CONSISTENCY": "quorum",
            P + "WRITE_CONSISTENCY": "EACH_QUORUM",
            P + "SERIAL_CONSISTENCY": "local_serial",
            P + "USERNAME": "larder",
            P + "PASSWORD": "s3cret",
            P + "CREATE_SCHEMA": "false",
            P + "REQUEST_TIMEOUT": "2500ms",
            P + "FENCING": "unfenced",
            P + "PARTITION_SIZE": "500",
            P + "FETCH_SIZE": "100",
        }
    )
    assert settings == CassandraSettings(
        contact_points=("cass-0.cass", "cass-1.cass"),
        port=9142,
        local_datacenter="dc1",
        keyspace="shop_journal",
        replication=Replication("NetworkTopologyStrategy", per_datacenter=(("dc1", 3), ("dc2", 2))),
        read_consistency="QUORUM",
        write_consistency="EACH_QUORUM",
        serial_consistency="LOCAL_SERIAL",
        username="larder",
        password="s3cret",
        create_schema=False,
        request_timeout=2.5,
        fencing="unfenced",
        partition_size=500,
        fetch_size=100,
    )


def test_password_is_not_in_repr() -> None:
    settings = CassandraSettings(username="u", password="hunter2")
    assert "hunter2" not in repr(settings)


def test_replication_cql() -> None:
    simple = CassandraSettings.from_env({P + "REPLICATION": "simplestrategy:3"}).replication
    assert simple.cql_map() == "{'class': 'SimpleStrategy', 'replication_factor': 3}"
    assert str(simple) == "SimpleStrategy:3"
    nts = Replication("NetworkTopologyStrategy", per_datacenter=(("eu", 3), ("us", 1)))
    assert nts.cql_map() == "{'class': 'NetworkTopologyStrategy', 'eu': 3, 'us': 1}"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("PORT", "90x", "not an integer"),
        ("PORT", "70000", "out of range"),
        ("CONTACT_POINTS", "a,,b", "empty entry"),
        ("CONTACT_POINTS", "cass:9042", "host:port"),
        ("KEYSPACE", "my-journal", "not a Cassandra name"),
        ("REPLICATION", "SimpleStrategy", "must be SimpleStrategy:<factor>"),
        ("REPLICATION", "EverywhereStrategy:1", "must be SimpleStrategy:<factor>"),
        ("REPLICATION", "SimpleStrategy:0", "below 1"),
        ("REPLICATION", "SimpleStrategy:three", "not an integer"),
        ("REPLICATION", "NetworkTopologyStrategy:dc1", "expected <datacenter>=<factor>"),
        ("REPLICATION", "NetworkTopologyStrategy:dc1=3,dc1=2", "twice"),
        ("READ_CONSISTENCY", "EACH_QUORUM", "must be one of"),
        ("WRITE_CONSISTENCY", "ANY", "must be one of"),
        ("SERIAL_CONSISTENCY", "QUORUM", "must be one of"),
        ("CREATE_SCHEMA", "maybe", "true or false"),
        ("REQUEST_TIMEOUT", "soon", "not a duration"),
        ("REQUEST_TIMEOUT", "0", "positive"),
        ("FENCING", "sometimes", "fenced, unfenced"),
        ("PARTITION_SIZE", "0", "out of range"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(CassandraSettingsError) as caught:
        CassandraSettings.from_env({P + name: value})
    message = str(caught.value)
    assert message.startswith(f"{P}{name}=")
    assert fragment in message


def test_username_without_password_is_rejected() -> None:
    with pytest.raises(CassandraSettingsError, match=f"{P}USERNAME is set but {P}PASSWORD"):
        CassandraSettings.from_env({P + "USERNAME": "larder"})
    with pytest.raises(CassandraSettingsError, match=f"{P}PASSWORD is set but {P}USERNAME"):
        CassandraSettings.from_env({P + "PASSWORD": "x"})


def test_ipv6_contact_points_are_hosts() -> None:
    settings = CassandraSettings.from_env({P + "CONTACT_POINTS": "::1,fd00::5"})
    assert settings.contact_points == ("::1", "fd00::5")
