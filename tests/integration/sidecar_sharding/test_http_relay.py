"""HTTP/JSON commands sent to a sidecar that does not own their entity are relayed to the
owner as HTTP (`http/relay.py`): a client cannot tell the answer from the owner's own —
success, a user-function failure, a reused idempotency key, a bad JSON body, an unknown
field, byte for byte — and the command is one trace across both sidecars (three
sidecars on loopback, Cassandra; spans exported over OTLP to a receiver in this test)."""

from __future__ import annotations

import asyncio
import json

from tests.infra.otlp import OtlpReceiver, tree

from ..sidecar_cassandra.function import COUNTER_TYPE, REGISTER_TYPE
from .conftest import Launch, ShardedCluster, internal_port, metrics

SET = "/larder_sctest.Register/Set"
GET = "/larder_sctest.Register/Get"
OUT_OK = 'larder_forwarded_commands_out_total{result="ok"}'
IN_OK = 'larder_forwarded_commands_in_total{result="ok"}'
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


async def post(port: int, path: str, body: bytes, *headers: tuple[str, str]) -> bytes:
    """The whole response to one HTTP/1.1 POST, as the client reads it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return response


def _body(register: str, **fields: object) -> bytes:
    return json.dumps({"registerId": register, **fields}).encode()


async def test_a_relayed_answer_is_the_owners_own_byte_for_byte(sharded: ShardedCluster) -> None:
    s0, s1 = sharded.pods["s0"], sharded.pods["s1"]
    # Pairs of registers s1 owns in the same state: one asked through s0 (relayed), the
    # other through s1 itself.
    relayed, local = (sharded.entity_of("s1", REGISTER_TYPE, p) for p in ("via-s0-", "at-s1-"))
    before = (await metrics(s0)).get(OUT_OK, 0), (await metrics(s1)).get(IN_OK, 0)
    cases: list[tuple[str, dict[str, object], tuple[tuple[str, str], ...]]] = [
        (SET, {"text": "hello"}, ()),  # a reply
        (GET, {}, ()),
        (SET, {"text": "fail"}, ()),  # the user function's failure
        (SET, {"text": "once"}, (("Idempotency-Key", "k-1"),)),
        (SET, {"text": "once"}, (("Idempotency-Key", "k-1"),)),  # the stored answer again
        (SET, {"text": "other"}, (("Idempotency-Key", "k-1"),)),  # a reused key: 422
        (SET, {"text": "x", "colour": "red"}, ()),  # an unknown field
        (SET, {"text": 5}, ()),  # a bad value
    ]
    statuses = []
    for path, fields, headers in cases:
        through_s0 = await post(s0.port, path, _body(relayed, **fields), *headers)
        at_s1 = await post(s1.port, path, _body(local, **fields), *headers)
        assert through_s0 == at_s1, (path, fields)
        statuses.append(int(through_s0.split()[1]))
    assert statuses == [200, 200, 500, 200, 200, 422, 400, 400]
    # Every one of them was relayed (a transcoded forward would have refused the last two
    # at s0 without asking s1).
    after = (await metrics(s0)).get(OUT_OK, 0), (await metrics(s1)).get(IN_OK, 0)
    assert (after[0] - before[0], after[1] - before[1]) == (len(cases), len(cases))
    # A body whose key s0 cannot read (not JSON) is answered by s0 itself, as before.
    broken = b'{"registerId": "' + relayed.encode() + b'", '
    assert await post(s0.port, SET, broken) == await post(s1.port, SET, broken)
    assert (await metrics(s0)).get(OUT_OK, 0) == after[0]
    # What the relayed commands did is the owner's state: read through a third sidecar.
    s2 = sharded.pods["s2"]
    assert (await s2.get_text(relayed)).text == "once"


async def test_a_relayed_command_is_one_trace_across_both_sidecars(launch: Launch) -> None:
    async with OtlpReceiver() as receiver:
        internal = {name: internal_port() for name in ("s0", "s1")}
        members = tuple((name, f"127.0.0.1:{port}") for name, port in internal.items())
        listed = ",".join(f"{name}={address}" for name, address in members)
        pods = {}
        for name, port in internal.items():
            pods[name] = await launch(
                name,
                port,
                {
                    "LARDER_CLUSTER_MEMBERS": listed,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_BSP_SCHEDULE_DELAY": "50",
                    "OTEL_SERVICE_NAME": name,
                },
            )
        entity = ShardedCluster(pods, members).entity_of("s1", COUNTER_TYPE, "traced-")
        body = json.dumps({"counterId": entity, "tag": "t", "amount": 1}).encode()
        response = await post(
            pods["s0"].port,
            "/larder_sctest.Counter/Add",
            body,
            ("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
        )
        assert response.split()[1] == b"200", response
        # Each side's outermost span ends last, after its children (which may come in
        # earlier export batches): waiting for both means the whole tree is in.
        spans = await receiver.wait_for(
            lambda s: any(x.name.startswith("forwarded ") and x.service == "s1" for x in s)
            and any(x.kind == "SERVER" and x.service == "s0" for x in s)
        )
    server = next(s for s in spans if s.kind == "SERVER" and s.service == "s0")
    assert (server.trace_id, server.parent_id) == (CLIENT_TRACE, CLIENT_SPAN)
    names = tree(spans, server)
    assert names == [
        "/larder_sctest.Counter/Add",
        "  forward to s1",
        "    forwarded POST /larder_sctest.Counter/Add",
        "      /larder_sctest.Counter/Add",
        "        handle larder_sctest.Counter/Add",
        "          queue",
        "          activate",
        "          user function",
        "          journal write",
    ], "\n".join(names)
    hop = next(s for s in spans if s.name == "forward to s1")
    assert (hop.kind, hop.service, hop.attributes["larder.peer"]) == ("CLIENT", "s0", "s1")
    commands = [s for s in spans if s.service in ("s0", "s1") and not s.name.startswith("hand")]
    assert all(s.trace_id == CLIENT_TRACE for s in commands)
