"""`larder dev --replicas N`: the option, the ports each replica gets, the membership its
sidecar is given."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest
from larder_dev.cli import parse_dev_args
from larder_dev.function import DevInputError
from larder_dev.ports import ReplicaPorts, allocate_ports, check_ports_free
from larder_dev.replicas import cluster_env, own_share, plan_replicas

REPO = Path(__file__).resolve().parents[3]
DEFAULTS = ReplicaPorts(public=9000, function=8080, admin=9603, internal=9604)


def test_replicas_default_to_one_and_are_bounded() -> None:
    assert parse_dev_args(["samples/shopping-cart"], cwd=REPO).replicas == 1
    assert parse_dev_args(["--replicas", "3", "samples/shopping-cart"], cwd=REPO).replicas == 3
    for bad in ("0", "17", "three", "-1"):
        with pytest.raises(SystemExit) as exited:
            parse_dev_args(["--replicas", bad, "samples/shopping-cart"], cwd=REPO)
        assert exited.value.code == 2


def test_one_replica_gets_exactly_the_options_ports() -> None:
    assert allocate_ports(DEFAULTS, 1) == (DEFAULTS,)


def test_three_replicas_on_the_defaults_count_up_without_clashes() -> None:
    ports = allocate_ports(DEFAULTS, 3)
    assert [p.public for p in ports] == [9000, 9001, 9002]
    assert [p.function for p in ports] == [8080, 8081, 8082]
    assert [p.admin for p in ports] == [9603, 9604, 9605]
    # 9604 (--internal-port) went to replica-1's admin port, so the internal ports move on.
    assert [p.internal for p in ports] == [9606, 9607, 9608]


def test_a_port_counted_into_by_an_earlier_kind_is_skipped_and_public_ports_never_move() -> None:
    first = ReplicaPorts(public=9000, function=9001, admin=9100, internal=9101)
    ports = allocate_ports(first, 3)
    assert [p.public for p in ports] == [9000, 9001, 9002]
    assert [p.function for p in ports] == [9003, 9004, 9005]
    assert [p.admin for p in ports] == [9100, 9101, 9102]
    assert [p.internal for p in ports] == [9103, 9104, 9105]


def test_every_port_is_distinct_whatever_the_options() -> None:
    rng = random.Random(14)
    for _ in range(500):
        values = rng.sample(range(9000, 9030), 4)
        first = ReplicaPorts(*values)
        count = rng.randint(1, 16)
        ports = allocate_ports(first, count)
        assert ports[0].public == first.public
        assert [p.public for p in ports] == list(range(first.public, first.public + count))
        every = [port for p in ports for port in p.by_option().values()]
        assert len(every) == len(set(every)) == 4 * count, (first, count)


def test_options_with_the_same_port_are_the_users_clash() -> None:
    with pytest.raises(DevInputError, match="--admin-port and --port are both 9000; give"):
        allocate_ports(ReplicaPorts(public=9000, function=8080, admin=9000, internal=9604), 3)


def test_too_few_ports_above_an_option_is_explained() -> None:
    first = ReplicaPorts(public=65534, function=8080, admin=9603, internal=9604)
    with pytest.raises(DevInputError, match="--port 65534 leaves too few ports above it for 3 "
                                            "replicas; pass a lower --port"):
        allocate_ports(first, 3)


def test_a_replicas_port_in_use_names_the_replica_and_the_option() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DevInputError) as refused:
            check_ports_free({"--internal-port": port}, "replica-2")
    assert str(refused.value) == (
        f"port {port} (replica-2's --internal-port) is already in use (another `larder dev` "
        "or server?); stop it or pass a free port with --internal-port")


def test_several_replicas_are_one_static_cluster_and_one_is_none() -> None:
    (alone,) = plan_replicas(DEFAULTS, 1)
    assert (alone.name, alone.label("sidecar"), alone.numbered) == ("replica-0", "sidecar", False)
    assert cluster_env([alone], alone) == {}
    replicas = plan_replicas(DEFAULTS, 3)
    assert [r.label("function") for r in replicas] == ["function-0", "function-1", "function-2"]
    members = "replica-0=127.0.0.1:9606,replica-1=127.0.0.1:9607,replica-2=127.0.0.1:9608"
    for replica in replicas:
        assert cluster_env(replicas, replica) == {
            "POD_NAME": replica.name, "LARDER_CLUSTER_MEMBERS": members}


def test_a_replicas_share_comes_from_its_own_cluster_answer() -> None:
    info = {"member": "replica-1", "shard_count": 16384,
            "members": [{"id": "replica-0", "shards": 5502}, {"id": "replica-1", "shards": 5436}]}
    assert own_share(info) == "5436 of 16384 shards"
    assert own_share({"member": "replica-9", "members": []}) == "its shards unknown"
