"""Where entities live: the router and the owners it hands out. Sits between the
dispatcher and the local entity host (membership, shard map and peers come here)."""

from .routing import LocalRouter, Owner, Router

__all__ = ["LocalRouter", "Owner", "Router"]
