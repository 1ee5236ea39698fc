"""`larder`: the developer command line. `larder dev` runs a function locally behind a sidecar.

    larder dev samples/shopping-cart    # a directory with larder.toml, Procfile or package.json
    larder dev -- node index.js         # any start command; the function serves on $PORT
    larder dev --replicas 3 samples/shopping-cart   # 3 sidecars sharding the entities
    larder inspect types --sqlite .larder/shopping-cart/journal.db   # read a journal

Exit status: 0 after a clean Ctrl-C, 1 when something failed while running, 2 when the
input cannot be run (no function, port in use, bad options).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from larder_dev.function import (
    DEFAULT_FUNCTION_PORT,
    DevInputError,
    discover,
    from_command,
)
from larder_dev.run import DevRunError, DevRunner, DevSettings

DEFAULT_PUBLIC_PORT = 9000
DEFAULT_ADMIN_PORT = 9603
DEFAULT_INTERNAL_PORT = 9604
DEFAULT_DATA_DIR = Path(".larder")

MAX_REPLICAS = 16
"""Two processes each, on one machine: a typo should not start hundreds."""

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return value


def _replicas(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of replicas") from None
    if not 1 <= value <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and {MAX_REPLICAS}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="larder", description="Larder developer tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dev = commands.add_parser(
        "dev",
        help="run a user function and a sidecar locally",
        description="Run a user function and a Larder sidecar on this machine, with a "
        "durable local journal. Give a function directory, or a start command after `--`.",
        usage="larder dev [options] DIRECTORY\n       larder dev [options] -- COMMAND [ARG ...]",
    )
    dev.add_argument("directory", nargs="?", type=Path,
                     help="function directory (larder.toml, Procfile or package.json)")
    dev.add_argument("--port", type=_port, default=DEFAULT_PUBLIC_PORT,
                     help="the sidecar's public gRPC + HTTP/JSON port (default %(default)s)")
    dev.add_argument("--function-port", type=_port, default=None,
                     help="the user function's port, passed as $PORT (default: the "
                     f"function's larder.toml port, else {DEFAULT_FUNCTION_PORT})")
    dev.add_argument("--admin-port", type=_port, default=DEFAULT_ADMIN_PORT,
                     help="the sidecar's admin port: /readyz, /metrics (default %(default)s)")
    dev.add_argument("--internal-port", type=_port, default=DEFAULT_INTERNAL_PORT,
                     help="the sidecar's sidecar-to-sidecar port (default %(default)s)")
    dev.add_argument("--replicas", type=_replicas, default=1, metavar="N",
                     help="run N sidecars, each with its own function process, sharing the "
                     "journal: each entity lives on one of them and the others forward to it. "
                     "Replica i gets the public port PORT+i; the other ports count up from "
                     "their options too, skipping ports already given (default %(default)s)")
    dev.add_argument("--journal", choices=("sqlite", "memory"), default="sqlite",
                     help="where state lives: sqlite survives restarts (default), memory not")
    dev.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                     help="the sqlite journal goes in DATA_DIR/NAME/journal.db "
                     "(default %(default)s)")
    dev.add_argument("--name", default=None,
                     help="the function's name (default: its directory or command)")
    dev.add_argument("--ready-timeout", type=_seconds, default=120.0,
                     help="seconds to wait for readiness (default %(default)s)")
    dev.add_argument("--grace", type=_seconds, default=5.0,
                     help="seconds each process gets to stop before it is killed "
                     "(default %(default)s)")
    commands.add_parser(
        "inspect",
        add_help=False,
        help="read entities from a journal (SQLite file or Cassandra), read-only; "
        "`larder inspect --help` for its commands",
    )
    return parser


def _split_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    args = list(argv)
    if "--" in args:
        at = args.index("--")
        return args[:at], args[at + 1:]
    return args, None


def sidecar_command() -> tuple[str, ...]:
    """The sidecar of this installation: the script next to our interpreter first."""
    beside = Path(sys.executable).parent / "larder-sidecar"
    if beside.is_file():
        return (str(beside),)
    found = shutil.which("larder-sidecar")
    if found is None:
        raise DevInputError("larder-sidecar is not installed next to larder; "
                            "install the larder-sidecar package (scripts/install.sh)")
    return (found,)


def parse_dev_args(argv: Sequence[str], cwd: Path | None = None) -> DevSettings:
    """The settings for `larder dev` from its arguments (without the leading `dev`).

    Raises DevInputError for input that cannot be run, SystemExit(2) for bad options.
    """
    cwd = cwd or Path.cwd()
    options, command = _split_command(argv)
    parser = build_parser()
    args = parser.parse_args(["dev", *options])
    if command is not None and args.directory is not None:
        raise DevInputError("give either a function directory or a command after `--`, "
                            "not both")
    if command is not None:
        function = from_command(command, cwd, args.name)
    elif args.directory is not None:
        directory = args.directory if args.directory.is_absolute() else cwd / args.directory
        function = discover(directory, args.name)
    else:
        raise DevInputError("nothing to run: give a function directory "
                            "(e.g. `larder dev samples/shopping-cart`) or a command after `--`")
    data_dir = args.data_dir if args.data_dir.is_absolute() else cwd / args.data_dir
    return DevSettings(
        function=function,
        public_port=args.port,
        admin_port=args.admin_port,
        internal_port=args.internal_port,
        function_port=args.function_port or function.port or DEFAULT_FUNCTION_PORT,
        journal=args.journal,
        data_dir=data_dir,
        sidecar_command=sidecar_command(),
        ready_timeout_s=args.ready_timeout,
        grace_s=args.grace,
        replicas=args.replicas,
    )


INSPECTOR_MODULE = "larder_sidecar.inspector"


def inspect_command(argv: Sequence[str]) -> list[str]:
    """The inspector's command line for `larder inspect ARGV`.

    The inspector reads journals with the sidecar's journal code, so it lives in the
    sidecar package and runs as a process of this same interpreter (both packages are
    one distribution), as `larder dev` runs the sidecar: this CLI imports nothing of
    `larder_sidecar`, which keeps `.importlinter`'s contract without an exception.
    """
    return [sys.executable, "-m", INSPECTOR_MODULE, *argv]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "inspect":
        command = inspect_command(argv[1:])
        # Replaced, not supervised: its output, exit status and Ctrl-C are the user's.
        os.execv(command[0], command)
    if not argv or argv[0] != "dev":
        # Let argparse print the usage and the list of commands.
        build_parser().parse_args(argv[:1] or ["--help"])
        return EXIT_BAD_INPUT
    try:
        settings = parse_dev_args(argv[1:])
        return asyncio.run(DevRunner(settings).run())
    except DevInputError as e:
        print(f"larder dev: {e}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except DevRunError as e:
        print(f"larder dev: {e}", file=sys.stderr, flush=True)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
