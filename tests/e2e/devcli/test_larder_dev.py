"""`larder dev` end to end: real processes, real sidecar, HTTP, signals, restarts."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.devcli.larder_dev import REPO, LarderDev, http, port_options

CART = REPO / "samples" / "shopping-cart"
TURKEY = REPO / "samples" / "turkey"


@pytest.fixture
def runs() -> Iterator[list[LarderDev]]:
    started: list[LarderDev] = []
    yield started
    for run in started:
        run.kill()


def test_the_cart_sample_runs_stops_on_sigint_and_keeps_its_state(
    tmp_path: Path, runs: list[LarderDev]
) -> None:
    port, options = port_options()
    args = [*options, "--data-dir", str(tmp_path / "data"), str(CART)]
    first = LarderDev(args, cwd=tmp_path)
    runs.append(first)
    ready = first.wait_for_line("is ready at")
    assert ready == (f"[larder] shopping-cart is ready at http://localhost:{port} "
                     "(gRPC and HTTP/JSON)")
    first.wait_for_line("Ctrl-C stops both processes")
    # The README's examples, pointed at this run's port.
    assert (f"    curl localhost:{port}/carts/alice" in first.lines)
    assert any(line.startswith("[function] ") for line in first.lines)
    assert any(line.startswith("[sidecar] ") for line in first.lines)
    assert (tmp_path / "data" / "shopping-cart" / "journal.db").is_file()

    base = f"http://127.0.0.1:{port}"
    assert http("POST", f"{base}/cart/bob/items/add",
                {"product_id": "sock", "name": "Sock", "quantity": 2}) == (200, {})
    assert http("GET", f"{base}/carts/bob") == (
        200, {"items": [{"productId": "sock", "name": "Sock", "quantity": 2}]})
    pids = first.processes()
    assert len(pids) >= 3  # larder dev, the function, the sidecar

    assert first.stop(signal.SIGINT) == 0
    assert first.processes() == []
    assert "[larder] stopping the sidecar" in first.lines

    second = LarderDev(args, cwd=tmp_path)
    runs.append(second)
    second.wait_for_line("is ready at")
    assert http("GET", f"{base}/carts/bob") == (
        200, {"items": [{"productId": "sock", "name": "Sock", "quantity": 2}]})
    assert second.stop(signal.SIGTERM) == 0
    assert second.processes() == []


def test_a_raw_start_command_gets_the_generic_routes(
    tmp_path: Path, runs: list[LarderDev]
) -> None:
    port, options = port_options()
    run = LarderDev([*options, "--journal", "memory", "--name", "turkey",
                     "--", sys.executable, "-m", "turkey"],
                    cwd=TURKEY, env={"PYTHONPATH": "src"})
    runs.append(run)
    run.wait_for_line("is ready at")
    run.wait_for_line("Ctrl-C stops both processes")
    assert (f"    curl -X POST -H 'Content-Type: application/json' "
            f"localhost:{port}/com.example.TurkeyService/StartCooking -d '{{}}'") in run.lines
    assert "[larder] journal: in memory (state is lost when you stop)" in run.lines
    # The tutorial's first command.
    assert http("POST", f"http://127.0.0.1:{port}/com.example.TurkeyService/StartCooking",
                {"turkey_id": "t1"}) == (200, {})
    assert run.stop() == 0
    assert run.processes() == []


def one_line_error(run: LarderDev) -> str:
    assert len(run.errors) == 1, run.errors
    return run.errors[0]


def test_a_directory_without_a_function_is_explained(tmp_path: Path,
                                                     runs: list[LarderDev]) -> None:
    _, options = port_options()
    run = LarderDev([*options, str(tmp_path)], cwd=tmp_path)
    runs.append(run)
    assert run.wait() == 2
    assert one_line_error(run) == (
        f"larder dev: no user function in {tmp_path.resolve()}: expected a larder.toml with "
        "[function] command, a Procfile or a package.json start script "
        "(see docs/local-development.md), or pass the start command after `--`")
    assert run.processes() == []


def test_a_port_in_use_is_explained(tmp_path: Path, runs: list[LarderDev]) -> None:
    port, options = port_options()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        run = LarderDev([*options, str(CART)], cwd=tmp_path)
        runs.append(run)
        assert run.wait() == 2
    assert one_line_error(run) == (
        f"larder dev: port {port} is already in use (another `larder dev` or server?); "
        "stop it or pass a free port with --port")
    assert run.processes() == []


def test_a_function_that_exits_at_start_stops_everything(tmp_path: Path,
                                                         runs: list[LarderDev]) -> None:
    _, options = port_options()
    run = LarderDev([*options, "--journal", "memory", "--",
                     sys.executable, "-c", "import sys; print('no config'); sys.exit(3)"],
                    cwd=tmp_path)
    runs.append(run)
    assert run.wait() == 1
    assert one_line_error(run) == (
        "larder dev: the user function exited with code 3 before it was ready; see the "
        "[function] lines above and fix its start command or its code")
    assert "[function] no config" in run.lines
    assert run.processes() == []
