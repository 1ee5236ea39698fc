"""A Python load client for the sidecar benchmark, run as its own process.

Two targets for the same command (`larder.bench.Counter/Increase`, one event):

- `direct`: the baseline. Each worker holds one `EventSourcedEntities/Handle` stream to
  the user function (its own entity), sends `Init`, then `Command` → waits for the
  `Reply`, as the sidecar itself would, with no journal;
- `sidecar`: each worker makes unary gRPC calls to the sidecar's public port for its
  own entity.

Closed loop (`--rate 0`: every worker sends its next command when the last one is
answered) or open loop at a fixed rate (commands spread over the workers). Prints one
JSON object: count, errors, seconds, this process's CPU seconds over the measured window
(`cpu_s`), rps, latency percentiles in ms.

    python bench/sidecar_client.py direct|sidecar <port> <protos dir> \
        [--workers 32] [--seconds 10] [--rate 0] [--prefix run1]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import uvloop
from akkaserverless.component.entity import entity_pb2
from akkaserverless.component.eventsourcedentity import (
    event_sourced_entity_pb2 as es_pb2,
)
from akkaserverless.component.eventsourcedentity import (
    event_sourced_entity_pb2_grpc as es_grpc,
)

SERVICE = "larder.bench.Counter"
TYPE_URL = "type.googleapis.com/larder.bench.IncreaseValue"

Call = Callable[[], Awaitable[None]]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


async def direct_worker(channel: grpc.aio.Channel, pb: Any, entity_id: str) -> Call:
    stub = es_grpc.EventSourcedEntitiesStub(channel)
    call = stub.Handle()
    await call.write(
        es_pb2.EventSourcedStreamIn(
            init=es_pb2.EventSourcedInit(service_name=SERVICE, entity_id=entity_id)
        )
    )
    payload = pb.IncreaseValue(id=entity_id, value=1).SerializeToString()
    command_id = 0

    async def one() -> None:
        nonlocal command_id
        command_id += 1
        await call.write(
            es_pb2.EventSourcedStreamIn(
                command=entity_pb2.Command(
                    entity_id=entity_id,
                    id=command_id,
                    name="Increase",
                    payload={"type_url": TYPE_URL, "value": payload},
                )
            )
        )
        out = await call.read()
        if out is grpc.aio.EOF or out.reply.command_id != command_id:  # type: ignore[attr-defined]
            raise RuntimeError(f"unexpected answer on the entity stream: {out}")

    return one


async def sidecar_worker(channel: grpc.aio.Channel, pb: Any, entity_id: str) -> Call:
    method = channel.unary_unary(
        f"/{SERVICE}/Increase", request_serializer=None, response_deserializer=None
    )
    payload = pb.IncreaseValue(id=entity_id, value=1).SerializeToString()

    async def one() -> None:
        await method(payload, timeout=30)

    return one


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, args.protos)
    pb: Any = importlib.import_module("larder.bench.counter_pb2")  # compiled at run time

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{args.port}")
    make = direct_worker if args.target == "direct" else sidecar_worker
    calls = [await make(channel, pb, f"{args.prefix}-{k}") for k in range(args.workers)]
    for call in calls:  # warm up: activate every entity before measuring
        await call()
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    cpu_started = time.process_time()  # every thread of this process, grpc's included
    deadline = started + args.seconds

    async def worker(k: int, call: Call) -> None:
        nonlocal errors
        sent = 0
        while True:
            if args.rate > 0:
                # Command number sent*workers + k of the global schedule.
                due = started + (sent * args.workers + k) / args.rate
                sent += 1
                if due >= deadline:
                    return
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
            elif loop.time() >= deadline:
                return
            t0 = time.perf_counter()
            try:
                await call()
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker(k, c) for k, c in enumerate(calls)))
    elapsed = loop.time() - started
    cpu = time.process_time() - cpu_started
    await channel.close(None)
    latencies.sort()
    return {
        "target": args.target,
        "count": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "cpu_s": round(cpu, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p90_ms": round(percentile(latencies, 0.90) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target", choices=("direct", "sidecar"))
    parser.add_argument("port", type=int)
    parser.add_argument("protos")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--prefix", default="client")
    args = parser.parse_args()
    print(json.dumps(uvloop.run(run(args))))


if __name__ == "__main__":
    main()
