"""Launching a JVM server from a cached Maven classpath."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from tests.infra.errors import ServerError
from tests.infra.maven import classpath


def java_executable() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServerError("java", "no `java` on PATH; the test servers need a JDK 17")
    return java


def java_argv(
    lib: Path, main_class: str, jvm_options: Sequence[str], args: Sequence[str] = ()
) -> list[str]:
    return [java_executable(), *jvm_options, "-cp", classpath(lib), main_class, *args]
