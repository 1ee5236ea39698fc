"""TCP forwarders from inside a pod's network namespace to the host's loopback.

The host's test servers (API server, Cassandra) listen on the host's 127.0.0.1,
which a pod in its own namespace cannot reach. For each forwarded port the agent
binds a socket on the *pod's* 127.0.0.1 (the socket is created while this thread
is in the pod's namespace, then the thread switches back) and relays every
connection to the same port on the host's loopback. Pods therefore see the API
server at 127.0.0.1:<its port>, which its certificate names, and Cassandra at
127.0.0.1:<its port> - the addresses the host's own tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
from collections.abc import Awaitable, Callable, Iterator

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns failed: {os.strerror(errno)}")


@contextlib.contextmanager
def _in_namespace(name: str) -> Iterator[None]:
    """Switch only the calling thread into /var/run/netns/<name>, and back."""
    host = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(host)
    finally:
        os.close(target)
        os.close(host)


def listening_socket_in(namespace: str, port: int) -> socket.socket:
    with _in_namespace(namespace):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
        except BaseException:
            sock.close()
            raise
    sock.setblocking(False)
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.close()


class LoopbackForwarder:
    """Relays <pod netns>127.0.0.1:port -> <host>127.0.0.1:port for a set of ports."""

    def __init__(self, namespace: str, ports: tuple[int, ...]) -> None:
        self._namespace = namespace
        self._ports = ports
        self._servers: list[asyncio.Server] = []
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for port in self._ports:
            sock = listening_socket_in(self._namespace, port)
            self._servers.append(await asyncio.start_server(self._handle(port), sock=sock))

    def _handle(
        self, port: int
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._relays.add(task)
            try:
                try:
                    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    writer.close()
                    return
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                self._relays.discard(task)

        return handle

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
