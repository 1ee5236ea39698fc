"""The ports the sidecar listens on, and the one error a bind failure becomes."""

from __future__ import annotations

import errno
import socket


class PortUnavailable(Exception):
    """A port the sidecar must listen on cannot be bound; the message names the setting.

    Not retried: another process holds the port, or the host is not an address of this
    machine. Fix the setting (or stop the other process) and start again.
    """

    def __init__(self, setting: str, host: str, port: int, reason: str) -> None:
        super().__init__(
            f"cannot listen on {host}:{port} ({setting}={port}): {reason}; "
            f"stop the process using it or set {setting} to a free port"
        )
        self.setting = setting
        self.port = port

    @classmethod
    def from_os_error(cls, setting: str, host: str, port: int, e: OSError) -> PortUnavailable:
        if e.errno == errno.EADDRINUSE:
            reason = "the port is already in use"
        elif e.errno == errno.EADDRNOTAVAIL:
            reason = f"{host} is not an address of this machine"
        elif e.errno == errno.EACCES:
            reason = "permission denied (ports below 1024 need privileges)"
        else:
            reason = e.strerror or str(e)
        return cls(setting, host, port, reason)


def check_free(setting: str, host: str, port: int) -> None:
    """Raise PortUnavailable if `host:port` cannot be bound now.

    For servers (grpc's) whose own bind error does not say why; binding as they do
    (SO_REUSEADDR) so a port in TIME_WAIT does not count as taken.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortUnavailable.from_os_error(setting, host, port, e) from e
