"""How `larder dev` finds out what to run: the user-function conventions.

A function directory names its start command in one of these, first match wins:

1. `larder.toml` -- `[function]` with `command` (a list or a shell string), and
   optionally `name`, `port` and `[function.env]`. The Larder samples use this.
2. `Procfile` -- the `web:` line (or the only line), as on Heroku-style platforms.
3. `package.json` -- a `scripts.start` entry, run as `npm start` (the JavaScript SDK's
   convention).

Alternatively the command is given after `--` and the function is expected to serve
on `PORT`.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_FUNCTION_PORT = 8080


class DevInputError(Exception):
    """The user asked for something `larder dev` cannot run; the message says what to fix."""


@dataclass(frozen=True)
class FunctionSpec:
    """What to start as the user function, and where it will listen."""

    name: str
    """Stable name; the journal lives under `<data-dir>/<name>/`."""
    command: tuple[str, ...]
    cwd: Path
    port: int | None = None
    """The port named by the function's own config, if any (`--function-port` wins)."""
    env: Mapping[str, str] = field(default_factory=dict)
    directory: Path | None = None
    """The function directory, when started from one (for its README examples)."""
    source: str = "command line"
    """Which convention supplied the command, for the start-up banner."""


def slug(text: str) -> str:
    """A file-name-safe name: lowercase words joined by `-`."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words)[:60] or "function"


def from_command(command: Sequence[str], cwd: Path, name: str | None = None) -> FunctionSpec:
    if not command:
        raise DevInputError("no start command after `--`; give one, "
                            "e.g. `larder dev -- node index.js`")
    # The name must be stable across restarts so the journal is found again;
    # the command line itself is the most stable thing we have.
    return FunctionSpec(
        name=slug(name or " ".join([Path(command[0]).name, *command[1:]])),
        command=tuple(command),
        cwd=cwd,
    )


def discover(directory: Path, name: str | None = None) -> FunctionSpec:
    """The FunctionSpec of a function directory, by the conventions in the module doc."""
    if not directory.exists():
        raise DevInputError(f"{directory} does not exist; pass a function directory "
                            "or a start command after `--`")
    if not directory.is_dir():
        raise DevInputError(f"{directory} is not a directory; pass a function directory "
                            "or a start command after `--`")
    directory = directory.resolve()
    default_name = slug(name or directory.name)
    for probe in (_from_larder_toml, _from_procfile, _from_package_json):
        spec = probe(directory, default_name, name is not None)
        if spec is not None:
            return spec
    raise DevInputError(
        f"no user function in {directory}: expected a larder.toml with [function] command, "
        "a Procfile or a package.json start script (see docs/local-development.md), "
        "or pass the start command after `--`"
    )


def _from_larder_toml(directory: Path, default_name: str, name_given: bool) -> FunctionSpec | None:
    path = directory / "larder.toml"
    if not path.is_file():
        return None
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise DevInputError(f"{path} is not valid TOML: {e}") from e
    section = document.get("function")
    if not isinstance(section, dict):
        raise DevInputError(f"{path} has no [function] table; add one with `command = [...]`")
    command = _command_value(section.get("command"), path)
    port = section.get("port")
    if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
        raise DevInputError(f"{path}: function.port must be a port number, got {port!r}")
    env = section.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str | int) for v in env.values()):
        raise DevInputError(f"{path}: [function.env] must map names to strings")
    configured_name = section.get("name")
    if configured_name is not None and not isinstance(configured_name, str):
        raise DevInputError(f"{path}: function.name must be a string")
    return FunctionSpec(
        name=default_name if name_given or configured_name is None else slug(configured_name),
        command=command,
        cwd=directory,
        port=port,
        env={str(k): str(v) for k, v in env.items()},
        directory=directory,
        source="larder.toml",
    )


def _command_value(value: object, path: Path) -> tuple[str, ...]:
    if isinstance(value, str) and value.strip():
        return tuple(shlex.split(value))
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise DevInputError(f"{path}: function.command must be a non-empty list of strings "
                        "or a command string")


def _from_procfile(directory: Path, default_name: str, name_given: bool) -> FunctionSpec | None:
    path = directory / "Procfile"
    if not path.is_file():
        return None
    processes = parse_procfile(path.read_text(encoding="utf-8"))
    if "web" in processes:
        line = processes["web"]
    elif len(processes) == 1:
        line = next(iter(processes.values()))
    else:
        raise DevInputError(f"{path} has no `web:` process and more than one other; "
                            "name the function's process `web`")
    # A Procfile line is a shell command ($PORT and friends); run it through sh.
    return FunctionSpec(name=default_name, command=("sh", "-c", f"exec {line}"), cwd=directory,
                        directory=directory, source="Procfile")


def parse_procfile(text: str) -> dict[str, str]:
    processes: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, sep, command = line.partition(":")
        if sep and kind.strip() and command.strip():
            processes[kind.strip()] = command.strip()
    return processes


def _from_package_json(directory: Path, default_name: str, name_given: bool) -> FunctionSpec | None:
    path = directory / "package.json"
    if not path.is_file():
        return None
    try:
        package = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DevInputError(f"{path} is not valid JSON: {e}") from e
    scripts = package.get("scripts") if isinstance(package, dict) else None
    if not isinstance(scripts, dict) or not isinstance(scripts.get("start"), str):
        return None
    package_name = package.get("name")
    name = default_name
    if not name_given and isinstance(package_name, str) and package_name:
        name = slug(package_name)
    return FunctionSpec(name=name, command=("npm", "start"), cwd=directory,
                        directory=directory, source="package.json")
