"""`python -m tests.infra.cluster agent ...`: run the node agent until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from tests.infra.cluster.agent import AgentSettings, NodeAgent
from tests.infra.cluster.netns import NetworkConfig

READY_LINE = "node agent ready"


async def _serve(settings: AgentSettings) -> None:
    agent = NodeAgent(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await agent.start()
        print(READY_LINE, flush=True)
        await stop.wait()
    finally:
        await agent.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.infra.cluster")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument(
        "--forward",
        type=int,
        action="append",
        default=[],
        help="host loopback port pods reach at their own 127.0.0.1",
    )
    parser.add_argument("--node", action="append", default=[], help="node name (repeatable)")
    parser.add_argument("--kubelet-port", type=int, action="append", default=[])
    defaults = NetworkConfig()
    parser.add_argument("--bridge", default=defaults.bridge)
    parser.add_argument("--subnet", default=defaults.subnet)
    parser.add_argument(
        "--prefix", default=defaults.prefix, help="names of namespaces, veths, containers"
    )
    args = parser.parse_args(argv)
    nodes = tuple(args.node) or ("larder-node-0",)
    if len(args.kubelet_port) != len(nodes):
        parser.error("give one --kubelet-port per --node")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = AgentSettings(
        kubeconfig=args.kubeconfig,
        workdir=args.workdir,
        api_port=args.api_port,
        forwarded_ports=tuple(sorted({args.api_port, *args.forward})),
        node_names=nodes,
        kubelet_ports=tuple(args.kubelet_port),
        network=NetworkConfig(args.bridge, args.subnet, args.prefix),
    )
    asyncio.run(_serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
