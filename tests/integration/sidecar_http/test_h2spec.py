"""h2spec, the HTTP/2 conformance suite, against the public port's gRPC front.

Every case passes (strict ones too) except those listed in `EXCEPTIONS`, each for the
reason docs/http.md (*gRPC*, h2spec) gives. The port answers gRPC on `-P` (a unary
method of the fake dispatcher) and forwards everything else to a grpc.aio server.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from larder_sidecar.http import PublicServer, start_public_server

from tests.unit.sidecar.grpc_h2.conftest import UNARY, FakeDispatcher, say_method, value
from tests.unit.sidecar.http.fakes import FakeInvoker

from .conftest import EchoServer

EXCEPTIONS = {
    # The port serves HTTP/1.1 as well: bytes that are not the HTTP/2 preface are an
    # HTTP/1.1 request to it, answered 400 before the connection closes, where an
    # HTTP/2-only server would just close (RFC 9113 §3.4).
    ("http2/3.5", "Sends invalid connection preface"),
}


@pytest.fixture
async def front(echo_server: EchoServer) -> AsyncIterator[tuple[PublicServer, FakeDispatcher]]:
    dispatcher = FakeDispatcher()
    server = await start_public_server(
        "127.0.0.1", 0, echo_server.target, FakeInvoker(), [],
        unary_grpc=dispatcher, grpc_methods={UNARY: say_method()},
    )
    yield server, dispatcher
    await server.close(grace=1.0)


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


async def test_h2spec(
    front: tuple[PublicServer, FakeDispatcher], h2spec_binary: Path, tmp_path: Path
) -> None:
    public, dispatcher = front
    report = tmp_path / "h2spec.xml"
    process = await asyncio.create_subprocess_exec(
        str(h2spec_binary), "--strict", "-h", "127.0.0.1", "-p", str(public.port),
        "-P", UNARY, "-o", "5", "-j", str(report),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 300)
    # h2spec writes a failing case's message as it got it, bytes our port sent included
    # (the expected exception's 400 answer to a bad preface, cut anywhere), and does not
    # escape control characters, which XML 1.0 forbids: drop them before parsing.
    text = _XML_INVALID.sub("", report.read_bytes().decode("utf-8", "replace"))
    cases = ET.fromstring(text).iter("testcase")
    results = {
        (case.get("package", ""), case.get("classname", "")):
            "failed" if case.find("failure") is not None or case.find("error") is not None
            else "skipped" if case.find("skipped") is not None else "passed"
        for case in cases
    }
    assert len(results) > 140, output.decode()[-3000:]
    failed = {case for case, result in results.items() if result != "passed"}
    assert failed == EXCEPTIONS, output.decode()[-6000:]
    # The port went through all that and still serves, connections all closed.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{public.port}") as channel:
        assert await channel.unary_unary(UNARY, None, None)(value(b"after"), timeout=5) == value(
            b"after"
        )
    assert value(b"after") in [payload for payload, _ in dispatcher.calls]
