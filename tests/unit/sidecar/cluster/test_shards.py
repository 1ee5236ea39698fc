"""The shard map: stable hashes, balance, minimal movement, agreement between processes."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap

import pytest
from larder_sidecar.cluster.membership import Member, MemberId, Membership
from larder_sidecar.cluster.shards import (
    ShardCountMismatchError,
    ShardId,
    ShardMap,
    check_shard_count,
    owner_weights,
    shard_of,
)
from larder_sidecar.settings import DEFAULT_SHARD_COUNT

_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated names


def pod_names(count: int, seed: int) -> list[str]:
    """Names shaped like a Deployment's pods (`fn-<replicaset>-<pod>`), fixed per seed."""
    rng = random.Random(seed)
    replica_set = "".join(rng.choice(_ALPHABET) for _ in range(10))
    return [
        f"shopping-cart-{replica_set}-{''.join(rng.choice(_ALPHABET) for _ in range(5))}"
        for _ in range(count)
    ]


def membership(
    ids: list[str], terminating: frozenset[str] = frozenset(), version: int = 1
) -> Membership:
    return Membership(
        tuple(
            Member(MemberId(i), f"10.1.0.{n}:9604", terminating=i in terminating)
            for n, i in enumerate(ids)
        ),
        version,
    )


# -- entity -> shard ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity_type", "entity_id", "default_count", "of_1024"),
    [
        ("ShoppingCart", "cart-1", 5563, 443),
        ("shop.ShoppingCart", "alice", 5101, 1005),
        ("Cart", "Ünïcødé 🛒", 5217, 97),
        ("Cart", "", 14005, 693),
        # Length-prefixed: the type/id boundary matters.
        ("ab", "c", 85, 85),
        ("a", "bc", 863, 863),
    ],
)
def test_entity_shards_are_fixed_vectors(
    entity_type: str, entity_id: str, default_count: int, of_1024: int
) -> None:
    # A change here re-shards every deployed function: pods of the old and the new
    # release would disagree on owners. Change the hash only with a migration.
    assert shard_of(entity_type, entity_id) == default_count
    assert shard_of(entity_type, entity_id, 1024) == of_1024


def test_owner_weights_and_a_small_map_are_fixed_vectors() -> None:
    assert owner_weights(MemberId("cart-7d9f5-x2k9p"), 3) == (
        8064260816298584990,
        16970761590425001475,
        14764319954920994700,
    )
    shard_map = ShardMap(membership(["a", "b", "c"], terminating=frozenset({"c"})), 16)
    assert "".join(str(shard_map.owner(ShardId(s))) for s in range(16)) == "abaabbaabaaaabab"
    assert shard_map.membership.fingerprint == "67b586e3439f710a"


def test_a_shards_weight_does_not_depend_on_the_shard_count() -> None:
    member = MemberId("cart-0")
    assert owner_weights(member, 1024) == owner_weights(member, DEFAULT_SHARD_COUNT)[:1024]


@pytest.mark.parametrize("count", [1, 7, 1024])
def test_entities_spread_over_every_shard(count: int) -> None:
    assert {shard_of("Cart", f"c{i}", count) for i in range(20 * count)} == set(range(count))


_CHILD = textwrap.dedent(
    """
    import hashlib, sys
    from larder_sidecar.cluster.membership import Member, MemberId, Membership
    from larder_sidecar.cluster.shards import ShardId, ShardMap, shard_of
    ids = sys.argv[1].split(",")
    m = ShardMap(Membership(tuple(Member(MemberId(i), "x:1") for i in ids), 1))
    owners = ",".join(str(m.owner(ShardId(s))) for s in range(m.shard_count))
    entities = ",".join(str(shard_of("Cart", f"c{n}")) for n in range(1000))
    print(hashlib.sha256((owners + "|" + entities).encode()).hexdigest())
    """
)


def _map_digest(ids: list[str]) -> str:
    m = ShardMap(membership(ids))
    owners = ",".join(str(m.owner(ShardId(s))) for s in range(m.shard_count))
    entities = ",".join(str(shard_of("Cart", f"c{n}")) for n in range(1000))
    return hashlib.sha256((owners + "|" + entities).encode()).hexdigest()


def test_other_processes_compute_the_same_map() -> None:
    ids = pod_names(5, seed=7)
    expected = _map_digest(ids)
    for seed in ("0", "12345"):
        # A different str hash salt per process: Python's hash() must play no part.
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, ",".join(ids)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            timeout=60,
            check=True,
        )
        assert child.stdout.strip() == expected


# -- shard -> member ------------------------------------------------------------------


@pytest.mark.parametrize("members", range(3, 11))
def test_default_shard_count_balances_within_ten_percent(members: int) -> None:
    for seed in range(5):
        ids = pod_names(members, seed=1000 * members + seed)
        shard_map = ShardMap(membership(ids))
        mean = DEFAULT_SHARD_COUNT / members
        loads = [len(shard_map.shards_of(MemberId(i))) for i in ids]
        assert sum(loads) == DEFAULT_SHARD_COUNT
        worst = max(abs(load - mean) / mean for load in loads)
        assert worst <= 0.10, f"{members} members {ids}: loads {loads}"


def test_every_shard_has_exactly_one_owner_among_the_active_members() -> None:
    ids = pod_names(4, seed=3)
    shard_map = ShardMap(membership(ids, terminating=frozenset({ids[0]})), 512)
    owners = [shard_map.owner(ShardId(s)) for s in range(512)]
    assert set(owners) == set(ids[1:])
    assert shard_map.shards_of(MemberId(ids[0])) == ()
    for member in ids[1:]:
        assert shard_map.shards_of(MemberId(member)) == tuple(
            ShardId(s) for s, o in enumerate(owners) if o == member
        )


