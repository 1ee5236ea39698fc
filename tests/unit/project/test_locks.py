"""The locks in requirements/ agree with what they were made from.

Every Python package that CI, the images and `make dev` install comes from a lock with
exact versions and hashes (scripts/lock.sh writes them from requirements/*.in, which
name the components' pyproject.toml files). A lock that no longer matches its inputs
fails here, before it can fail on a fresh machine: a dependency added or given a new
range without `make lock`, or one removed while the lock still carries it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]
REQUIREMENTS = ROOT / "requirements"
LOCKS = sorted(REQUIREMENTS.glob("*.lock"))
OWN = {"larder-protocol", "larder-sdk", "larder-sidecar", "larder-operator", "larder-tck"}
# The environment every lock is for (the machines, CI and the images: Linux, 3.11).
ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_python_implementation": "CPython",
    "implementation_name": "cpython",
    "os_name": "posix",
    "platform_machine": "x86_64",
}


@dataclass
class Locked:
    version: str
    marker: str | None
    hashes: int = 0
    via: list[str] = field(default_factory=list)


def parse_lock(path: Path) -> dict[str, list[Locked]]:
    entries: dict[str, list[Locked]] = {}
    current: Locked | None = None
    in_via = False
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+?)(?: ; (.+?))?(?: \\)?$", line):
            current = Locked(match.group(2), match.group(3))
            entries.setdefault(canonicalize_name(match.group(1)), []).append(current)
            in_via = False
        elif current is not None and "--hash=sha256:" in line:
            current.hashes += 1
        elif current is not None and (via := re.match(r"^\s+# via(?: (.+))?$", line)):
            in_via = via.group(1) is None
            if via.group(1):
                current.via.append(via.group(1).strip())
        elif current is not None and in_via and (parent := re.match(r"^\s+#\s+(\S.*)$", line)):
            current.via.append(parent.group(1).strip())
        elif line.strip() and not line.startswith("#"):
            raise AssertionError(f"{path.name}: a line the lock parser does not know: {line!r}")
    return entries


def _component_requirements(name: str, extras: set[str]) -> list[Requirement]:
    component = name.removeprefix("larder-")
    project = tomllib.loads((ROOT / component / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project.get("dependencies", [])]
    for extra in extras:
        reqs += [Requirement(r) for r in project.get("optional-dependencies", {})[extra]]
    return reqs


def inputs(in_file: Path) -> dict[str, list[Requirement]]:
    """What each source (an .in file, or a component) asks for, following `-r` and
    `-e ./component` (and our components' dependencies on each other)."""
    found: dict[str, list[Requirement]] = {}

    def component(name: str, extras: set[str]) -> None:
        reqs = _component_requirements(name, extras)
        found.setdefault(name, []).extend(reqs)
        for req in reqs:
            if canonicalize_name(req.name) in OWN:
                component(canonicalize_name(req.name), set(req.extras))

    def read(path: Path) -> None:
        source = f"-r requirements/{path.name}"
        found.setdefault(source, [])
        for raw in path.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("-r "):
                read(path.parent / line[3:].strip())
            elif line.startswith("-e ./"):
                component(f"larder-{line[5:].strip()}", set())
            else:
                found[source].append(Requirement(line))

    read(in_file)
    return found


def _applies(marker: str | None) -> bool:
    return marker is None or Marker(marker).evaluate(ENVIRONMENT)


def _in_file(lock: Path) -> Path:
    return lock.with_suffix(".in")


@pytest.mark.parametrize("lock", LOCKS, ids=[p.name for p in LOCKS])
def test_every_locked_package_is_pinned_with_hashes(lock: Path) -> None:
    entries = parse_lock(lock)
    assert entries, f"{lock.name} locks nothing"
    assert "make lock" in lock.read_text().splitlines()[1], (
        f"{lock.name} was not written by scripts/lock.sh"
    )
    for name, locked in entries.items():
        for entry in locked:
            assert entry.hashes > 0, f"{lock.name}: {name}=={entry.version} has no hash"
        assert not (OWN & {name}), f"{lock.name} pins our own component {name}"


@pytest.mark.parametrize("lock", LOCKS, ids=[p.name for p in LOCKS])
def test_lock_satisfies_its_inputs(lock: Path) -> None:
    entries = parse_lock(lock)
    for source, reqs in inputs(_in_file(lock)).items():
        for req in reqs:
            name = canonicalize_name(req.name)
            if name in OWN or (req.marker is not None and not req.marker.evaluate(ENVIRONMENT)):
                continue
            versions = [e.version for e in entries.get(name, []) if _applies(e.marker)]
            assert versions, (
                f"{source} asks for {req}, which {lock.name} does not have; run `make lock`"
            )
            assert all(req.specifier.contains(v, prereleases=True) for v in versions), (
                f"{source} asks for {req}, but {lock.name} pins {name}=={versions[0]}; "
                "run `make lock`"
            )


@pytest.mark.parametrize("lock", LOCKS, ids=[p.name for p in LOCKS])
def test_lock_carries_nothing_its_inputs_dropped(lock: Path) -> None:
    """Each locked package is there because of something that still asks for it."""
    entries = parse_lock(lock)
    asked = {
        source: {canonicalize_name(r.name) for r in reqs}
        for source, reqs in inputs(_in_file(lock)).items()
    }
    for name, locked in entries.items():
        reasons = {v for entry in locked for v in entry.via}
        assert reasons, f"{lock.name}: {name} is locked for no stated reason; run `make lock`"
        for reason in reasons:
            if reason in asked or canonicalize_name(reason.split("[")[0]) in OWN:
                key = reason if reason in asked else canonicalize_name(reason.split("[")[0])
                assert name in asked.get(key, set()), (
                    f"{lock.name}: {name} is locked because {reason} asks for it, which it "
                    "no longer does; run `make lock`"
                )
            else:
                assert canonicalize_name(reason) in entries, (
                    f"{lock.name}: {name} is locked for {reason}, which the lock does not have"
                )


DOCKERFILES = [ROOT / "Dockerfile", *sorted((ROOT / "samples").glob("*/Dockerfile"))]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_images_install_only_from_locks(dockerfile: Path) -> None:
    """Every pip call in an image build installs locked, hash-checked packages, or our
    own components without dependencies, or from the builder's wheels only."""
    text = dockerfile.read_text().replace("\\\n", " ")
    calls = re.findall(r"pip (?:install|wheel)[^&\n]*", text)
    assert calls, f"{dockerfile.name} installs nothing with pip"
    for call in calls:
        locked = "--require-hashes" in call and re.search(r"-r requirements/\S+\.lock", call)
        own = "--no-deps" in call and "--no-build-isolation" in call
        offline = "--no-index" in call
        assert locked or own or offline, f"{dockerfile}: an unlocked install: {call!r}"
