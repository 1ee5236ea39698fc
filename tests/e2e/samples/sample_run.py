"""One `larder dev` run of a sample, shared by a test module."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from tests.e2e.devcli.dev_process import REPO, LarderDev, port_options

SAMPLES = REPO / "samples"
M = TypeVar("M", bound=Message)


@contextmanager
def running_sample(name: str, data_dir: Path, journal: str = "memory") -> Iterator[int]:
    """Run samples/<name> behind a sidecar (by default on the in-memory journal); yields
    the public port."""
    port, options = port_options()
    run = LarderDev([*options, "--journal", journal, "--data-dir", str(data_dir),
                     str(SAMPLES / name)], cwd=data_dir)
    try:
        run.wait_for_line("is ready at")
        yield port
        assert run.stop() == 0
        assert run.processes() == []
    finally:
        run.kill()


def curl(command: str) -> str:
    """Run a README's curl command line as a user would, in a shell; its output."""
    assert shutil.which("curl"), "the README examples need curl on PATH"
    done = subprocess.run(["sh", "-c", f"{command} -sS"], capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout


def unary(channel: grpc.Channel, path: str, request: Message, reply_type: type[M]) -> M:
    """One gRPC call, as a generated stub would make it."""
    call = channel.unary_unary(path, request_serializer=_serialize,
                               response_deserializer=reply_type.FromString)
    reply: M = call(request, timeout=30)
    return reply


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
