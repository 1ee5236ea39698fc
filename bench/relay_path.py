"""The HTTP relay's path on the forwarding sidecar in one process, against the HTTP
front's own dispatch: CPU per command.

The real HTTP front dispatcher (`larder_sidecar.http.dispatch.Dispatcher`) with its
relay (`http/relay.py`), the real `ShardedRouter`, `PeerOwner` and `PeerClients`, and one
`PeerConnection` whose socket is `forward_path.py`'s fake peer (each FORWARD frame
answered in the next loop pass with a fixed `ForwardReply.http`). The reference is the
same dispatcher without a relay, transcoding each request and its reply around an
invoker that answers at once: what the HTTP front alone does per command after parsing
HTTP. Neither includes HTTP parsing or a socket, so the difference is what each path
runs in Python. Commands go 8 at a time over 32 entities another member owns.

    .venv/bin/python bench/relay_path.py [--commands 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def _measure(commands: int) -> dict[str, float]:
    """CPU µs per command: the relay, then the front alone."""
    from forward_path import _Peer  # noqa: PLC0415
    from larder_sidecar.cluster import frames, wire  # noqa: PLC0415
    from larder_sidecar.cluster.membership import Member, MemberId, Membership  # noqa: PLC0415
    from larder_sidecar.cluster.metrics import ClusterMetrics  # noqa: PLC0415
    from larder_sidecar.cluster.peers import PeerClients, PeerConnection, _Link  # noqa: PLC0415
    from larder_sidecar.cluster.sharded import ShardedRouter  # noqa: PLC0415
    from larder_sidecar.http.dispatch import Dispatcher, HttpRequest  # noqa: PLC0415
    from larder_sidecar.http.relay import HttpRelay  # noqa: PLC0415
    from larder_sidecar.http.routes import build_route_table  # noqa: PLC0415
    from larder_sidecar.journal.memory import MemoryJournal  # noqa: PLC0415
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from tests.unit.sidecar.entities.fakes import emit_one, es_method, make_host  # noqa: PLC0415
    from tests.unit.sidecar.http.fakes import FakeInvoker  # noqa: PLC0415

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
    answer = wire.http_answer(200, "application/json", [], b'{"id":"e1","payload":"YWJj"}')
    connection = PeerConnection(address, 1 << 22, ping_every=100.0, silent_after=1000.0)
    peer = _Peer(loop, wire.ForwardReply(http=answer).SerializeToString())
    peer.connection = connection
    connection.connection_made(peer)  # type: ignore[arg-type]
    connection.data_received(frames.preface(1 << 22))
    link = _Link(address)
    link.connection = connection
    clients._links[address] = link  # the connection is made by hand
    table = build_route_table([method.model])
    relaying = Dispatcher(table, FakeInvoker())
    relaying.relay = HttpRelay(router, {method.model.path: method})
    alone = Dispatcher(table, FakeInvoker())
    headers = [("host", "s1"), ("content-type", "application/json"), ("content-length", "30")]

    async def one(front: Any, entity_id: str) -> None:
        body = b'{"id":"' + entity_id.encode() + b'","payload":"YWJj"}'
        response = await front.handle(HttpRequest("POST", method.model.path, None, headers, body))
        assert response.status == 200, response

    out = {}
    for name, front in (("relay", relaying), ("front alone", alone)):
        for entity_id in ids:  # warm up
            await one(front, entity_id)
        started = time.process_time()
        for k in range(commands // 8):
            await asyncio.gather(*(one(front, ids[(k * 8 + j) % len(ids)]) for j in range(8)))
        out[name] = (time.process_time() - started) / (commands // 8 * 8) * 1e6
    await router.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for round_ in range(args.repeat):
        result = asyncio.run(_measure(args.commands))
        print(
            f"round {round_ + 1}: "
            + ", ".join(f"{name} {us:.1f} µs/command" for name, us in result.items()),
            flush=True,
        )


if __name__ == "__main__":
    main()
