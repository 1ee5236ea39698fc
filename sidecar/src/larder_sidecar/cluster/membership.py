"""Who the members of a function's cluster are: versioned snapshots from a source.

A `Membership` is a snapshot: every member known to this sidecar, each with a stable
id (the pod name), the address of its internal server, and whether it is terminating.
A terminating member gets no shards but stays known until it is gone, so shards can
be handed over from it. A `MembershipSource` yields the first snapshot and then one
per change; `StaticMembership` is a fixed list (off Kubernetes), `kube_membership`
watches the function's headless Service's EndpointSlices.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import NewType, Protocol

log = logging.getLogger(__name__)

MemberId = NewType("MemberId", str)
"""A member's stable id: its pod name (`POD_NAME`)."""


@dataclass(frozen=True, slots=True)
class Member:
    id: MemberId
    address: str
    """`host:port` of the member's internal server (IPv6 hosts in brackets)."""
    terminating: bool = False
    """Known (it may still hold shards to hand over), but given no shards."""


@dataclass(frozen=True, slots=True)
class Membership:
    """One snapshot of the members, sorted by id; ids are unique."""

    members: tuple[Member, ...]
    version: int
    """Increases with every change its source observed, so it orders the snapshots of one
    sidecar. Each sidecar watches on its own, so versions of different sidecars are not
    comparable: `fingerprint` is (equal views have equal fingerprints)."""

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.members, key=lambda m: m.id))
        for before, after in itertools.pairwise(ordered):
            if before.id == after.id:
                raise ValueError(f"member id {before.id!r} appears twice in one membership")
        object.__setattr__(self, "members", ordered)

    @property
    def active(self) -> tuple[MemberId, ...]:
        """The ids of the members that may own shards (not terminating), sorted."""
        return tuple(m.id for m in self.members if not m.terminating)

    def get(self, member: MemberId) -> Member | None:
        return next((m for m in self.members if m.id == member), None)

    @property
    def fingerprint(self) -> str:
        """A digest of the members (ids, addresses, terminating), not of the version."""
        digest = hashlib.blake2b(digest_size=8, person=b"larder.members")
        for m in self.members:
            for part in (m.id, m.address, "terminating" if m.terminating else "active"):
                encoded = part.encode("utf-8", "surrogatepass")
                digest.update(len(encoded).to_bytes(4, "big"))
                digest.update(encoded)
        return digest.hexdigest()

    def describe(self) -> str:
        """For one log line: `a, b (terminating), c`."""
        if not self.members:
            return "no members"
        return ", ".join(f"{m.id} (terminating)" if m.terminating else m.id for m in self.members)


def describe_change(before: Membership | None, after: Membership) -> str:
    """What changed from `before` to `after`, for the one log line per change."""
    parts = [f"membership v{after.version}: {after.describe()}"]
    if before is not None:
        old = {m.id: m for m in before.members}
        new = {m.id: m for m in after.members}
        joined = sorted(new.keys() - old.keys())
        left = sorted(old.keys() - new.keys())
        now_terminating = sorted(
            i for i in new.keys() & old.keys() if new[i].terminating and not old[i].terminating
        )
        moved = sorted(i for i in new.keys() & old.keys() if new[i].address != old[i].address)
        for label, ids in (
            ("joined", joined),
            ("left", left),
            ("terminating", now_terminating),
            ("new address", moved),
        ):
            if ids:
                parts.append(f"{label}: {', '.join(ids)}")
    return "; ".join(parts)


class MembershipSource(Protocol):
    """Where snapshots come from. A source runs only while its consumer waits for the next
    snapshot, so consume it in a loop of its own (a task that owns it), with
    `contextlib.aclosing`."""

    def snapshots(self) -> AsyncGenerator[Membership, None]:
        """Yield the current membership as soon as it is known, then one snapshot per
        change. Never ends on its own (a source retries its own failures); cancel the
        consuming task to stop it."""
        ...


class StaticMembership:
    """A fixed member list, all active: for sidecars off Kubernetes (`larder dev`, VMs)."""

    def __init__(self, members: Iterable[tuple[str, str]]) -> None:
        self._membership = Membership(
            tuple(Member(MemberId(id_), address) for id_, address in members), version=1
        )

    async def snapshots(self) -> AsyncGenerator[Membership, None]:
        log.info("%s (static)", describe_change(None, self._membership))
        yield self._membership
        # The list never changes; stay open like every source, until cancelled.
        await asyncio.Event().wait()
