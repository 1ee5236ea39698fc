"""Model cases for event-sourced entities: the TCK plays the sidecar."""

from __future__ import annotations

from larder_protocol import EVENT_SOURCED_ENTITY
from larder_tck import context as c
from larder_tck.cases._es import EsEntity, EsModel
from larder_tck.context import ModelContext, fresh_id
from larder_tck.registry import case

ES = EVENT_SOURCED_ENTITY

_NO_EVENTS = "a command that emits nothing must reply with no events"
_SNAPSHOT = (
    "a snapshot of the state after the command's events must ride on the reply whose events "
    "take the sequence number across a multiple of 5 (snapshot every 5 events), and on no other"
)
_FAILURE = (
    "a failed command must reply with a Failure in the client action carrying the command id "
    "and the failure message, and with no events, snapshot or side effects"
)


async def _entity(ctx: ModelContext, name: str) -> EsEntity:
    entity = EsEntity(ctx, EsModel(ctx), fresh_id(name))
    await entity.init()
    return entity


@case("eventsourced.initial-empty-state", "model", ES)
async def initial_empty_state(ctx: ModelContext) -> None:
    """A new entity (Init without snapshot) starts from the empty state."""
    e = await _entity(ctx, "es-initial")
    await e.expect(await e.send(), e.reply(""), hint=_NO_EVENTS)


@case("eventsourced.single-event", "model", ES)
async def single_event(ctx: ModelContext) -> None:
    """One emitted event rides on the reply and changes the state."""
    e = await _entity(ctx, "es-single")
    m = e.model
    await e.expect(await e.send(m.emit("A")), e.reply("A"), events=["A"])
    await e.expect(await e.send(), e.reply("A"), hint="the state must keep the applied event")


@case("eventsourced.multiple-events", "model", ES)
async def multiple_events(ctx: ModelContext) -> None:
    """Several events from one command ride on one reply, in order."""
    e = await _entity(ctx, "es-multiple")
    m = e.model
    await e.expect(
        await e.send(m.emit("A"), m.emit("B"), m.emit("C")), e.reply("ABC"), events=["A", "B", "C"]
    )
    await e.expect(await e.send(m.emit("D")), e.reply("ABCD"), events=["D"])


@case("eventsourced.snapshot-every-5", "model", ES)
async def snapshots(ctx: ModelContext) -> None:
    """A snapshot comes with the reply whose events cross each multiple of 5."""
    e = await _entity(ctx, "es-snapshot")
    m = e.model
    state = ""
    for value in "ABCD":
        state += value
        await e.expect(await e.send(m.emit(value)), e.reply(state), events=[value], hint=_SNAPSHOT)
    await e.expect(
        await e.send(m.emit("E")), e.reply("ABCDE"), events=["E"], snapshot="ABCDE", hint=_SNAPSHOT
    )
    await e.expect(
        await e.send(m.emit("F"), m.emit("G"), m.emit("H")),
        e.reply("ABCDEFGH"),
        events=["F", "G", "H"],
        hint=_SNAPSHOT,
    )
    # Sequence 8 -> 11 crosses 10: the snapshot holds the state after all three events.
    await e.expect(
        await e.send(m.emit("I"), m.emit("J"), m.emit("K")),
        e.reply("ABCDEFGHIJK"),
        events=["I", "J", "K"],
        snapshot="ABCDEFGHIJK",
        hint=_SNAPSHOT,
    )


@case("eventsourced.init-with-snapshot-and-events", "model", ES)
async def init_with_snapshot(ctx: ModelContext) -> None:
    """Init with a snapshot, then replayed events, rebuild the state; snapshots continue from it."""
    e = EsEntity(ctx, EsModel(ctx), fresh_id("es-recover"))
    m = e.model
    await e.init(snapshot_sequence=5, snapshot="ABCDE")
    await e.replay(6, "F")
    await e.replay(7, "G")
    await e.expect(
        await e.send(), e.reply("ABCDEFG"), hint="the state is the snapshot plus replayed events"
    )
    await e.expect(await e.send(m.emit("H"), m.emit("I")), e.reply("ABCDEFGHI"), events=["H", "I"])
    await e.expect(
        await e.send(m.emit("J")),
        e.reply("ABCDEFGHIJ"),
        events=["J"],
        snapshot="ABCDEFGHIJ",
        hint="the sequence number continues from the replayed events (7 + 3 = 10): " + _SNAPSHOT,
    )


@case("eventsourced.init-with-events", "model", ES)
async def init_with_events(ctx: ModelContext) -> None:
    """Events replayed without a snapshot rebuild the state from empty."""
    e = EsEntity(ctx, EsModel(ctx), fresh_id("es-replay"))
    await e.init()
    for sequence, value in enumerate("XYZ", start=1):
        await e.replay(sequence, value)
    await e.expect(await e.send(), e.reply("XYZ"), hint="replayed events must be applied")


@case("eventsourced.rehydration-after-passivation", "model", ES)
async def rehydration(ctx: ModelContext) -> None:
    """After passivation (stream closed), a new stream replaying the journal restores the state."""
    model = EsModel(ctx)
    entity_id = fresh_id("es-passivate")
    first = EsEntity(ctx, model, entity_id)
    await first.init()
    await first.expect(await first.send(model.emit("A")), first.reply("A"), events=["A"])
    await first.expect(
        await first.send(model.emit("B"), model.emit("C")), first.reply("ABC"), events=["B", "C"]
    )
    await first.close()
    second = EsEntity(ctx, model, entity_id)
    await second.init()
    for sequence, value in enumerate("ABC", start=1):
        await second.replay(sequence, value)
    await second.expect(await second.send(model.emit("D")), second.reply("ABCD"), events=["D"])


