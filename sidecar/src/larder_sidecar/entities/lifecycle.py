"""Every state an active entity can be in, and every legal move between them.

One table, in the style of h11's `_state.py`: the entity task (`entity.py`) fires an
`Event` when something happens and the table says where that leads; anything not in
the table is a bug in the sidecar and raises `IllegalTransition`. A reader sees the
whole life of an entity here:

    INACTIVE ─activate─▶ ACTIVATING ─activated─▶ ACTIVE ─handle─▶ HANDLING ─write─▶ WRITING
      ▲  ▲                   │                    ▲  ▲                │                 │
      │  └─────── fail ──────┘                    │  └───── done ─────┘                 │
      │                                           └──────────────── done ───────────────┘
      └── restart (from ACTIVE, HANDLING, WRITING: the open stream is dropped)

    ACTIVE | INACTIVE ─idle─▶ PASSIVATING ─stop─▶ STOPPED
    ACTIVE | INACTIVE ─release─▶ RELEASING ─stop─▶ STOPPED
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class State(enum.Enum):
    # Members are singletons compared by identity, so the identity hash agrees with
    # equality; Enum's own __hash__ is Python code (hash of the name), and `fire`
    # hashes a state and an event for every move, several per command.
    __hash__ = object.__hash__

    INACTIVE = "inactive"
    """No protocol stream: just created, or dropped after a failure. The next command
    activates the entity from the journal."""
    ACTIVATING = "activating"
    """Waiting for the previous stream's journal writes, loading from the journal,
    opening the stream and replaying."""
    ACTIVE = "active"
    """The stream is open; no command is with the user function."""
    HANDLING = "handling"
    """One command is with the user function."""
    WRITING = "writing"
    """A handled command's reply waits for this entity's journal write."""
    RELEASING = "releasing"
    """The host no longer admits commands for this entity (hand-off or shutdown): it
    finished the ones it had and now waits for its writes, then closes the stream."""
    PASSIVATING = "passivating"
    """Idle for its passivation timeout: waits for its writes, then closes the stream."""
    STOPPED = "stopped"
    """The task has ended; the host no longer knows the entity."""


class Event(enum.Enum):
    __hash__ = object.__hash__  # as State's

    ACTIVATE = "activate"
    ACTIVATED = "activated"
    FAIL = "fail"
    """Activation failed (journal or user function); the command fails."""
    HANDLE = "handle"
    WRITE = "write"
    DONE = "done"
    """The command's reply is released, or queued behind an in-flight write."""
    RESTART = "restart"
    """The stream is dropped; the entity re-activates before its next command."""
    IDLE = "idle"
    RELEASE = "release"
    ABORT = "abort"
    """The entity's loop ended by an exception (a bug): it still closes in order."""
    STOP = "stop"


_RUNNING = (State.INACTIVE, State.ACTIVATING, State.ACTIVE, State.HANDLING, State.WRITING)
_CLOSING = (State.RELEASING, State.PASSIVATING)
_STREAM_OPEN = (State.ACTIVE, State.HANDLING, State.WRITING)

TRANSITIONS: Mapping[tuple[State, Event], State] = {
    (State.INACTIVE, Event.ACTIVATE): State.ACTIVATING,
    (State.ACTIVATING, Event.ACTIVATED): State.ACTIVE,
    (State.ACTIVATING, Event.FAIL): State.INACTIVE,
    (State.ACTIVE, Event.HANDLE): State.HANDLING,
    (State.HANDLING, Event.WRITE): State.WRITING,
    (State.HANDLING, Event.DONE): State.ACTIVE,
    (State.WRITING, Event.DONE): State.ACTIVE,
    # The command restarted the entity (a failed write, or the user function asked).
    (State.INACTIVE, Event.DONE): State.INACTIVE,
    # A failure drops the open stream (a failed activation is `fail`, above).
    **{(s, Event.RESTART): State.INACTIVE for s in _STREAM_OPEN},
    # A write that fails while closing drops the stream; the entity still closes.
    **{(s, Event.RESTART): s for s in _CLOSING},
    # Only between commands: the loop decides these when its queue is empty.
    (State.ACTIVE, Event.IDLE): State.PASSIVATING,
    (State.INACTIVE, Event.IDLE): State.PASSIVATING,
    (State.ACTIVE, Event.RELEASE): State.RELEASING,
    (State.INACTIVE, Event.RELEASE): State.RELEASING,
    **{(s, Event.ABORT): State.PASSIVATING for s in (*_RUNNING, *_CLOSING)},
    **{(s, Event.STOP): State.STOPPED for s in _CLOSING},
}


class IllegalTransition(Exception):
    """An entity was asked to do something its state does not allow: a sidecar bug."""


class Lifecycle:
    """The state of one entity; moves only along `TRANSITIONS`."""

    __slots__ = ("_name", "state")

    def __init__(self, name: str | tuple[str, ...]) -> None:
        # An entity passes its key, joined with "/" only for the error: a string per
        # entity would be one more object to keep for each of thousands.
        self._name = name
        self.state = State.INACTIVE

    @property
    def name(self) -> str:
        return self._name if isinstance(self._name, str) else "/".join(self._name)

    def fire(self, event: Event) -> State:
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise IllegalTransition(
                f"entity {self.name}: {event.value!r} is not legal in state "
                f"{self.state.value!r}; this is a bug in the sidecar"
            ) from None
        return self.state
