"""The user function's entity streams over our HTTP/2 client (`client.py`).

`StreamChannel` stands in for a grpc.aio channel where the generated stubs use one:
`stream_stream(path, serializer, deserializer)` gives a callable that opens a call, so
`EventSourcedEntitiesStub(StreamChannel(...)).Handle()` is one of our streams, and the
entities cannot tell the two apart. All streams share one connection; a new one is
made after the old one is lost or the user function sends GOAWAY (the old one keeps
serving its streams until they end). A stream connects on its first use, as a grpc.aio
call does; when the user function cannot be reached it fails at once with UNAVAILABLE
(connecting again on the next stream, as a grpc.aio channel without wait-for-ready).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc

from .client import ClientConnection
from .stream import EOF, ClientStream, rpc_error

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0


class _Opener:
    """What `stream_stream` returns: calling it opens a stream to one method."""

    __slots__ = ("_channel", "_deserialize", "_path", "_serialize")

    def __init__(
        self,
        channel: StreamChannel,
        path: str,
        serialize: Callable[[Any], bytes],
        deserialize: Callable[[bytes], Any],
    ) -> None:
        self._channel, self._path = channel, path
        self._serialize, self._deserialize = serialize, deserialize

    def __call__(self) -> ClientStream:
        return ClientStream(self._open, self._serialize, self._deserialize)

    def _open(self, stream: ClientStream) -> asyncio.Future[None] | None:
        return self._channel.open(stream, self._path)


class _UnaryCaller:
    """What `unary_unary` returns: calling it makes one call (one message each way)."""

    __slots__ = ("_opener",)

    def __init__(self, opener: _Opener) -> None:
        self._opener = opener

    async def __call__(self, request: Any, **_options: Any) -> Any:
        call = self._opener()
        try:
            await call.write(request, last=True)
            response = await call.read()
            after = await call.read() if response is not EOF else EOF
        except BaseException:
            # A caller that gave up (cancelled, e.g. its client went away) resets the
            # stream, so the user function learns it too.
            call.cancel()
            raise
        if response is EOF or after is not EOF:
            call.cancel()
            raise rpc_error(
                grpc.StatusCode.INTERNAL,
                "the user function answered a unary call with "
                + ("no response message" if response is EOF else "more than one message"),
            )
        return response


class StreamChannel:
    def __init__(self, host: str, port: int, max_message_bytes: int) -> None:
        self._host, self._port = host, port
        self._authority = f"{host}:{port}"
        self._max_message_bytes = max_message_bytes
        self._connection: ClientConnection | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._waiting: list[tuple[ClientStream, str]] = []
        self._retired: set[ClientConnection] = set()
        self._connect_task: asyncio.Task[None] | None = None
        self._closed = False

    def stream_stream(
        self,
        path: str,
        request_serializer: Callable[[Any], bytes],
        response_deserializer: Callable[[bytes], Any],
        **_options: Any,
    ) -> _Opener:
        """As `grpc.aio.Channel.stream_stream` (the generated stubs call it)."""
        return _Opener(self, path, request_serializer, response_deserializer)

    def unary_unary(
        self,
        path: str,
        request_serializer: Callable[[Any], bytes],
        response_deserializer: Callable[[bytes], Any],
        **_options: Any,
    ) -> _UnaryCaller:
        """As `grpc.aio.Channel.unary_unary`: an awaitable call per request."""
        return _UnaryCaller(_Opener(self, path, request_serializer, response_deserializer))

    def open(self, stream: ClientStream, path: str) -> asyncio.Future[None] | None:
        """Put `stream` on a connection now (None), or once one is made (the future)."""
        if self._closed:
            stream.fail(rpc_error(grpc.StatusCode.UNAVAILABLE, "the sidecar is stopping"))
            return None
        connection = self._connection
        if connection is not None and connection.usable():
            connection.open(stream, path)
            return None
        if connection is not None:
            self._retire(connection)
        self._waiting.append((stream, path))
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            self._connecting = loop.create_future()
            self._connect_task = loop.create_task(self._connect(), name="user function connect")
        return self._connecting

    async def _connect(self) -> None:
        """Make the connection the waiting streams go on, or fail them all."""
        loop = asyncio.get_running_loop()
        done = self._connecting
        assert done is not None
        try:
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: ClientConnection(self._authority, self._max_message_bytes),
                        self._host,
                        self._port,
                    ),
                    CONNECT_TIMEOUT_S,
                )
            except (OSError, TimeoutError) as e:
                why = str(e) or type(e).__name__
                error = rpc_error(
                    grpc.StatusCode.UNAVAILABLE,
                    f"cannot connect to the user function at {self._authority}: {why}",
                )
                for stream, _ in self._waiting:
                    stream.fail(error)
                return
            assert isinstance(protocol, ClientConnection)
            if self._closed:
                protocol.close()
                for stream, _ in self._waiting:
                    stream.fail(rpc_error(grpc.StatusCode.UNAVAILABLE, "the sidecar is stopping"))
                return
            self._connection = protocol
            for stream, path in self._waiting:
                # A stream cancelled while it waited is not opened.
                if not stream.done():
                    protocol.open(stream, path)
        finally:
            self._waiting = []
            self._connecting = None
            done.set_result(None)

    def _retire(self, connection: ClientConnection) -> None:
        """A connection that takes no new streams: closed once its streams end."""
        self._connection = None
        if not connection.lost.done():
            self._retired.add(connection)
            connection.lost.add_done_callback(lambda _: self._retired.discard(connection))

    async def close(self) -> None:
        """Close every connection; their streams fail with UNAVAILABLE."""
        self._closed = True
        if self._connect_task is not None and not self._connect_task.done():
            await self._connect_task  # bounded by CONNECT_TIMEOUT_S; fails its streams
        connections = [c for c in (self._connection, *self._retired) if c is not None]
        self._connection = None
        for connection in connections:
            connection.close()
        if connections:
            await asyncio.wait([c.lost for c in connections], timeout=1.0)


class ActionChannel:
    """The channel the dispatcher's action stub is built on: unary calls (`HandleUnary`,
    one per action command) on our client, the streamed ones on grpc.aio, whose stubs
    take a request iterator that our streams do not."""

    def __init__(self, streams: StreamChannel, channel: Any) -> None:
        self._streams, self._channel = streams, channel

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._streams.unary_unary(*args, **kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._channel.unary_stream(*args, **kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_unary(*args, **kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_stream(*args, **kwargs)
