"""`larder dev` end to end: real processes, real sidecar, HTTP, signals, restarts."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.devcli.dev_process import REPO, LarderDev, eventually, http, port_options

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
    # The view's query: its routes, its gRPC method and the README's curl for its route.
    view = "com.example.shoppingcart.view.CartsByProduct/GetCarts"
    heading = first.lines.index(
        "[larder] view queries, answered by the sidecar from the views' rows (which follow "
        "the entities' writes within moments):")
    assert first.lines[heading + 1:heading + 5] == [
        f"    {view}: SELECT * AS carts FROM product_carts WHERE product_id = :product_id",
        f"      HTTP: GET /product-carts/{{product_id}}, POST /{view}",
        f"      gRPC: {view} (unary)",
        f"    curl localhost:{port}/product-carts/akka-mug",
    ]
    assert any(line.startswith("[function] ") for line in first.lines)
    assert any(line.startswith("[sidecar] ") for line in first.lines)
    assert (tmp_path / "data" / "shopping-cart" / "journal.db").is_file()

    base = f"http://127.0.0.1:{port}"
    assert http("POST", f"{base}/cart/bob/items/add",
                {"product_id": "sock", "name": "Sock", "quantity": 2}) == (200, {})
    assert http("GET", f"{base}/carts/bob") == (
        200, {"items": [{"productId": "sock", "name": "Sock", "quantity": 2}]})
    socks = (200, {"carts": [{"productId": "sock", "userId": "bob", "name": "Sock"}]})
    assert eventually(lambda: http("GET", f"{base}/product-carts/sock"), socks) == socks
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
    # The view's rows are kept too (journal-views.db, next to the journal).
    assert http("GET", f"{base}/product-carts/sock") == socks
    assert second.stop(signal.SIGTERM) == 0
    assert second.processes() == []


def test_a_view_without_a_readme_gets_an_example_that_works_as_printed(
    tmp_path: Path, runs: list[LarderDev]
) -> None:
    port, options = port_options()
    run = LarderDev([*options, "--journal", "memory", "--name", "cart",
                     "--", sys.executable, "-m", "shoppingcart"],
                    cwd=CART, env={"PYTHONPATH": "src"})
    runs.append(run)
    run.wait_for_line("Ctrl-C stops both processes")
    example = f"    curl localhost:{port}/product-carts/example-1"
    assert example in run.lines
    # The generic examples leave the view's methods out: its update methods are not
    # served to clients, its query has the line above.
    assert not [line for line in run.lines if "CartsByProduct/On" in line]
    assert [line for line in run.lines
            if line.startswith("    curl") and "CartsByProduct" in line] == []
    assert http("GET", f"http://127.0.0.1:{port}/product-carts/example-1") == (
        200, {"carts": []})
    assert http("POST", f"http://127.0.0.1:{port}/cart/example-1/items/add",
                {"product_id": "example-1", "name": "Example", "quantity": 1}) == (200, {})
    found = (200, {"carts": [{"productId": "example-1", "userId": "example-1",
                              "name": "Example"}]})
    assert eventually(lambda: http("GET", f"http://127.0.0.1:{port}/product-carts/example-1"),
                      found) == found
    assert run.stop() == 0
    assert run.processes() == []


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
    # The entity key is filled in: a request without it would be refused.
    example = (f"    curl -X POST -H 'Content-Type: application/json' "
               f"localhost:{port}/com.example.TurkeyService/StartCooking "
               """-d '{"turkey_id": "example-1"}'""")
    assert example in run.lines
    assert "[larder] journal: in memory (state is lost when you stop)" in run.lines
    # The printed example works as printed (its body, to the printed route).
    body = json.loads(example.rsplit("-d ", 1)[1].strip("'"))
    assert http("POST", f"http://127.0.0.1:{port}/com.example.TurkeyService/StartCooking",
                body) == (200, {})
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


def stop_within(run: LarderDev, seconds: float) -> int:
    """SIGINT, and larder dev has exited within `seconds` (whatever its children do)."""
    started = time.monotonic()
    try:
        code = run.stop(signal.SIGINT, timeout=seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"larder dev still running {seconds}s after SIGINT:\n"
                             f"{run.output[-3000:]}") from None
    assert time.monotonic() - started < seconds
    return code


def test_a_huge_entity_id_does_not_take_larder_dev_down(
    tmp_path: Path, runs: list[LarderDev]
) -> None:
    # Issue 19: the sidecar logs the id; a 200,000-character log line used to kill the
    # log relay, nobody drained the pipe, and the sidecar froze writing to it.
    port, options = port_options()
    run = LarderDev([*options, "--journal", "memory", "--grace", "3", str(CART)],
                    cwd=tmp_path)
    runs.append(run)
    run.wait_for_line("Ctrl-C stops both processes")
    base = f"http://127.0.0.1:{port}"
    with contextlib.suppress(OSError):
        # Whatever the sidecar answers (it may refuse ids that long), it must answer.
        http("GET", f"{base}/carts/{'x' * 200_000}", timeout=20)
    # The sidecar keeps answering once its log lines about that id have gone through.
    for attempt in range(3):
        assert http("GET", f"{base}/carts/bob", timeout=10) == (200, {"items": []}), attempt
    assert http("POST", f"{base}/cart/bob/items/add",
                {"product_id": "sock", "name": "Sock", "quantity": 2}, timeout=10) == (200, {})
    assert stop_within(run, 30) == 0
    assert run.processes() == []


def test_a_line_of_megabytes_is_truncated_and_the_relay_goes_on(
    tmp_path: Path, runs: list[LarderDev]
) -> None:
    port, options = port_options()
    long_line = ("import sys; sys.stdout.write('y' * 4_000_000 + '\\n'); "
                 "print('after the long line', flush=True)")
    run = LarderDev([*options, "--journal", "memory", "--grace", "3", "--name", "turkey",
                     "--", "sh", "-c",
                     f'"$0" -c "{long_line}" && exec "$0" -m turkey', sys.executable],
                    cwd=TURKEY, env={"PYTHONPATH": "src"})
    runs.append(run)
    run.wait_for_line("[function] after the long line", timeout=60)
    truncated = run.wait_for_line("[function] yyyy")
    assert truncated.endswith(" bytes of this line dropped by larder dev]"), truncated[-200:]
    assert len(truncated) < 100_000
    run.wait_for_line("Ctrl-C stops both processes")
    assert http("POST", f"http://127.0.0.1:{port}/com.example.TurkeyService/StartCooking",
                {"turkey_id": "t1"}, timeout=10) == (200, {})
    assert stop_within(run, 30) == 0
    assert run.processes() == []
