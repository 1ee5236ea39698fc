"""The turkey entity through the SDK's test kit: commands, events, state, failures."""

from __future__ import annotations

import turkey.turkey_api_pb2 as api
import turkey.turkey_domain_pb2 as domain
from larder_sdk.testkit import EventSourcedTestKit
from turkey.entity import entity


def change(amount: float) -> api.TemperatureChangeCommand:
    return api.TemperatureChangeCommand(turkey_id="t1", temperature_change=amount)


def test_a_new_turkey_is_raw_cold_and_out_of_the_oven() -> None:
    kit = EventSourcedTestKit(entity, "t1")
    result = kit.run("GetCurrentTurkey", api.GetTurkeyCommand(turkey_id="t1"))
    assert result.reply == api.TurkeyState(in_oven=False, done=api.RAW,
                                           external_temperature=0, internal_temperature=0)


def test_cooking_moves_the_turkey_in_and_out_of_the_oven() -> None:
    kit = EventSourcedTestKit(entity, "t1")
    assert kit.run("StartCooking", api.CookingCommand(turkey_id="t1")).events == (domain.InOven(),)
    assert kit.state.in_oven
    assert kit.run("EndCooking", api.CookingCommand(turkey_id="t1")).events == (
        domain.OutOfOven(),)
    assert not kit.state.in_oven


def test_starting_twice_fails_and_emits_nothing() -> None:
    kit = EventSourcedTestKit(entity, "t1")
    kit.run("StartCooking", api.CookingCommand(turkey_id="t1"))
    result = kit.run("StartCooking", api.CookingCommand(turkey_id="t1"))
    assert result.failure == "Turkey t1 is already in the oven"
    assert result.events == ()


def test_ending_a_turkey_that_is_not_in_the_oven_fails() -> None:
    kit = EventSourcedTestKit(entity, "t1")
    result = kit.run("EndCooking", api.CookingCommand(turkey_id="t1"))
    assert result.failure == "Turkey t1 is not in the oven"


def test_oven_temperature_changes_are_events_with_the_new_temperature() -> None:
    kit = EventSourcedTestKit(entity, "t1")
    result = kit.run("IncreaseOvenTemperature", change(350))
    assert result.events == (domain.TemperatureChange(type=domain.TemperatureChange.EXTERNAL,
                                                      new_temperature=350),)
    kit.run("DecreaseOvenTemperature", change(25))
    assert kit.state.external_temperature == 325
    assert kit.state.internal_temperature == 0


def test_the_internal_temperature_decides_doneness() -> None:
    kit = EventSourcedTestKit(entity, "t1")
    kit.run("IncreaseTurkeyTemperature", change(150))
    assert kit.state.done == api.STILL_SALMONELLA
    result = kit.run("IncreaseTurkeyTemperature", change(15))
    assert result.events == (domain.TemperatureChange(type=domain.TemperatureChange.INTERNAL,
                                                      new_temperature=165),)
    assert kit.state.done == api.PERFECT
    kit.run("DecreaseTurkeyTemperature", change(20))
    assert kit.state.done == api.STILL_SALMONELLA
    assert kit.state.internal_temperature == 145


def test_a_change_that_is_not_positive_fails() -> None:
    kit = EventSourcedTestKit(entity, "t1")
    for amount in (0.0, -5.0):
        result = kit.run("IncreaseOvenTemperature", change(amount))
        assert result.failure is not None
        assert result.failure.startswith("Temperature change must be more than 0 °F")
        assert result.events == ()


def test_replaying_the_journal_rebuilds_the_same_turkey() -> None:
    live = EventSourcedTestKit(entity, "t1")
    live.run("StartCooking", api.CookingCommand(turkey_id="t1"))
    live.run("IncreaseOvenTemperature", change(325))
    live.run("IncreaseTurkeyTemperature", change(160))
    replayed = EventSourcedTestKit(entity, "t1", events=live.all_events)
    assert replayed.state == live.state == api.TurkeyState(
        in_oven=True, done=api.ALMOST_THERE, external_temperature=325, internal_temperature=160)