@pytest.mark.parametrize("members", [3, 5, 10])
def test_removing_a_member_moves_only_its_shards(members: int) -> None:
    ids = pod_names(members, seed=members)
    before = ShardMap(membership(ids))
    gone = MemberId(ids[1])
    after = ShardMap(membership([i for i in ids if i != gone], version=2))
    moves = before.moves_to(after)
    assert {m.source for m in moves} == {gone}
    moved = sorted(s for m in moves for s in m.shards)
    assert moved == list(before.shards_of(gone))
    # ... spread over the others, not dumped on one.
    assert {m.target for m in moves} == {MemberId(i) for i in ids if i != gone}
    for shard in range(before.shard_count):
        if before.owner(ShardId(shard)) != gone:
            assert after.owner(ShardId(shard)) == before.owner(ShardId(shard))


@pytest.mark.parametrize("members", [3, 5, 9])
def test_adding_a_member_moves_only_shards_to_it(members: int) -> None:
    ids = pod_names(members + 1, seed=50 + members)
    before = ShardMap(membership(ids[:-1]))
    new = MemberId(ids[-1])
    after = ShardMap(membership(ids, version=2))
    moves = before.moves_to(after)
    assert {m.target for m in moves} == {new}
    assert sorted(s for m in moves for s in m.shards) == list(after.shards_of(new))
    # It takes about its fair share, from every old member.
    assert {m.source for m in moves} == {MemberId(i) for i in ids[:-1]}
    fair = before.shard_count / (members + 1)
    assert abs(len(after.shards_of(new)) - fair) <= 0.10 * fair


def test_a_terminating_member_gives_up_its_shards_but_stays_known() -> None:
    ids = pod_names(3, seed=11)
    leaving = MemberId(ids[2])
    before = ShardMap(membership(ids))
    after = ShardMap(membership(ids, terminating=frozenset({leaving}), version=2))
    assert [m.source for m in before.moves_to(after)] == [leaving, leaving]
    assert after.shards_of(leaving) == ()
    known = after.member(leaving)
    assert known is not None
    assert known.terminating
    assert known.address == "10.1.0.2:9604"
    # Same result as if it had left: terminating never changes who else owns what.
    gone = ShardMap(membership(ids[:2], version=3))
    assert after.moves_to(gone) == ()


def test_moves_are_grouped_by_source_and_target_and_sorted() -> None:
    before = ShardMap(membership(["a", "b"]), 64)
    after = ShardMap(membership(["b", "c"], version=2), 64)
    moves = before.moves_to(after)
    assert [(m.source, m.target) for m in moves] == sorted(
        {(m.source, m.target) for m in moves}, key=lambda pair: (pair[0] or "", pair[1] or "")
    )
    for move in moves:
        assert list(move.shards) == sorted(move.shards)
        assert all(
            before.owner(s) == move.source and after.owner(s) == move.target for s in move.shards
        )
    total = sum(len(m.shards) for m in moves)
    assert total == sum(before.owner(ShardId(s)) != after.owner(ShardId(s)) for s in range(64))


def test_no_active_member_means_no_owner() -> None:
    empty = ShardMap(Membership((), 1), 8)
    assert {empty.owner(ShardId(s)) for s in range(8)} == {None}
    all_leaving = ShardMap(membership(["a"], terminating=frozenset({"a"})), 8)
    assert all_leaving.owner_of("Cart", "c1") is None
    up = ShardMap(membership(["a"], version=2), 8)
    assert all_leaving.moves_to(up)[0].source is None
    assert up.moves_to(all_leaving)[0].target is None


def test_equal_memberships_give_equal_maps() -> None:
    x, y = Member(MemberId("x"), "10.0.0.1:9604"), Member(MemberId("y"), "10.0.0.2:9604")
    a = ShardMap(Membership((x, y), 1), 32)
    # Order of the members as given does not matter.
    b = ShardMap(Membership((y, x), 1), 32)
    assert a == b
    assert a.moves_to(b) == ()
    assert a.owner_of("Cart", "c1") == b.owner_of("Cart", "c1")


# -- shard count agreement and bad input ------------------------------------------------


def test_a_peer_with_another_shard_count_is_refused_with_the_reason() -> None:
    check_shard_count(16384, 16384, MemberId("cart-b"))
    with pytest.raises(ShardCountMismatchError) as caught:
        check_shard_count(16384, 1024, MemberId("cart-b"))
    message = str(caught.value)
    assert "'cart-b' uses 1024 shards" in message
    assert "this member uses 16384" in message
    assert "LARDER_SHARD_COUNT" in message


def test_maps_of_different_shard_counts_cannot_be_compared() -> None:
    with pytest.raises(ShardCountMismatchError, match="1024 shards with one of 2048"):
        ShardMap(membership(["a"]), 1024).moves_to(ShardMap(membership(["a"]), 2048))


def test_bad_counts_shards_and_memberships_are_refused() -> None:
    with pytest.raises(ValueError, match="between 1 and 65536, not 0"):
        ShardMap(membership(["a"]), 0)
    with pytest.raises(ValueError, match="between 1 and 65536"):
        shard_of("Cart", "c", 65537)
    with pytest.raises(ValueError, match="shard 8 is out of range for 8 shards"):
        ShardMap(membership(["a"]), 8).owner(ShardId(8))
    with pytest.raises(ValueError, match="'a' appears twice"):
        membership(["a", "b", "a"])
