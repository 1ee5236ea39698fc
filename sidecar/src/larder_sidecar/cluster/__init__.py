"""Where entities live: the router and the owners it hands out. Sits between the
dispatcher and the local entity host: `LocalRouter` for one pod; with membership the
`ShardedRouter` (`sharded.py`: the shard map, forwarding to peers over the internal
port, hand-off), started with its internal server as a `ClusterNode` (`node.py`).

Only the seam is exported here: the other modules read the settings, whose import
reaches the dispatcher, which imports this package."""

from .routing import LocalRouter, Owner, Router

__all__ = ["LocalRouter", "Owner", "Router"]
