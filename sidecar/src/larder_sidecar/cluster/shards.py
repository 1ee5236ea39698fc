"""Which member owns an entity: entity → shard → member, the same on every pod.

Entity → shard: a 64-bit BLAKE2b of (entity type, entity id), modulo the shard count.
Shard → member: rendezvous (highest-random-weight) hashing. Every shard ranks every
member by a weight derived from (member id, shard) alone; the highest-ranked active
member owns it. A member that joins takes exactly the shards it now ranks first on, and
one that leaves (or starts terminating) gives up exactly its own: nothing else moves.

Both hashes are fixed functions of their inputs (never Python's `hash()`, which is
salted per process), so pods of different processes and different releases agree;
tests/unit/sidecar/cluster/test_shards.py pins known vectors.

Why 16384 shards by default (`LARDER_SHARD_COUNT`): rendezvous places each shard
independently, so a member's share is binomial, with a relative spread of
sqrt((members - 1) / shards). At 1024 shards and 10 members that is 9.4 %, and in most
sets of 6-10 members the fullest is more than 10 % above the mean; at 16384 it is 2.2 %,
and 10 % is 4.5 standard deviations away (in 800 sets of 3-10 random pod names the worst
member was 9.0 % off). Building a map costs one SHAKE-256 stream per member plus one
pass over the shards (about 10-40 ms at 10 members), and a map is a tuple of 16384 small
ints. Hand-off works on sets of shards per (old owner, new owner), so the count does not
multiply messages.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NewType

from ..settings import DEFAULT_SHARD_COUNT, MAX_SHARD_COUNT
from .membership import Member, MemberId, Membership

ShardId = NewType("ShardId", int)

_ENTITY_PERSON = b"larder.shard.v1"
_WEIGHT_DOMAIN = b"larder.owner.v1\x00"
_WEIGHT = struct.Struct(">Q")


class ShardCountMismatchError(ValueError):
    """Two members count shards differently, so they cannot agree on owners: every pod of
    a function needs the same `LARDER_SHARD_COUNT`."""


def check_shard_count(ours: int, theirs: int, peer: MemberId) -> None:
    """Raise `ShardCountMismatchError` unless a peer uses the same shard count as we do."""
    if ours != theirs:
        raise ShardCountMismatchError(
            f"member {peer!r} uses {theirs} shards and this member uses {ours}: they would "
            "disagree on the owner of almost every entity, so they refuse to work together. "
            "Set the same LARDER_SHARD_COUNT on every pod of the function (a changed count "
            "needs every pod replaced at once, not a rolling update)"
        )


def _check_count(shard_count: int) -> None:
    if not 1 <= shard_count <= MAX_SHARD_COUNT:
        raise ValueError(
            f"a shard count must be between 1 and {MAX_SHARD_COUNT}, not {shard_count}"
        )


def shard_of(entity_type: str, entity_id: str, shard_count: int = DEFAULT_SHARD_COUNT) -> ShardId:
    """The shard of an entity: stable across processes, platforms and releases."""
    _check_count(shard_count)
    digest = hashlib.blake2b(digest_size=8, person=_ENTITY_PERSON)
    # Length-prefixed, so ("ab", "c") and ("a", "bc") are different entities.
    kind = entity_type.encode("utf-8", "surrogatepass")
    digest.update(len(kind).to_bytes(4, "big"))
    digest.update(kind)
    digest.update(entity_id.encode("utf-8", "surrogatepass"))
    return ShardId(int.from_bytes(digest.digest(), "big") % shard_count)


def owner_weights(member: MemberId, shard_count: int) -> tuple[int, ...]:
    """The member's rendezvous weight for shards 0 .. shard_count-1 (64-bit each).

    The weights are consecutive 8-byte words of one SHAKE-256 stream keyed by the member
    id, so one hash call serves every shard, and a shard's weight does not depend on the
    shard count."""
    stream = hashlib.shake_256(_WEIGHT_DOMAIN + member.encode("utf-8", "surrogatepass"))
    data = stream.digest(_WEIGHT.size * shard_count)
    return struct.unpack(f">{shard_count}Q", data)


@dataclass(frozen=True, slots=True)
class ShardMove:
    """Shards that change hands from `source` to `target` (None: no owner)."""

    source: MemberId | None
    target: MemberId | None
    shards: tuple[ShardId, ...]


@dataclass(frozen=True, slots=True)
class ShardMap:
    """The owner of every shard under one membership snapshot. A value: equal inputs,
    equal maps, on every pod."""

    membership: Membership
    shard_count: int = DEFAULT_SHARD_COUNT
    _owners: tuple[int, ...] = field(init=False, repr=False, compare=False)
    """Per shard, an index into `_active` (-1: no active member, no owner)."""
    _active: tuple[MemberId, ...] = field(init=False, repr=False, compare=False)
    _members: dict[MemberId, Member] = field(init=False, repr=False, compare=False)
    """Every member by id: `member()` is on each forward's path."""

    def __post_init__(self) -> None:
        _check_count(self.shard_count)
        active = self.membership.active
        if active:
            columns = [owner_weights(m, self.shard_count) for m in active]
            # Ties (2^-64 apart) go to the smallest id: `active` is sorted and index()
            # finds the first maximum.
            owners = tuple(ws.index(max(ws)) for ws in zip(*columns, strict=True))
        else:
            owners = (-1,) * self.shard_count
        object.__setattr__(self, "_active", active)
        object.__setattr__(self, "_members", {m.id: m for m in self.membership.members})
        object.__setattr__(self, "_owners", owners)

    @property
    def version(self) -> int:
        return self.membership.version

    def shard_of(self, entity_type: str, entity_id: str) -> ShardId:
        return shard_of(entity_type, entity_id, self.shard_count)

    def owner(self, shard: ShardId) -> MemberId | None:
        """The member that owns `shard`; None while no member is active."""
        if not 0 <= shard < self.shard_count:
            raise ValueError(f"shard {shard} is out of range for {self.shard_count} shards")
        index = self._owners[shard]
        return None if index < 0 else self._active[index]

    def owner_of(self, entity_type: str, entity_id: str) -> MemberId | None:
        return self.owner(self.shard_of(entity_type, entity_id))

    def member(self, member: MemberId) -> Member | None:
        """A known member (terminating ones too, for hand-off), with its address."""
        return self._members.get(member)

    def shards_of(self, member: MemberId) -> tuple[ShardId, ...]:
        """The shards `member` owns, ascending; empty for terminating or unknown members."""
        if member not in self._active:
            return ()
        index = self._active.index(member)
        return tuple(ShardId(s) for s, o in enumerate(self._owners) if o == index)

    def _owner_ids(self) -> Iterator[MemberId | None]:
        for index in self._owners:
            yield None if index < 0 else self._active[index]

    def moves_to(self, newer: ShardMap) -> tuple[ShardMove, ...]:
        """The shards whose owner differs in `newer`, grouped by (source, target), sorted."""
        if newer.shard_count != self.shard_count:
            raise ShardCountMismatchError(
                f"cannot compare a map of {self.shard_count} shards with one of "
                f"{newer.shard_count}: every pod of a function needs the same LARDER_SHARD_COUNT"
            )
        groups: dict[tuple[MemberId | None, MemberId | None], list[ShardId]] = {}
        for shard, (old, new) in enumerate(zip(self._owner_ids(), newer._owner_ids(), strict=True)):
            if old != new:
                groups.setdefault((old, new), []).append(ShardId(shard))
        return tuple(
            ShardMove(source, target, tuple(shards))
            for (source, target), shards in sorted(
                groups.items(), key=lambda item: (item[0][0] or "", item[0][1] or "")
            )
        )
