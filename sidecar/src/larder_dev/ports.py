"""The ports `larder dev` gives its processes, and the check that they are free.

With `--replicas N` each port option names the first replica's port; replica i gets the
public port `--port` + i (so the public ports are P..P+N-1). The other kinds of port
count up the same way from their option, in the order function, admin, internal, and
skip a port an earlier kind already has: with the defaults, admin ports 9603-9605 and
internal ports 9606-9608 for three replicas (9604, `--internal-port`, is replica-1's
admin port). Two options with the same value are the user's clash and an error.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from larder_dev.function import DevInputError

MAX_PORT = 65535


@dataclass(frozen=True)
class ReplicaPorts:
    """One replica's ports."""

    public: int
    function: int
    admin: int
    internal: int

    def by_option(self) -> dict[str, int]:
        """Each port under the option it comes from, in allocation order."""
        return {
            "--port": self.public,
            "--function-port": self.function,
            "--admin-port": self.admin,
            "--internal-port": self.internal,
        }


def allocate_ports(first: ReplicaPorts, replicas: int) -> tuple[ReplicaPorts, ...]:
    """The ports of `replicas` replicas, the first with the options' values (module doc).

    Raises DevInputError for options with the same value, or too few ports above one."""
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    options = first.by_option()
    check_distinct(options)
    taken: set[int] = set()
    columns: dict[str, list[int]] = {}
    for option, start in options.items():
        column: list[int] = []
        port = start
        while len(column) < replicas:
            # The public ports come first, so they are always P..P+N-1.
            while port in taken:
                port += 1
            if port > MAX_PORT:
                raise DevInputError(
                    f"{option} {start} leaves too few ports above it for {replicas} replicas; "
                    f"pass a lower {option}"
                )
            column.append(port)
            taken.add(port)
            port += 1
        columns[option] = column
    return tuple(
        ReplicaPorts(
            public=columns["--port"][i],
            function=columns["--function-port"][i],
            admin=columns["--admin-port"][i],
            internal=columns["--internal-port"][i],
        )
        for i in range(replicas)
    )


def check_distinct(ports: Mapping[str, int]) -> None:
    """Raise DevInputError when two options name the same port."""
    seen: dict[int, str] = {}
    for option, port in ports.items():
        if port in seen:
            raise DevInputError(f"{option} and {seen[port]} are both {port}; give them "
                                "different ports")
        seen[port] = option


def check_ports_free(ports: Mapping[str, int], replica: str | None = None) -> None:
    """Raise DevInputError naming the option to change when a port is taken.

    `replica` names whose ports these are, when there are several replicas."""
    check_distinct(ports)
    for option, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # Servers set SO_REUSEADDR, so a port in TIME_WAIT is usable for them
            # too; only a live listener makes this bind fail.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
                whose = "" if replica is None else f" ({replica}'s {option})"
                raise DevInputError(
                    f"port {port}{whose} is already in use (another `larder dev` or server?); "
                    f"stop it or pass a free port with {option}"
                ) from e
