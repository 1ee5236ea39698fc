"""The turkey sample through the real sidecar: the tutorial's curls, HTTP and gRPC."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import turkey.turkey_api_pb2 as api
from google.protobuf.empty_pb2 import Empty

from tests.e2e.devcli.dev_process import http
from tests.e2e.samples.sample_run import SAMPLES, curl, running_sample, unary

README = SAMPLES / "turkey" / "README.md"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with running_sample("turkey", tmp_path_factory.mktemp("turkey")) as public_port:
        yield public_port


def readme_block_after(marker: str) -> list[str]:
    text = README.read_text()
    block = text[text.index(marker):].split("```")[1]
    return [line for line in block.splitlines()[1:] if line.strip()]


def test_the_readme_curls_answer_what_the_readme_says(port: int) -> None:
    commands = readme_block_after("Then, on the generic routes")
    answers = readme_block_after("The answers, in order:")
    assert len(commands) == len(answers) == 4
    for command, answer in zip(commands, answers, strict=True):
        assert curl(command.replace("localhost:9000", f"localhost:{port}")) == answer


def test_a_new_turkey_is_raw(port: int) -> None:
    assert http("GET", f"http://127.0.0.1:{port}/turkeys/fresh") == (200, {
        "inOven": False, "done": "RAW", "externalTemperature": 0.0, "internalTemperature": 0.0})


def test_cooling_down_and_refusals(port: int) -> None:
    base = f"http://127.0.0.1:{port}/com.example.TurkeyService"
    assert http("POST", f"{base}/StartCooking", {"turkey_id": "t9"}) == (200, {})
    status, body = http("POST", f"{base}/StartCooking", {"turkey_id": "t9"})
    assert status >= 400
    assert body["message"] == "Turkey t9 is already in the oven"
    assert http("POST", f"{base}/IncreaseTurkeyTemperature",
                {"turkey_id": "t9", "temperature_change": 160}) == (200, {})
    assert http("POST", f"{base}/DecreaseTurkeyTemperature",
                {"turkey_id": "t9", "temperature_change": 10}) == (200, {})
    assert http("POST", f"{base}/EndCooking", {"turkey_id": "t9"}) == (200, {})
    assert http("POST", f"{base}/GetCurrentTurkey", {"turkey_id": "t9"}) == (200, {
        "inOven": False, "done": "STILL_SALMONELLA", "externalTemperature": 0.0,
        "internalTemperature": 150.0})


def test_grpc(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        service = "/com.example.TurkeyService"
        assert unary(channel, f"{service}/IncreaseOvenTemperature", api.TemperatureChangeCommand(
            turkey_id="g1", temperature_change=350), Empty) == Empty()
        assert unary(channel, f"{service}/GetCurrentTurkey", api.GetTurkeyCommand(
            turkey_id="g1"), api.TurkeyState) == api.TurkeyState(external_temperature=350,
                                                                  done=api.RAW)
        with pytest.raises(grpc.RpcError) as refused:
            unary(channel, f"{service}/EndCooking", api.CookingCommand(turkey_id="g1"), Empty)
    assert refused.value.details() == "Turkey g1 is not in the oven"
