"""A port that cannot be bound becomes one error naming the setting."""

from __future__ import annotations

import socket

import pytest
from larder_sidecar.admin import AdminServer
from larder_sidecar.metrics import Metrics
from larder_sidecar.ports import PortUnavailable, check_free


async def _never_ready() -> tuple[bool, str]:
    return False, "test"


def test_check_free_names_the_setting_of_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortUnavailable) as caught:
            check_free("LARDER_INTERNAL_PORT", "127.0.0.1", port)
    assert str(caught.value) == (
        f"cannot listen on 127.0.0.1:{port} (LARDER_INTERNAL_PORT={port}): the port is "
        "already in use; stop the process using it or set LARDER_INTERNAL_PORT to a free port"
    )
    check_free("LARDER_INTERNAL_PORT", "127.0.0.1", port)  # free again
    check_free("LARDER_INTERNAL_PORT", "127.0.0.1", 0)  # any free port: nothing to check


def test_an_address_not_of_this_machine_is_said() -> None:
    with pytest.raises(PortUnavailable, match=r"192\.0\.2\.1 is not an address of this machine"):
        check_free("LARDER_INTERNAL_PORT", "192.0.2.1", 9604)


async def test_admin_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortUnavailable, match=f"LARDER_ADMIN_PORT={port}"):
            await AdminServer(Metrics(), _never_ready).start("127.0.0.1", port)
