"""What a sidecar tells a person about its cluster, on the admin port:

- `GET /cluster`: this member, the shard count, the journal it writes to, its map
  (version and fingerprint), and every member with its address and the number of shards
  it owns under that map;
- `GET /cluster/owner?type=T&id=I`: the member that owns entity (T, I), and its shard.
  `type` may be left out when the function has one entity type.

Both answer from this sidecar's current map, so members that see the same membership
(equal fingerprints) name the same owner. No I/O here: the admin server serves them.

The Kubernetes operator reads `/cluster` of every ready pod to report in the
StatefulFunction's status how many agree on the map, and config drift between them: a
different shard count or journal (docs/operator.md, "Shard map").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..settings import Settings
from .sharded import ShardedRouter
from .shards import ShardMap

JsonAnswer = tuple[int, dict[str, object]]
"""An HTTP status and a JSON object."""


@dataclass(frozen=True)
class ClusterView:
    """What the answers are computed from, at the moment of a request."""

    configured: bool
    """Whether membership is configured (else this sidecar serves every entity itself)."""
    router: ShardedRouter | None
    """None until the sidecar has discovered its function and started its router."""
    entity_types: Sequence[str]
    """The function's entity types, sorted; empty until discovery."""
    journal: str = ""
    """Which journal this sidecar writes to (`journal_identity`): pods of one function
    that name different journals do not fence each other."""


def journal_identity(settings: Settings) -> str:
    """The journal's type and where it is, without credentials: `memory` (one per
    sidecar), `sqlite:PATH`, or `cassandra:KEYSPACE@HOST,...:PORT`."""
    if settings.journal_type == "sqlite":
        return f"sqlite:{settings.journal_sqlite_path}"
    if settings.journal_type == "cassandra" and settings.journal_cassandra is not None:
        cassandra = settings.journal_cassandra
        hosts = ",".join(sorted(cassandra.contact_points))
        return f"cassandra:{cassandra.keyspace}@{hosts}:{cassandra.port}"
    return str(settings.journal_type)


_NOT_CLUSTERED = (
    "this sidecar has no cluster membership (LARDER_CLUSTER_MEMBERS, "
    "LARDER_CLUSTER_MEMBERS_FILE or LARDER_CLUSTER_SERVICE): it serves every entity itself"
)


def describe_cluster(view: ClusterView) -> JsonAnswer:
    current = _current(view)
    if current is None:
        return _refusal(view)
    router, shard_map = current
    members = [
        {
            "id": m.id,
            "address": m.address,
            "terminating": m.terminating,
            "shards": len(shard_map.shards_of(m.id)),
        }
        for m in shard_map.membership.members
    ]
    return 200, {
        "member": router.me,
        "shard_count": router.shard_count,
        "journal": view.journal,
        "map_version": shard_map.version,
        "fingerprint": shard_map.membership.fingerprint,
        "shards_served_here": router.table.owned,
        "entity_types": list(view.entity_types),
        "members": members,
    }


def describe_owner(view: ClusterView, query: Mapping[str, str]) -> JsonAnswer:
    current = _current(view)
    if current is None:
        return _refusal(view)
    router, shard_map = current
    entity_id = query.get("id")
    if not entity_id:
        return 400, {"error": "give the entity id: /cluster/owner?type=TYPE&id=ID"}
    entity_type = query.get("type")
    if not entity_type:
        if len(view.entity_types) != 1:
            return 400, {
                "error": "give the entity type too (type=TYPE): this function has "
                f"{_types(view.entity_types)}"
            }
        entity_type = view.entity_types[0]
    elif view.entity_types and entity_type not in view.entity_types:
        # A typo would still hash to some shard: name the real types instead.
        return 400, {
            "error": f"this function has no entity type {entity_type!r}; it has "
            f"{_types(view.entity_types)}"
        }
    shard = router.shard_of(entity_type, entity_id)
    owner = shard_map.owner(shard)
    member = None if owner is None else shard_map.member(owner)
    return 200, {
        "entity_type": entity_type,
        "entity_id": entity_id,
        "shard": shard,
        "owner": owner,
        "owner_address": None if member is None else member.address,
        "answered_by": router.me,
        "state_here": router.table.state(shard).value,
        "map_version": shard_map.version,
        "fingerprint": shard_map.membership.fingerprint,
    }


def cluster_routes(
    view: Callable[[], ClusterView],
) -> dict[str, Callable[[Mapping[str, str]], JsonAnswer]]:
    """The admin server's routes for these answers, each reading `view()` when asked."""
    return {
        "/cluster": lambda query: describe_cluster(view()),
        "/cluster/owner": lambda query: describe_owner(view(), query),
    }


def _current(view: ClusterView) -> tuple[ShardedRouter, ShardMap] | None:
    if view.router is None or view.router.map is None:
        return None
    return view.router, view.router.map


def _refusal(view: ClusterView) -> JsonAnswer:
    if not view.configured:
        return 404, {"error": _NOT_CLUSTERED}
    return 503, {"error": "starting: this sidecar has no shard map yet; retry"}


def _types(types: Sequence[str]) -> str:
    if not types:
        return "no entity types"
    return "entity types " + ", ".join(types)
