"""gRPC over HTTP/2 above the frames: length-prefixed messages, compression, deadlines,
and the trailers that carry a call's status (the gRPC HTTP/2 protocol spec,
PROTOCOL-HTTP2.md in grpc/grpc)."""

from __future__ import annotations

import base64
import gzip
import re
import struct
import zlib
from collections.abc import Sequence

import grpc

from .headers import OK_TRAILERS, RESPONSE_HEAD, literal

_PREFIX = struct.Struct(">BI")
SUPPORTED_ENCODINGS = "identity,gzip,deflate"
_TIMEOUT_UNITS = {
    ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0,
    ord("m"): 1e-3, ord("u"): 1e-6, ord("n"): 1e-9,
}
# Bytes a grpc-message keeps as they are; the rest are percent-encoded (the spec's
# "Percent-Encoded" rule: printable ASCII except '%').
_PLAIN = frozenset(range(0x20, 0x7F)) - {ord("%")}


class CallError(Exception):
    """A call ends with this status before (or instead of) reaching the dispatcher."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def prefixed(payload: bytes) -> bytes:
    """One uncompressed message with its 5-byte prefix."""
    return _PREFIX.pack(0, len(payload)) + payload


class MessageReader:
    """Cuts a request body into messages, as the DATA frames bring it.

    A message announced longer than `max_bytes` fails the call at once (its prefix is
    enough to know), so a client cannot make the front buffer past the limit.
    """

    __slots__ = ("_buffer", "_encoding", "_max_bytes", "messages")

    def __init__(self, max_bytes: int, encoding: str | None) -> None:
        self._buffer = bytearray()
        self._max_bytes = max_bytes
        self._encoding = encoding
        self.messages: list[bytes] = []

    def feed(self, data: bytes) -> None:
        """Raise CallError for a message over the limit or one that cannot be read."""
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 5:
            flag, length = _PREFIX.unpack_from(buffer)
            if length > self._max_bytes:
                raise CallError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the request message ({length} bytes) is larger than the limit of "
                    f"{self._max_bytes} bytes (LARDER_MAX_MESSAGE_BYTES)",
                )
            if len(buffer) < 5 + length:
                return
            payload = bytes(buffer[5 : 5 + length])
            del buffer[: 5 + length]
            if flag == 1:
                payload = self._decompress(payload)
            elif flag != 0:
                raise CallError(grpc.StatusCode.INTERNAL,
                                f"a message's compressed flag is {flag}, neither 0 nor 1")
            self.messages.append(payload)

    @property
    def partial(self) -> bool:
        """Bytes of an incomplete message are waiting (at the end of the body, a truncated
        message)."""
        return bool(self._buffer)

    def _decompress(self, payload: bytes) -> bytes:
        encoding = self._encoding
        if encoding in (None, "identity"):
            raise CallError(
                grpc.StatusCode.INTERNAL,
                "a message is flagged compressed but the call names no grpc-encoding",
            )
        try:
            if encoding == "gzip":
                # Bounded: never inflate past the limit (a small bomb would otherwise).
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                inflater = zlib.decompressobj()
            out = inflater.decompress(payload, self._max_bytes + 1)
        except (zlib.error, gzip.BadGzipFile) as e:
            raise CallError(grpc.StatusCode.INTERNAL,
                            f"a {encoding} message cannot be decompressed: {e}") from e
        if len(out) > self._max_bytes or inflater.unconsumed_tail:
            raise CallError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the decompressed request message is larger than the limit of "
                f"{self._max_bytes} bytes (LARDER_MAX_MESSAGE_BYTES)",
            )
        return out


def check_encoding(encoding: str | None) -> None:
    if encoding is not None and encoding not in ("identity", "gzip", "deflate"):
        raise CallError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"grpc-encoding {encoding!r} is not supported; use one of {SUPPORTED_ENCODINGS}",
        )


def parse_timeout(raw: bytes) -> float:
    """`grpc-timeout` (1-8 digits and a unit) in seconds."""
    if 2 <= len(raw) <= 9 and raw[:-1].isdigit() and raw[-1] in _TIMEOUT_UNITS:
        return int(raw[:-1]) * _TIMEOUT_UNITS[raw[-1]]
    raise CallError(grpc.StatusCode.INTERNAL,
                    f"grpc-timeout {raw!r} is not 1-8 digits followed by H, M, S, m, u or n")


def percent_encoded(message: str) -> bytes:
    raw = message.encode("utf-8")
    if all(b in _PLAIN for b in raw):
        return raw
    return b"".join(bytes([b]) if b in _PLAIN else b"%%%02X" % b for b in raw)


def metadata_block(metadata: Sequence[tuple[str, str | bytes]]) -> bytes:
    """Reply metadata as header fields. Names that are not valid lower-case tokens, the
    ones HTTP/2 or gRPC reserve, and values with CR, LF or NUL are left out, as the
    HTTP/1.1 front does; `-bin` values are sent as given (base64 text) or base64-encoded
    when they are bytes."""
    out = []
    for name, value in metadata:
        lowered = name.lower()
        if not _valid_name(lowered):
            continue
        if isinstance(value, bytes):
            if not lowered.endswith("-bin"):
                continue
            text = _b64(value)
        elif lowered.endswith("-bin") and not _BASE64.fullmatch(value):
            # A string entry under a -bin key: clients base64-decode such headers.
            text = _b64(value.encode())
        else:
            text = value
        if "\r" in text or "\n" in text or "\0" in text:
            continue
        out.append(literal(lowered, text.encode("latin-1", "replace")))
    return b"".join(out)


_RESERVED = frozenset({"content-type", "te", "connection", "keep-alive", "transfer-encoding",
                       "upgrade", "proxy-connection", "content-length", "user-agent"})
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")


def _valid_name(name: str) -> bool:
    return (
        bool(name)
        and name not in _RESERVED
        and not name.startswith(("grpc-", ":"))
        and all(b in _TOKEN for b in name.encode("latin-1", "replace"))
    )


def status_trailers(
    code: grpc.StatusCode,
    message: str,
    metadata: Sequence[tuple[str, str | bytes]] = (),
) -> bytes:
    """The trailers of a call that ended with `code` (fields after the status: `metadata`,
    which may carry `grpc-status-details-bin`)."""
    if code is grpc.StatusCode.OK and not message and not metadata:
        return OK_TRAILERS
    block = literal("grpc-status", str(code.value[0]))
    if message:
        block += literal("grpc-message", percent_encoded(message))
    for name, value in metadata:
        if name == "grpc-status-details-bin":
            text = value if isinstance(value, str) else _b64(value)
            block += literal(name, text)
    return block + metadata_block(metadata)


def trailers_only(
    code: grpc.StatusCode, message: str, metadata: Sequence[tuple[str, str | bytes]] = ()
) -> bytes:
    """A whole response in one header block: a call that failed before its first message."""
    return RESPONSE_HEAD + status_trailers(code, message, metadata)


def _b64(value: bytes) -> str:
    return base64.b64encode(value).rstrip(b"=").decode("ascii")
