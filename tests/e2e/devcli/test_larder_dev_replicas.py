"""`larder dev --replicas 3` end to end: three sidecars and three functions on one
SQLite journal, reads and writes through any replica, one owner per entity, Ctrl-C and
a restart."""

from __future__ import annotations

import functools
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.devcli.dev_process import (
    REPO,
    LarderDev,
    eventually,
    http,
    port_block_options,
)

CART = REPO / "samples" / "shopping-cart"
REPLICAS = 3


@pytest.fixture
def runs() -> Iterator[list[LarderDev]]:
    started: list[LarderDev] = []
    yield started
    for run in started:
        run.kill()


def forwarded(admin_port: int, direction: str) -> float:
    """The sidecar's count of commands forwarded `in` or `out` that succeeded."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.search(rf'^larder_forwarded_commands_{direction}_total{{result="ok"}} (\S+)$',
                      text, re.MULTILINE)
    return 0.0 if found is None else float(found.group(1))


def owners(admins: list[int], entity_id: str) -> list[dict[str, object]]:
    answers = []
    for admin in admins:
        status, body = http("GET", f"http://127.0.0.1:{admin}/cluster/owner"
                                   f"?type=shopping-cart&id={entity_id}")
        assert status == 200, body
        answers.append(body)
    return answers


def settled_owners(admins: list[int], entity_id: str) -> list[dict[str, object]]:
    """`owners`, asked again while the owner is still acquiring the shard: right after
    start-up a replica may wait for the others to release shards they held for a moment
    (the hand-off); the replicas are ready before every hand-off is done."""
    deadline = time.monotonic() + 15
    while True:
        answers = owners(admins, entity_id)
        if "acquiring" not in [a["state_here"] for a in answers]:
            return answers
        assert time.monotonic() < deadline, f"still acquiring after 15 s: {answers}"
        time.sleep(0.1)


def add(base: str, cart: str, product: str, quantity: int) -> None:
    assert http("POST", f"{base}/cart/{cart}/items/add",
                {"product_id": product, "name": product.title(), "quantity": quantity},
                timeout=30) == (200, {})


def items(base: str, cart: str) -> object:
    status, body = http("GET", f"{base}/carts/{cart}", timeout=30)
    assert status == 200, body
    return body


def carts_holding(base: str, product: str) -> tuple[int, object]:
    return http("GET", f"{base}/product-carts/{product}", timeout=30)


def stop_within(run: LarderDev, seconds: float) -> int:
    started = time.monotonic()
    try:
        code = run.stop(signal.SIGINT, timeout=seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"larder dev still running {seconds}s after SIGINT:\n"
                             f"{run.output[-3000:]}") from None
    assert time.monotonic() - started < seconds
    return code


def test_three_replicas_share_the_journal_forward_to_one_owner_and_stop_on_sigint(
    tmp_path: Path, runs: list[LarderDev]
) -> None:
    port, options = port_block_options(REPLICAS)
    publics = [port + i for i in range(REPLICAS)]
    admins = [port + 2 * REPLICAS + i for i in range(REPLICAS)]
    bases = [f"http://127.0.0.1:{p}" for p in publics]
    args = [*options, "--replicas", str(REPLICAS), "--grace", "5",
            "--data-dir", str(tmp_path / "data"), str(CART)]
    first = LarderDev(args, cwd=tmp_path)
    runs.append(first)
    first.wait_for_line("Ctrl-C stops all 6 processes", timeout=150)
    assert (f"[larder] shopping-cart is ready at http://localhost:{publics[0]} to "
            f"http://localhost:{publics[-1]} (3 replicas; gRPC and HTTP/JSON on each)"
            in first.lines)
    for i in range(REPLICAS):
        assert any(line.startswith(f"[larder] replica-{i}: http://localhost:{publics[i]}, "
                                   "owns ") for line in first.lines), first.output
        assert any(line.startswith(f"[sidecar-{i}] ") for line in first.lines)
        assert any(line.startswith(f"[function-{i}] ") for line in first.lines)
    owner_hint = (f"    curl 'localhost:{admins[0]}/cluster/owner?type=shopping-cart"
                  "&id=example-1'")
    assert owner_hint in first.lines

    # Every replica names the same single owner for each cart.
    by_owner: dict[str, str] = {}
    for n in range(60):
        cart = f"cart-{n}"
        answers = settled_owners(admins, cart)
        assert {a["owner"] for a in answers} == {answers[0]["owner"]}, answers
        assert {a["fingerprint"] for a in answers} == {answers[0]["fingerprint"]}
        assert [a["answered_by"] for a in answers] == [f"replica-{i}" for i in range(3)]
        # Exactly one replica serves it: the owner, which says so itself.
        assert [a["state_here"] for a in answers].count("owned") == 1, answers
        owner = str(answers[0]["owner"])
        assert answers[int(owner.split("-")[1])]["state_here"] == "owned"
        by_owner.setdefault(owner, cart)
    assert sorted(by_owner) == ["replica-0", "replica-1", "replica-2"]
    shares = [http("GET", f"http://127.0.0.1:{a}/cluster")[1] for a in admins]
    for share in shares:
        assert sum(m["shards"] for m in share["members"]) == share["shard_count"]
        assert share["members"] == shares[0]["members"]

    # Written through replica 0, read back through replicas 1 and 2, for carts owned by
    # each replica: forwarded commands see every write acknowledged before them.
    forwarded_before = sum(forwarded(a, "in") for a in admins)
    for owner, cart in sorted(by_owner.items()):
        add(bases[0], cart, "sock", 2)
        add(bases[1], cart, "hat", 1)
        expected = {"items": [{"productId": "sock", "name": "Sock", "quantity": 2},
                              {"productId": "hat", "name": "Hat", "quantity": 1}]}
        assert items(bases[1], cart) == expected, owner
        assert items(bases[2], cart) == expected, owner
    # 4 commands per cart; a replica forwards those for carts it does not own (8 of 12).
    assert sum(forwarded(a, "in") for a in admins) - forwarded_before == 8
    assert sum(forwarded(a, "out") for a in admins) >= 8

    # Concurrent writes through every replica: three sidecar processes take turns on the
    # SQLite file's write lock, and no command fails or is lost.
    busy = [f"busy-{n}" for n in range(24)]
    with ThreadPoolExecutor(max_workers=9) as pool:
        done = list(pool.map(lambda job: add(bases[job[0]], job[1], "sock", 1),
                             [(i, cart) for cart in busy for i in range(REPLICAS)]))
    assert len(done) == REPLICAS * len(busy)
    for n, cart in enumerate(busy):
        assert items(bases[n % REPLICAS], cart) == {
            "items": [{"productId": "sock", "name": "Sock", "quantity": 3}]}, cart

    # The sample's view: each owner's sidecar applies its carts' events to the one view
    # store the replicas share (next to the journal), so every replica answers the query
    # with every cart, whichever replica owns it.
    hats: tuple[int, object] = (200, {"carts": [{"productId": "hat", "userId": cart, "name": "Hat"}
                            for cart in sorted(by_owner.values())]})
    for base in bases:
        assert eventually(functools.partial(carts_holding, base, "hat"), hats) == hats, base

    pids = first.processes()
    assert len(pids) >= 7  # larder dev, 3 functions, 3 sidecars
    assert stop_within(first, 40) == 0
    assert first.processes() == []
    assert "[larder] stopping sidecar-0, sidecar-1, sidecar-2" in first.lines
    assert "[larder] stopping function-0, function-1, function-2" in first.lines
    for trouble in ("Traceback", "fencing", "database is locked", "ABORTED"):
        assert not any(trouble in line for line in first.lines), trouble

    # The state is in the journal: a new run reads it through any replica.
    second = LarderDev(args, cwd=tmp_path)
    runs.append(second)
    second.wait_for_line("Ctrl-C stops all 6 processes", timeout=150)
    assert items(bases[2], busy[0]) == {
        "items": [{"productId": "sock", "name": "Sock", "quantity": 3}]}
    for cart in by_owner.values():
        for base in bases:
            assert items(base, cart) == {
                "items": [{"productId": "sock", "name": "Sock", "quantity": 2},
                          {"productId": "hat", "name": "Hat", "quantity": 1}]}
    assert stop_within(second, 40) == 0
    assert second.processes() == []


def test_a_later_replicas_port_in_use_is_explained_and_nothing_starts(
    tmp_path: Path, runs: list[LarderDev]
) -> None:
    port, options = port_block_options(REPLICAS)
    taken_port = port + 2 * REPLICAS + 1  # replica-1's admin port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", taken_port))
        taken.listen()
        run = LarderDev([*options, "--replicas", str(REPLICAS), str(CART)], cwd=tmp_path)
        runs.append(run)
        assert run.wait() == 2
    assert run.errors == [
        f"larder dev: port {taken_port} (replica-1's --admin-port) is already in use (another "
        "`larder dev` or server?); stop it or pass a free port with --admin-port"]
    assert run.processes() == []
