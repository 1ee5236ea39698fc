"""Who may read the admin port's guarded routes (they show user data), and the token's
settings."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest
from larder_sidecar.admin import AdminServer, _is_loopback
from larder_sidecar.metrics import Metrics
from larder_sidecar.settings import SettingsError, load_settings

TOKEN = "0123456789abcdef0123"


async def _ready() -> tuple[bool, str]:
    return True, "ok"


async def _secret(query: Mapping[str, str]) -> tuple[int, object]:
    return 200, {"secret": query.get("id")}


async def _get(port: int, path: str, *headers: str) -> tuple[int, str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n")
        .encode()
    )
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode(), body


@pytest.mark.parametrize(
    ("peer", "loopback"),
    [
        (("127.0.0.1", 5000), True),
        (("127.8.9.10", 5000), True),
        (("::1", 5000, 0, 0), True),
        (("::ffff:127.0.0.1", 5000, 0, 0), True),
        (("10.0.0.7", 5000), False),
        (("::ffff:10.0.0.7", 5000, 0, 0), False),
        (("fe80::1%eth0", 5000, 0, 2), False),
        ("/run/admin.sock", False),
        (None, False),
    ],
)
def test_only_loopback_peers_count_as_this_host(peer: object, loopback: bool) -> None:
    assert _is_loopback(peer) is loopback


async def test_without_a_token_loopback_reads_and_a_remote_peer_is_refused() -> None:
    admin = AdminServer(Metrics(), _ready, guarded={"/inspect/x": _secret})
    await admin.start("127.0.0.1", 0)
    try:
        status, _, body = await _get(admin.port, "/inspect/x?id=a%20b&empty=")
        assert (status, body) == (200, b'{"secret": "a b"}\n')
    finally:
        await admin.close()
    # A pod's other clients reach the admin port from outside the pod's loopback.
    refusal = admin._refusal("", ("10.1.2.3", 40000))
    assert refusal is not None and refusal[0] == 403
    assert "kubectl port-forward" in refusal[1] and "LARDER_ADMIN_TOKEN" in refusal[1]
    assert admin._refusal("", ("127.0.0.1", 40000)) is None


async def test_with_a_token_every_request_must_carry_it_loopback_too() -> None:
    admin = AdminServer(Metrics(), _ready, guarded={"/inspect/x": _secret}, token=TOKEN)
    await admin.start("127.0.0.1", 0)
    try:
        status, head, body = await _get(admin.port, "/inspect/x")
        assert status == 401 and "WWW-Authenticate: Bearer" in head
        assert b"no token" in body
        status, _, body = await _get(admin.port, "/inspect/x", "Authorization: Bearer nope")
        assert status == 401 and b"a wrong token" in body
        status, _, _ = await _get(admin.port, "/inspect/x", f"Authorization: Basic {TOKEN}")
        assert status == 401
        lower = f"authorization: bearer {TOKEN}"  # names and schemes are case-insensitive
        status, _, body = await _get(admin.port, "/inspect/x?id=1", lower)
        assert (status, body) == (200, b'{"secret": "1"}\n')
        # The probes and metrics stay open: kubelet and Prometheus carry no token.
        assert (await _get(admin.port, "/healthz"))[0] == 200
        assert (await _get(admin.port, "/metrics"))[0] == 200
    finally:
        await admin.close()
    assert admin._refusal(f"Bearer {TOKEN}", ("10.1.2.3", 1)) is None


async def test_an_overlong_header_line_is_a_bad_request_not_a_crash() -> None:
    admin = AdminServer(Metrics(), _ready)
    await admin.start("127.0.0.1", 0)
    try:
        status, _, _ = await _get(admin.port, "/healthz", "X-Long: " + "a" * 70_000)
        assert status == 400
        assert (await _get(admin.port, "/healthz"))[0] == 200
    finally:
        await admin.close()


def test_the_token_comes_from_the_variable_or_a_file(tmp_path: Path) -> None:
    assert load_settings({}).admin_token is None
    assert load_settings({"LARDER_ADMIN_TOKEN": f" {TOKEN} "}).admin_token == TOKEN
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    assert load_settings({"LARDER_ADMIN_TOKEN_FILE": str(secret)}).admin_token == TOKEN
    assert TOKEN not in repr(load_settings({"LARDER_ADMIN_TOKEN": TOKEN}))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LARDER_ADMIN_TOKEN": "short"}, "at least 16 characters"),
        ({"LARDER_ADMIN_TOKEN": "has a space in the middle!!"}, "without spaces"),
        ({"LARDER_ADMIN_TOKEN": TOKEN, "LARDER_ADMIN_TOKEN_FILE": "/x"}, "not both"),
        ({"LARDER_ADMIN_TOKEN_FILE": "/nonexistent/token"}, "cannot be read"),
    ],
)
def test_a_weak_or_unreadable_token_is_a_start_up_error(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(env)


def test_an_empty_token_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match="at least 16"):
        load_settings({"LARDER_ADMIN_TOKEN_FILE": str(empty)})
