"""The hand-off table: every legal move of a shard on one member, and nothing else."""

from __future__ import annotations

import pytest
from larder_sidecar.cluster.handoff import (
    SETTLING,
    TRANSITIONS,
    HandOffEvent,
    IllegalTransition,
    ShardState,
    ShardTable,
)
from larder_sidecar.cluster.shards import ShardId

S = ShardId(7)
GAIN, LOSE, CONFIRMED, RELEASED = (
    HandOffEvent.GAIN,
    HandOffEvent.LOSE,
    HandOffEvent.CONFIRMED,
    HandOffEvent.RELEASED,
)


def _walk(*events: HandOffEvent) -> list[ShardState]:
    table = ShardTable(16)
    return [table.fire(S, e) for e in events]


def test_a_shard_is_served_only_after_its_previous_owner_confirmed() -> None:
    assert _walk(GAIN, CONFIRMED, LOSE, RELEASED) == [
        ShardState.ACQUIRING,
        ShardState.OWNED,
        ShardState.RELEASING,
        ShardState.NOT_OWNED,
    ]


def test_a_shard_that_returns_during_its_release_is_acquired_once_released() -> None:
    assert _walk(GAIN, CONFIRMED, LOSE, GAIN, RELEASED, CONFIRMED) == [
        ShardState.ACQUIRING,
        ShardState.OWNED,
        ShardState.RELEASING,
        ShardState.RETURNING,
        ShardState.ACQUIRING,
        ShardState.OWNED,
    ]
    # And leaves again before its release is done: still releasing.
    assert _walk(GAIN, CONFIRMED, LOSE, GAIN, LOSE)[-1] is ShardState.RELEASING


def test_a_shard_lost_while_acquiring_was_never_served() -> None:
    assert _walk(GAIN, LOSE) == [ShardState.ACQUIRING, ShardState.NOT_OWNED]


@pytest.mark.parametrize(
    ("events", "illegal"),
    [
        ((), CONFIRMED),  # nothing to confirm
        ((), RELEASED),  # nothing being released
        ((), LOSE),  # not ours
        ((GAIN,), GAIN),  # gained twice without losing
        ((GAIN,), RELEASED),
        ((GAIN, CONFIRMED), CONFIRMED),
        ((GAIN, CONFIRMED), GAIN),
        ((GAIN, CONFIRMED, LOSE), LOSE),
        ((GAIN, CONFIRMED, LOSE), CONFIRMED),
    ],
)
def test_every_other_move_is_a_bug(events: tuple[HandOffEvent, ...], illegal: HandOffEvent) -> None:
    table = ShardTable(16)
    for e in events:
        table.fire(S, e)
    before = table.state(S)
    with pytest.raises(IllegalTransition, match=f"shard 7: {illegal.value!r} is not legal"):
        table.fire(S, illegal)
    assert table.state(S) is before


def test_the_table_covers_exactly_the_drawn_moves() -> None:
    legal = {(state, event) for state in ShardState for event in HandOffEvent} & set(TRANSITIONS)
    assert len(legal) == 8
    assert {ShardState.ACQUIRING, ShardState.RETURNING} == SETTLING


def test_a_late_confirmation_confirms_nothing_after_the_shard_came_and_went() -> None:
    table = ShardTable(16)
    table.fire(S, GAIN)
    first = {S: table.acquisition(S)}
    table.fire(S, LOSE)
    table.fire(S, GAIN)
    # The first acquisition's answer arrives now: it is about an earlier gain.
    assert table.confirm([S], first) == []
    assert table.state(S) is ShardState.ACQUIRING
    assert table.confirm([S], {S: table.acquisition(S)}) == [S]
    assert table.state(S) is ShardState.OWNED


def test_owned_counts_the_served_shards() -> None:
    table = ShardTable(16)
    for shard in (ShardId(1), ShardId(2), ShardId(3)):
        table.fire(shard, GAIN)
    assert table.owned == 0
    table.confirm([ShardId(1), ShardId(2)], {ShardId(1): 1, ShardId(2): 2})
    assert table.owned == 2
    assert table.in_state(ShardState.ACQUIRING) == [3]
    table.fire(ShardId(1), LOSE)
    assert table.owned == 1
    assert table.in_state(ShardState.RELEASING) == [1]
