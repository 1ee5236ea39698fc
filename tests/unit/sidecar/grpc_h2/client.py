"""An independent HTTP/2 client for the gRPC front's tests: python-hyper's `h2` on an
asyncio socket, sending exactly the frames a test asks for and collecting every event."""

from __future__ import annotations

import asyncio
import gzip
import struct
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def message(payload: bytes, *, compressed: bool = False, length: int | None = None) -> bytes:
    """One gRPC message: flag, length prefix (which `length` may make lie), payload."""
    if compressed:
        payload = gzip.compress(payload)
    size = len(payload) if length is None else length
    return struct.pack(">BI", 1 if compressed else 0, size) + payload


def request_headers(path: str, **extra: str) -> list[tuple[str, str]]:
    headers = [
        (":method", "POST"), (":scheme", "http"), (":path", path),
        (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers"),
    ]
    return headers + [(k.replace("_", "-"), v) for k, v in extra.items()]


@dataclass
class Response:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    ended: bool = False
    reset: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status(self) -> str:
        """grpc-status, from the trailers or a trailers-only response."""
        return self.trailers.get("grpc-status") or self.headers.get("grpc-status", "")

    @property
    def grpc_message(self) -> str:
        return self.trailers.get("grpc-message") or self.headers.get("grpc-message", "")

    def messages(self) -> list[bytes]:
        out, data = [], bytes(self.data)
        while data:
            flag, size = struct.unpack(">BI", data[:5])
            assert flag == 0
            out.append(data[5 : 5 + size])
            data = data[5 + size :]
        return out


class Client:
    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.responses: dict[int, Response] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.pings: list[bytes] = []
        self.closed = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, *, window: int = 16 << 20) -> Client:
        client = cls()
        client._reader, client._writer = await asyncio.open_connection("127.0.0.1", port)
        client.conn.initiate_connection()
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        client.conn.increment_flow_control_window(window)
        client.flush()
        client._task = asyncio.get_running_loop().create_task(client._read())
        return client

    def flush(self) -> None:
        assert self._writer is not None
        data = self.conn.data_to_send()
        if data:
            self._writer.write(data)

    def raw(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)

    def start(self, headers: list[tuple[str, str]], body: bytes | None = None,
              *, end: bool = True) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        self.responses[stream_id] = Response()
        self.conn.send_headers(stream_id, headers, end_stream=body is None and end)
        if body is not None:
            self.send(stream_id, body, end=end)
        self.flush()
        return stream_id

    def send(self, stream_id: int, body: bytes, *, end: bool = True) -> None:
        """Send body within the flow-control windows, waiting for none (tests keep
        bodies within the server's windows or use `send_all`)."""
        size = self.conn.max_outbound_frame_size
        for i in range(0, len(body), size):
            self.conn.send_data(stream_id, body[i : i + size])
        if end:
            self.conn.end_stream(stream_id)
        self.flush()

    async def send_all(self, stream_id: int, body: bytes) -> None:
        """Send body as the server's windows allow, then end the stream."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id),
                         self.conn.max_outbound_frame_size)
            if window <= 0:
                await asyncio.sleep(0.005)
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self.flush()
        self.conn.end_stream(stream_id)
        self.flush()

    async def call(self, headers: list[tuple[str, str]], body: bytes | None,
                   seconds: float = 10.0) -> Response:
        stream_id = self.start(headers, body)
        return await self.wait(stream_id, seconds)

    async def wait(self, stream_id: int, seconds: float = 10.0) -> Response:
        response = self.responses[stream_id]
        await asyncio.wait_for(response.done.wait(), seconds)
        return response

    def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id)
        self.flush()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()

    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(1 << 16)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    self._event(event)
                self.flush()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.closed.set()
            for response in self.responses.values():
                response.done.set()

    def _event(self, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.responses[event.stream_id].headers = _decoded(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            self.responses[event.stream_id].trailers = _decoded(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.responses[event.stream_id].data += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.responses[event.stream_id].ended = True
            self.responses[event.stream_id].done.set()
        elif isinstance(event, h2.events.StreamReset):
            response = self.responses.get(event.stream_id)
            if response is not None:
                response.reset = event.error_code
                response.done.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.PingAckReceived):
            self.pings.append(event.ping_data)


def _decoded(headers: Any) -> dict[str, str]:
    # header_encoding="utf-8" makes h2 hand over str pairs; its type hints say bytes too.
    return {str(name): str(value) for name, value in headers}
