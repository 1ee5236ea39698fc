"""Active entities: the local host that owns them, one task per entity, and what each
component type stores (`event_sourced.py`, `value_entity.py`). Knows nothing of other
pods; `cluster` decides which entities live here."""

from .command import Command, EntityKey
from .host import EntityHost, EntityPredicate, EntityReleased, Reenter

__all__ = ["Command", "EntityHost", "EntityKey", "EntityPredicate", "EntityReleased", "Reenter"]
