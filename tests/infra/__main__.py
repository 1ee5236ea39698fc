"""Command line:
`python -m tests.infra provision [all|cassandra|kafka|kube|helm|grpcurl|h2spec|grpc-interop|
ghz|grpc-js|cluster ...]` and `python -m tests.infra start cassandra|kafka|kube` (foreground, Ctrl-C
or SIGTERM stops it)."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.infra import published_sdks, servers
from tests.infra.cluster import images as cluster_images
from tests.infra.errors import InfraError
from tests.infra.provision import GROUPS, provision


def _provision(names: list[str]) -> int:
    if "cluster" in names:
        # The local cluster's container images live in buildah's store, not in the cache.
        for built in cluster_images.provision_all():
            state = "cached" if built.cached else "built"
            print(
                f"provision cluster image {built.name}: {state} in {built.seconds:.1f}s",
                f"({built.reference})",
            )
        names = [n for n in names if n != "cluster"]
        if not names:
            return 0
    everything = not names or "all" in names
    if everything:
        names = list(GROUPS)
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        print(
            f"unknown component(s) {unknown}; choose from all, {', '.join(GROUPS)}", file=sys.stderr
        )
        return 2
    total = time.monotonic()
    for group in names:
        for component in GROUPS[group]:
            print(f"provision {component}: ...", flush=True)
            result = provision(component)
            state = "cached" if result.cached else "built"
            print(
                f"provision {component} {result.version}: {state} in {result.seconds:.1f}s",
                f"({result.path})",
            )
    if everything:
        _provision_published_sdks()
    print(f"provision: done in {time.monotonic() - total:.1f}s")
    return 0


def _provision_published_sdks() -> None:
    started = time.monotonic()
    published_sdks.provision()
    print(f"provision published SDKs: {time.monotonic() - started:.1f}s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# What stops a foreground server: Ctrl-C, and also SIGTERM and SIGHUP (a `kill`, a
# timeout, a closed terminal), which would otherwise end this process and leave the
# server's JVM running with no one to stop it. SIGINT too, since a shell starting this
# in the background (`&`) ignores it there.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _start(name: str) -> int:
    previous = {sig: signal.signal(sig, _interrupt) for sig in _STOP_SIGNALS}
    try:
        workdir = Path(tempfile.mkdtemp(prefix=f"larder-{name}-"))
        handle = servers.launch(name, workdir)
        try:
            for key, value in handle.details().items():
                print(f"{key}: {value}")
            print(f"logs: {workdir}  (Ctrl-C stops {name})", flush=True)
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            handle.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.infra")
    sub = parser.add_subparsers(dest="command", required=True)
    prov = sub.add_parser("provision", help="build or fetch servers into the cache")
    prov.add_argument("names", nargs="*", help=f"all (default), {', '.join(GROUPS)}, cluster")
    start = sub.add_parser("start", help="start one server in the foreground")
    start.add_argument("name", choices=["cassandra", "kafka", "kube"])
    args = parser.parse_args(argv)
    try:
        if args.command == "provision":
            return _provision(list(args.names))
        return _start(str(args.name))
    except InfraError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
