"""The forwarding sender's own path in one process: CPU per forwarded command.

The real `ShardedRouter`, `PeerOwner` and `PeerClients` with one `PeerConnection` whose
socket is replaced by a fake transport: each FORWARD frame it is given is answered with
a fixed FORWARD_REPLY in the next loop pass, as a peer on loopback would (without the
kernel, the owner and the HTTP front: what is left is what forwarding itself costs the
sender in Python). Commands go 8 at a time over 32 entities that another member owns.

    .venv/bin/python bench/forward_path.py [--forwards 20000] [--repeat 3] [--compare REV]

`--compare REV` runs the same measurement on REV's sidecar sources (a temporary git
worktree first on PYTHONPATH) in alternation with the working tree's, so the two meet
the same load on the shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class _Peer:
    """Stands in for the socket: answers each FORWARD frame in the next loop pass."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reply: bytes) -> None:
        from larder_sidecar.cluster import frames  # noqa: PLC0415 - after PYTHONPATH

        self._frames = frames
        self._loop = loop
        self._reply = reply
        self._decoder = frames.Decoder(1 << 22)
        self.connection: Any = None
        self.writes = 0

    def write(self, data: bytes) -> None:
        if data.startswith(self._frames.MAGIC):
            return  # the client's preface
        self.writes += 1
        kind = self._frames.Kind
        out = [
            self._frames.frame(kind.FORWARD_REPLY, call, self._reply)
            for k, call, _ in self._decoder.feed(data)
            if k == kind.FORWARD
        ]
        if out:
            self._loop.call_soon(self.connection.data_received, b"".join(out))

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def _measure(forwards: int) -> float:
    """CPU µs per forward through the sender's path."""
    from larder_internal.v1 import peer_pb2  # noqa: PLC0415
    from larder_sidecar.cluster import frames, wire  # noqa: PLC0415
    from larder_sidecar.cluster.membership import Member, MemberId, Membership  # noqa: PLC0415
    from larder_sidecar.cluster.metrics import ClusterMetrics  # noqa: PLC0415
    from larder_sidecar.cluster.peers import PeerClients, PeerConnection, _Link  # noqa: PLC0415
    from larder_sidecar.cluster.sharded import ShardedRouter  # noqa: PLC0415
    from larder_sidecar.journal.memory import MemoryJournal  # noqa: PLC0415
    from larder_sidecar.protocol import component_pb2  # noqa: PLC0415
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from tests.unit.sidecar.entities.fakes import emit_one, es_method, make_host  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    host, _ = make_host(MemoryJournal(), emit_one)
    method = es_method()
    address = "127.0.0.1:9000"
    members = Membership(
        (Member(MemberId("s0"), address), Member(MemberId("s1"), "127.0.0.1:9001")), 1
    )
    clients = PeerClients(1 << 20)
    router = ShardedRouter(
        host,
        MemberId("s1"),
        16384,
        source=None,  # type: ignore[arg-type]  # the map is applied by hand
        transport=clients,
        metrics=ClusterMetrics(CollectorRegistry()),
    )
    router.apply(members)
    shard_map = router.map
    assert shard_map is not None
    entity_type = method.component.entity_type
    ids = [
        i for i in (f"e{n}" for n in range(3000)) if shard_map.owner_of(entity_type, i) == "s0"
    ][:32]
    reply = wire.ForwardReply(
        outcome=peer_pb2.Outcome(
            reply=component_pb2.Reply(payload={"type_url": "t", "value": b"\x08\x01"})
        )
    ).SerializeToString()
    connection = PeerConnection(address, 1 << 22, ping_every=100.0, silent_after=1000.0)
    peer = _Peer(loop, reply)
    peer.connection = connection
    connection.connection_made(peer)  # type: ignore[arg-type]
    connection.data_received(frames.preface(1 << 22))
    link = _Link(address)
    link.connection = connection
    clients._links[address] = link  # the connection is made by hand

    async def one(entity_id: str) -> None:
        owner = await router.owner(entity_type, entity_id)
        await owner.submit(method, entity_id, b"\x0a\x03abc", [])

    for entity_id in ids:  # warm up
        await one(entity_id)
    started = time.process_time()
    for k in range(forwards // 8):
        await asyncio.gather(*(one(ids[(k * 8 + j) % len(ids)]) for j in range(8)))
    spent = time.process_time() - started
    await router.close()
    return spent / (forwards // 8 * 8) * 1e6


def _run(src: Path | None, forwards: int) -> float:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--forwards", str(forwards)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: float = json.loads(out.strip().splitlines()[-1])["us_per_forward"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--forwards", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", help="also run REV's sidecar sources, alternating")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop  # noqa: PLC0415

        us = uvloop.run(_measure(args.forwards))
        print(json.dumps({"us_per_forward": round(us, 1)}))
        return
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"load average {load}; {args.forwards} forwards per run", flush=True)
    with tempfile.TemporaryDirectory(prefix="larder-forward-path-") as tmp:
        baseline = None
        if args.compare:
            tree = Path(tmp) / "rev"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.compare],
                check=True,
                capture_output=True,
            )
            baseline = tree / "sidecar" / "src"
        try:
            for n in range(args.repeat):
                arms: list[tuple[str, Path | None]] = [("working tree", None)]
                if baseline is not None:
                    arms.append((args.compare, baseline))
                if n % 2:
                    arms.reverse()
                for label, src in arms:
                    print(f"  round {n + 1} {label:>14}: {_run(src, args.forwards):6.1f} µs CPU "
                          "per forward", flush=True)
        finally:
            if baseline is not None:
                remove = ["git", "-C", str(ROOT), "worktree", "remove", "--force"]
                subprocess.run([*remove, str(Path(tmp) / "rev")], check=False)
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"load average {load}")


if __name__ == "__main__":
    main()
