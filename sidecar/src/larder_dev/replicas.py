"""The replicas of `larder dev --replicas N`, and asking their sidecars over HTTP.

Each replica is a user function and a sidecar with ports of their own (`ports.py`).
With more than one, the sidecars are the members of one static cluster
(`LARDER_CLUSTER_MEMBERS`, member ids `replica-0`..`replica-N-1` as `POD_NAME`) on the
shared journal: each entity lives on the one sidecar that owns its shard, and the others
forward to it over the internal ports. Each sidecar's admin port answers which replica
owns an entity (`/cluster/owner`) and how the shards are spread (`/cluster`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from larder_dev.ports import ReplicaPorts, allocate_ports

CLUSTER_VARIABLES = (
    "LARDER_CLUSTER_MEMBERS",
    "LARDER_CLUSTER_MEMBERS_FILE",
    "LARDER_CLUSTER_SERVICE",
    "POD_NAME",
)
"""Membership settings `larder dev` sets itself for replicas; inherited values would
contradict them."""

_ADMIN_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Replica:
    index: int
    ports: ReplicaPorts
    numbered: bool
    """Whether there are several: then labels and names carry the index."""

    @property
    def name(self) -> str:
        """The sidecar's member id (`POD_NAME`)."""
        return f"replica-{self.index}"

    def label(self, role: str) -> str:
        """`sidecar`, or `sidecar-1` among several replicas: the prefix of its lines."""
        return f"{role}-{self.index}" if self.numbered else role


def plan_replicas(first: ReplicaPorts, count: int) -> tuple[Replica, ...]:
    """`count` replicas, the first on the options' ports. Raises DevInputError."""
    return tuple(Replica(i, ports, count > 1)
                 for i, ports in enumerate(allocate_ports(first, count)))


def cluster_env(replicas: Sequence[Replica], replica: Replica) -> dict[str, str]:
    """The membership variables of `replica`'s sidecar; none for a single replica, which
    serves every entity itself as before."""
    if len(replicas) < 2:
        return {}
    return {
        "POD_NAME": replica.name,
        "LARDER_CLUSTER_MEMBERS": ",".join(
            f"{r.name}=127.0.0.1:{r.ports.internal}" for r in replicas),
    }


async def admin_get(port: int, target: str) -> tuple[int, bytes] | None:
    """GET `target` from the admin port on loopback: (status, body), or None when it
    does not answer (yet) within a couple of seconds."""
    try:
        async with asyncio.timeout(_ADMIN_TIMEOUT_S):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(f"GET {target} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
                await writer.drain()
                # The admin server closes the connection after each answer.
                response = await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    head, _, body = response.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1]), body


async def cluster_info(port: int) -> Mapping[str, object] | None:
    """The sidecar's `/cluster` answer, or None when it has none to give."""
    answer = await admin_get(port, "/cluster")
    if answer is None or answer[0] != 200:
        return None
    with contextlib.suppress(ValueError):
        info = json.loads(answer[1])
        if isinstance(info, dict):
            return info
    return None


def own_share(info: Mapping[str, object]) -> str:
    """`5461 of 16384 shards` for the member that answered, from its `/cluster`."""
    members = info.get("members")
    me = info.get("member")
    if isinstance(members, list):
        for member in members:
            if isinstance(member, dict) and member.get("id") == me:
                return f"{member.get('shards')} of {info.get('shard_count')} shards"
    return "its shards unknown"
