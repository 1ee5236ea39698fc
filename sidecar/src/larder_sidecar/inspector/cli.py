"""`larder inspect`: read entities from a journal (SQLite file or Cassandra) or through a
running sidecar's admin port.

    larder inspect types  --sqlite .larder/shopping-cart/journal.db
    larder inspect ids    --sqlite FILE TYPE [--limit N] [--after TOKEN]
    larder inspect entity --sqlite FILE TYPE ID
    larder inspect events --cassandra HOST[:PORT],... --keyspace K TYPE ID [--from-seq N]
    larder inspect events --admin http://127.0.0.1:9603 TYPE ID   # through a running sidecar
    larder inspect snapshot | value ...

Read-only. `larder inspect ...` runs this module as a process (`python -m
larder_sidecar.inspector`), as `larder dev` runs the sidecar: the developer CLI
imports nothing of the sidecar.

Exit status: 0 when shown, 1 when the journal could not be read (unreachable, a row
that cannot be decoded), 2 for input to fix (not a journal, another schema version, a
missing keyspace, an unknown entity, bad options).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from ..journal.base import JournalCorrupt, JournalUnavailable
from ..journal.reading import (
    BadContinuation,
    JournalReader,
    NotAJournal,
    SettingMismatch,
)
from .payloads import DescriptorsError, PayloadDecoder
from .remote import RemoteReader
from .render import Printer
from .views import InspectInputError, Inspector

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

DEFAULT_CASSANDRA_PORT = 9042
_ENV = "LARDER_JOURNAL_CASSANDRA_"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
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
    source = argparse.ArgumentParser(add_help=False)
    where = source.add_argument_group("journal (one of)")
    where.add_argument("--sqlite", type=Path, metavar="PATH",
                       help="an SQLite journal file (larder dev: .larder/NAME/journal.db)")
    where.add_argument("--cassandra", metavar="HOST[:PORT],...",
                       help="Cassandra contact points (port default 9042); credentials from "
                       f"{_ENV}USERNAME and {_ENV}PASSWORD")
    where.add_argument("--admin", metavar="URL",
                       help="a running sidecar's admin port (http://HOST:9603; in a cluster "
                       "`kubectl port-forward POD 9603` first): payloads decode with the "
                       "function's own descriptors")
    where.add_argument("--token-file", type=Path, metavar="PATH",
                       help="with --admin: a file holding the sidecar's LARDER_ADMIN_TOKEN "
                       "(default: $LARDER_ADMIN_TOKEN)")
    where.add_argument("--keyspace", default=None,
                       help=f"the journal's keyspace (default ${_ENV}KEYSPACE, else larder)")
    where.add_argument("--partition-size", type=_positive, default=None,
                       help="the sidecar's events per partition (default "
                       f"${_ENV}PARTITION_SIZE, else 10000); must match the sidecar's")
    where.add_argument("--consistency", default="LOCAL_QUORUM",
                       help="Cassandra read consistency (default %(default)s)")
    where.add_argument("--timeout", type=_seconds, default=10.0,
                       help="seconds to wait for Cassandra or the sidecar: to connect, and "
                       "per request (default %(default)s)")
    shown = source.add_argument_group("output")
    shown.add_argument("--output", choices=("table", "jsonl"), default="table",
                       help="table (for people, default) or jsonl (one JSON object per line)")
    shown.add_argument("--descriptors", type=Path, metavar="FILE",
                       help="the function's FileDescriptorSet (protoc --include_imports "
                       "--descriptor_set_out=FILE): payloads shown as JSON")
    shown.add_argument("--proto-dir", type=Path, metavar="DIR",
                       help="the function's .proto files, compiled here (needs grpcio-tools)")

    parser = argparse.ArgumentParser(
        prog="larder inspect",
        description="Read entities straight from a Larder journal, read-only.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("types", parents=[source], help="entity types and their entity counts")
    ids = commands.add_parser("ids", parents=[source], help="the ids of one entity type, paged")
    ids.add_argument("entity_type", metavar="TYPE", help="the entity type (its service name)")
    ids.add_argument("--limit", type=_positive, default=100,
                     help="ids per page (default %(default)s)")
    ids.add_argument("--after", metavar="TOKEN",
                     help="continue after the page that printed this token")
    for name, help_text in (
        ("entity", "what is stored for one entity"),
        ("events", "an event-sourced entity's events, paged"),
        ("snapshot", "an event-sourced entity's latest snapshot"),
        ("value", "a value entity's state and revision"),
    ):
        command = commands.add_parser(name, parents=[source], help=help_text)
        command.add_argument("entity_type", metavar="TYPE")
        command.add_argument("entity_id", metavar="ID")
        if name == "events":
            command.add_argument("--from-seq", type=_positive, default=1,
                                 help="the first sequence number shown (default 1)")
            command.add_argument("--limit", type=_positive, default=100,
                                 help="events per page (default %(default)s)")
    return parser


def _contact_points(text: str) -> tuple[list[str], int]:
    hosts: list[str] = []
    ports: set[int] = set()
    for raw in text.split(","):
        item = raw.strip()
        # One colon is host:port; none, or several (a bare IPv6 address), is a host.
        host, sep, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        if not host:
            raise InspectInputError(f"--cassandra {text!r} has an empty host")
        if sep:
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise InspectInputError(f"--cassandra: {port!r} in {item!r} is not a port")
            ports.add(int(port))
        hosts.append(host)
    if len(ports) > 1:
        raise InspectInputError(
            f"--cassandra {text!r} names several ports; the driver uses one port for all "
            "contact points"
        )
    return hosts, ports.pop() if ports else DEFAULT_CASSANDRA_PORT


def _env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(_ENV + name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise InspectInputError(f"{_ENV}{name}={raw!r} is not a positive whole number")
    return int(raw)


def _admin_token(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    if args.token_file is None:
        return environ.get("LARDER_ADMIN_TOKEN", "").strip() or None
    path: Path = args.token_file
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise InspectInputError(f"--token-file {path} cannot be read: {e}") from e
    if not token:
        raise InspectInputError(f"--token-file {args.token_file} is empty")
    return token


def open_reader(args: argparse.Namespace, environ: Mapping[str, str]) -> JournalReader:
    given = [args.sqlite is not None, args.cassandra is not None, args.admin is not None]
    if sum(given) != 1:
        raise InspectInputError(
            "give one journal: --sqlite PATH, --cassandra HOST[:PORT],... or --admin URL"
        )
    if args.token_file is not None and args.admin is None:
        raise InspectInputError("--token-file goes with --admin")
    if args.admin is not None:
        return RemoteReader(args.admin, _admin_token(args, environ), args.timeout)
    if args.sqlite is not None:
        # Imported per journal: the Cassandra driver is heavy, SQLite needs none of it.
        from ..journal.sqlite_reading import SqliteReader  # noqa: PLC0415

        return SqliteReader(args.sqlite)
    from ..journal.cassandra_reading import CassandraReader  # noqa: PLC0415

    hosts, port = _contact_points(args.cassandra)
    username = environ.get(_ENV + "USERNAME") or None
    password = environ.get(_ENV + "PASSWORD") or None
    if (username is None) != (password is None):
        raise InspectInputError(
            f"set both {_ENV}USERNAME and {_ENV}PASSWORD for password authentication, or neither"
        )
    try:
        return CassandraReader(
            hosts,
            port,
            args.keyspace or environ.get(_ENV + "KEYSPACE") or "larder",
            username=username,
            password=password,
            partition_size=args.partition_size or _env_int(environ, "PARTITION_SIZE", 10_000),
            timeout=args.timeout,
            consistency=args.consistency.upper(),
        )
    except ValueError as e:
        raise InspectInputError(str(e)) from e


def open_decoder(args: argparse.Namespace, reader: JournalReader) -> PayloadDecoder:
    if args.descriptors is not None and args.proto_dir is not None:
        raise InspectInputError("give --descriptors or --proto-dir, not both")
    if args.descriptors is not None:
        return PayloadDecoder.from_descriptor_set(args.descriptors)
    if args.proto_dir is not None:
        return PayloadDecoder.from_proto_dir(args.proto_dir)
    if isinstance(reader, RemoteReader):
        # The sidecar has the function's descriptors from discovery.
        return PayloadDecoder(reader.descriptors())
    return PayloadDecoder()


def run(argv: Sequence[str], out: TextIO, err: TextIO, environ: Mapping[str, str]) -> int:
    args = build_parser().parse_args(argv)
    reader: JournalReader | None = None
    try:
        reader = open_reader(args, environ)
        decoder = open_decoder(args, reader)
    except (InspectInputError, DescriptorsError, NotAJournal) as e:
        err.write(f"larder inspect: {e}\n")
        if reader is not None:
            reader.close()
        return EXIT_BAD_INPUT
    except (JournalUnavailable, JournalCorrupt) as e:
        err.write(f"larder inspect: {e}\n")
        if reader is not None:
            reader.close()
        return EXIT_FAILED
    inspector = Inspector(reader, decoder, Printer(out, args.output))
    try:
        if args.command == "types":
            inspector.types()
        elif args.command == "ids":
            inspector.ids(args.entity_type, args.limit, args.after)
        elif args.command == "events":
            inspector.events(args.entity_type, args.entity_id, args.from_seq, args.limit)
        elif args.command == "entity":
            inspector.entity(args.entity_type, args.entity_id)
        elif args.command == "snapshot":
            inspector.snapshot(args.entity_type, args.entity_id)
        else:
            inspector.value(args.entity_type, args.entity_id)
    except (InspectInputError, NotAJournal, SettingMismatch, BadContinuation) as e:
        err.write(f"larder inspect: {e}\n")
        return EXIT_BAD_INPUT
    except (JournalUnavailable, JournalCorrupt) as e:
        err.write(f"larder inspect: {e}\n")
        return EXIT_FAILED
    finally:
        reader.close()
    return 0


def main() -> None:
    # The driver logs each failed connection attempt; the inspector reports the outcome
    # itself, once, on stderr.
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    try:
        code = run(sys.argv[1:], sys.stdout, sys.stderr, os.environ)
        sys.stdout.flush()
    except BrokenPipeError:
        # `larder inspect ... | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    sys.exit(code)
