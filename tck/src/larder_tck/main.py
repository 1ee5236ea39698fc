"""`larder-tck`: run the TCK against a frontend and report.

larder-tck --service "python my_frontend.py"     # the TCK starts it with HOST/PORT
larder-tck --address 127.0.0.1:8080              # a frontend that is already running
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from larder_tck import report, runner
from larder_tck.expect import FrontendUnreachable
from larder_tck.frontend import run_service
from larder_tck.registry import all_cases


def _default_sidecar_command() -> str:
    # Prefer the sidecar installed next to this interpreter (the same virtualenv).
    sibling = Path(sys.executable).parent / "larder-sidecar"
    if sibling.exists():
        return shlex.quote(str(sibling))
    found = shutil.which("larder-sidecar")
    return shlex.quote(found) if found else "larder-sidecar"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="larder-tck",
        description="Check that a user-function frontend speaks the Akka Serverless protocol.",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--service",
        metavar="COMMAND",
        help="shell command starting the frontend; the TCK sets HOST and PORT for it",
    )
    target.add_argument("--address", metavar="HOST:PORT", help="a frontend that is running")
    target.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--sidecar-command",
        default=None,
        help="command starting the sidecar for the proxy cases (default: larder-sidecar)",
    )
    parser.add_argument(
        "--no-proxy", action="store_true", help="run the model cases only (no sidecar)"
    )
    parser.add_argument(
        "-k",
        "--cases",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only cases whose name matches this glob (repeatable)",
    )
    parser.add_argument("--junit-xml", type=Path, metavar="PATH", help="write JUnit XML here")
    parser.add_argument(
        "--logs",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory for the frontend's and the sidecar's output (default: a temp dir)",
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=60.0, help="seconds to wait for the frontend"
    )
    args = parser.parse_args(argv)
    if not (args.service or args.address or args.list):
        parser.error("give --service COMMAND or --address HOST:PORT")
    return args


async def _run(args: argparse.Namespace, logs: Path) -> list[report.Result]:
    from larder_tck.proxy_env import proxy_starter  # noqa: PLC0415 - only when needed

    selection = runner.Selection(patterns=args.cases, proxy=not args.no_proxy)
    sidecar_command = args.sidecar_command or _default_sidecar_command()
    starter = proxy_starter(sidecar_command, logs, args.startup_timeout)
    if args.address:
        return await runner.run(args.address, selection, starter)
    async with run_service(args.service, logs / "frontend.log", args.startup_timeout) as address:
        return await runner.run(address, selection, starter)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list:
        for case in all_cases():
            print(f"{case.name}  ({case.kind}) {case.description}")
        return
    with tempfile.TemporaryDirectory(prefix="larder-tck-") as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        try:
            results = asyncio.run(_run(args, logs))
        except FrontendUnreachable as e:
            print(f"larder-tck: {e}", file=sys.stderr)
            print("0 passed, 1 failed, 0 skipped")
            sys.exit(2)
        report.write_text(results, sys.stdout)
        if args.junit_xml:
            report.write_junit(results, args.junit_xml)
        if args.logs is None and any(r.status == "failed" for r in results):
            print(f"(frontend and sidecar logs were in {tmp}; keep them with --logs DIR)")
    sys.exit(1 if any(r.status == "failed" for r in results) else 0)