@case("eventsourced.forward", "model", ES)
async def forward(ctx: ModelContext) -> None:
    """A forward is the client action; nothing else rides on the reply."""
    e = await _entity(ctx, "es-forward")
    m = e.model
    await e.expect(await e.send(m.forward("target")), m.two_forward("target"))


@case("eventsourced.forward-with-events", "model", ES)
async def forward_with_events(ctx: ModelContext) -> None:
    """A forward with events: the events are kept and applied."""
    e = await _entity(ctx, "es-forward-events")
    m = e.model
    await e.expect(
        await e.send(m.emit("A"), m.forward("target")), m.two_forward("target"), events=["A"]
    )
    await e.expect(await e.send(), e.reply("A"), hint="the forwarded command's events count")


@case("eventsourced.side-effect-synchronous", "model", ES)
async def side_effect_sync(ctx: ModelContext) -> None:
    """A synchronous side effect rides on the reply with synchronous=true."""
    e = await _entity(ctx, "es-effect-sync")
    m = e.model
    await e.expect(
        await e.send(m.effect("other", True)),
        e.reply(""),
        side_effects=[m.two_side_effect("other", True)],
    )


@case("eventsourced.side-effect-asynchronous", "model", ES)
async def side_effect_async(ctx: ModelContext) -> None:
    """An asynchronous side effect rides on the reply with synchronous=false."""
    e = await _entity(ctx, "es-effect-async")
    m = e.model
    await e.expect(
        await e.send(m.effect("other", False)),
        e.reply(""),
        side_effects=[m.two_side_effect("other", False)],
    )


@case("eventsourced.side-effects-several-with-events-and-snapshot", "model", ES)
async def side_effects_many(ctx: ModelContext) -> None:
    """Several side effects keep their order, alongside events and a snapshot."""
    e = await _entity(ctx, "es-effects")
    m = e.model
    await e.expect(
        await e.send(
            m.emit("A"),
            m.effect("one", True),
            m.emit("B"),
            m.effect("two", False),
            m.emit("C"),
            m.emit("D"),
            m.emit("E"),
            m.effect("three", True),
        ),
        e.reply("ABCDE"),
        events=list("ABCDE"),
        snapshot="ABCDE",
        hint=_SNAPSHOT + "; side effects ride on the reply in the order they were requested",
        side_effects=[
            m.two_side_effect("one", True),
            m.two_side_effect("two", False),
            m.two_side_effect("three", True),
        ],
    )


@case("eventsourced.forward-with-side-effects", "model", ES)
async def forward_with_side_effects(ctx: ModelContext) -> None:
    """A forward and side effects together."""
    e = await _entity(ctx, "es-forward-effects")
    m = e.model
    await e.expect(
        await e.send(m.effect("one", False), m.forward("target")),
        m.two_forward("target"),
        side_effects=[m.two_side_effect("one", False)],
    )


@case("eventsourced.failure", "model", ES)
async def failure(ctx: ModelContext) -> None:
    """A failed command replies with the failure inside the client action."""
    e = await _entity(ctx, "es-failure")
    m = e.model
    cid = await e.send(m.fail("expected failure"))
    await e.expect(cid, c.failure(cid, "expected failure"), hint=_FAILURE)


@case("eventsourced.failure-discards-events", "model", ES)
async def failure_discards_events(ctx: ModelContext) -> None:
    """Events emitted before a failure are not sent, not applied; the stream stays usable."""
    e = await _entity(ctx, "es-failure-events")
    m = e.model
    await e.expect(await e.send(m.emit("A")), e.reply("A"), events=["A"])
    cid = await e.send(m.emit("B"), m.emit("C"), m.fail("rolled back"))
    await e.expect(cid, c.failure(cid, "rolled back"), hint=_FAILURE)
    await e.expect(
        await e.send(m.emit("D")),
        e.reply("AD"),
        events=["D"],
        hint="events of a failed command must not be applied to the state",
    )


@case("eventsourced.failure-discards-side-effects", "model", ES)
async def failure_discards_side_effects(ctx: ModelContext) -> None:
    """Side effects requested before a failure are not sent; the stream stays usable."""
    e = await _entity(ctx, "es-failure-effects")
    m = e.model
    cid = await e.send(m.effect("one", True), m.emit("A"), m.fail("no effects"))
    await e.expect(cid, c.failure(cid, "no effects"), hint=_FAILURE)
    await e.expect(
        await e.send(m.effect("two", False)),
        e.reply(""),
        side_effects=[m.two_side_effect("two", False)],
    )


@case("eventsourced.failure-does-not-count-for-snapshots", "model", ES)
async def failure_and_snapshot(ctx: ModelContext) -> None:
    """Events of a failed command do not advance the sequence number towards a snapshot."""
    e = await _entity(ctx, "es-failure-snapshot")
    m = e.model
    await e.expect(await e.send(*map(m.emit, "ABCD")), e.reply("ABCD"), events=list("ABCD"))
    cid = await e.send(m.emit("X"), m.fail("not counted"))
    await e.expect(cid, c.failure(cid, "not counted"), hint=_FAILURE)
    await e.expect(
        await e.send(m.emit("E")), e.reply("ABCDE"), events=["E"], snapshot="ABCDE", hint=_SNAPSHOT
    )
