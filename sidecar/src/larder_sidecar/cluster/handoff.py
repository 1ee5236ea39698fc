"""Every state a shard can be in on this member, and every legal move between them.

One table, like `entities/lifecycle.py` (and h11's `_state.py`): the router fires an
`Event` when the shard map or a hand-off step changes something, and the table says
where that leads; a move not in the table raises `IllegalTransition`. No I/O here:
`sharded.py` does the asking and releasing and fires the events.

    NOT_OWNED ─gain─▶ ACQUIRING ─confirmed─▶ OWNED ─lose─▶ RELEASING ─released─▶ NOT_OWNED
        ▲                 │                                  │    ▲
        └────── lose ─────┘                                gain  lose
                                                             ▼    │
                          ACQUIRING ◀──────── released ─── RETURNING

- ACQUIRING: the map says this member owns the shard, but the previous owner has not
  confirmed that it released it. Commands for the shard wait here (bounded); when the
  previous owner confirms, is gone, or the bounded wait passes, `confirmed`.
- RELEASING: the map gave the shard away. New commands go to the new owner (which holds
  them while it is ACQUIRING); the entity host finishes the shard's in-flight commands
  and journal writes and passivates its entities; then `released`.
- RETURNING: the shard came back while it was still being released here; once that
  release is done, it is acquired again like any other.

Only OWNED shards are served by this member's entity host; the host refuses the rest.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from .shards import ShardId


class ShardState(enum.Enum):
    NOT_OWNED = "not owned"
    ACQUIRING = "acquiring"
    OWNED = "owned"
    RELEASING = "releasing"
    RETURNING = "returning"


class HandOffEvent(enum.Enum):
    GAIN = "gain"
    """The new map makes this member the shard's owner."""
    LOSE = "lose"
    """The new map gives the shard to another member (or to none)."""
    CONFIRMED = "confirmed"
    """The previous owner released the shard, is gone, or the bounded wait passed."""
    RELEASED = "released"
    """This member's entity host finished releasing the shard's entities."""


TRANSITIONS: Mapping[tuple[ShardState, HandOffEvent], ShardState] = {
    (ShardState.NOT_OWNED, HandOffEvent.GAIN): ShardState.ACQUIRING,
    (ShardState.ACQUIRING, HandOffEvent.CONFIRMED): ShardState.OWNED,
    (ShardState.ACQUIRING, HandOffEvent.LOSE): ShardState.NOT_OWNED,
    (ShardState.OWNED, HandOffEvent.LOSE): ShardState.RELEASING,
    (ShardState.RELEASING, HandOffEvent.RELEASED): ShardState.NOT_OWNED,
    (ShardState.RELEASING, HandOffEvent.GAIN): ShardState.RETURNING,
    (ShardState.RETURNING, HandOffEvent.RELEASED): ShardState.ACQUIRING,
    (ShardState.RETURNING, HandOffEvent.LOSE): ShardState.RELEASING,
}

SETTLING = frozenset({ShardState.ACQUIRING, ShardState.RETURNING})
"""States in which commands for the shard wait: it is ours, but not yet servable."""

_NOT_OWNED = ShardState.NOT_OWNED
"""Bound once: `state()` is asked for every command, and an enum member read through its
class is a lookup through the metaclass."""


class IllegalTransition(Exception):
    """A shard was moved in a way its state does not allow: a bug in the sidecar."""


class ShardTable:
    """The state of every shard on this member (all NOT_OWNED at first).

    Each GAIN starts a new *acquisition* of the shard, numbered, so a confirmation that
    arrives after the shard was lost and gained again confirms nothing (`confirm` takes
    the number it was started with).
    """

    def __init__(self, shard_count: int) -> None:
        self._states: dict[int, ShardState] = {}
        self._acquisitions: dict[int, int] = {}
        self._counter = 0
        self.shard_count = shard_count
        self.owned = 0

    def state(self, shard: ShardId) -> ShardState:
        return self._states.get(shard, _NOT_OWNED)

    def acquisition(self, shard: ShardId) -> int:
        """The number of the shard's current acquisition (0: none yet)."""
        return self._acquisitions.get(shard, 0)

    def fire(self, shard: ShardId, event: HandOffEvent) -> ShardState:
        before = self.state(shard)
        try:
            after = TRANSITIONS[before, event]
        except KeyError:
            raise IllegalTransition(
                f"shard {shard}: {event.value!r} is not legal in state {before.value!r}; "
                "this is a bug in the sidecar"
            ) from None
        if after is ShardState.NOT_OWNED:
            self._states.pop(shard, None)
        else:
            self._states[shard] = after
        if event is HandOffEvent.GAIN:
            self._counter += 1
            self._acquisitions[shard] = self._counter
        self.owned += (after is ShardState.OWNED) - (before is ShardState.OWNED)
        return after

    def confirm(
        self, shards: Iterable[ShardId], acquisitions: Mapping[ShardId, int]
    ) -> list[ShardId]:
        """CONFIRMED for each shard still in the acquisition it was started with; returns
        the shards that became OWNED."""
        done = []
        for shard in shards:
            if (
                self.state(shard) is ShardState.ACQUIRING
                and self.acquisition(shard) == acquisitions[shard]
            ):
                self.fire(shard, HandOffEvent.CONFIRMED)
                done.append(shard)
        return done

    def in_state(self, state: ShardState) -> list[ShardId]:
        if state is ShardState.NOT_OWNED:
            raise ValueError("NOT_OWNED shards are not listed; there are too many")
        return sorted(ShardId(s) for s, st in self._states.items() if st is state)
