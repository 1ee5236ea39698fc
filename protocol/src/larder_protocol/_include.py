"""Where Larder's .proto files are, for compiling user protos against them."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def include_dir() -> Path:
    """The directory holding ``akkaserverless/**.proto`` and ``google/api/*.proto``.

    Installed from a wheel, the files live inside this package; in an editable
    install (source checkout) they are read from ``protocol/proto`` directly.
    """
    for candidate in (_PACKAGE_DIR / "proto", _PACKAGE_DIR.parent.parent / "proto"):
        if (candidate / "akkaserverless" / "annotations.proto").is_file():
            return candidate
    raise FileNotFoundError(
        f"Larder's .proto files are neither in {_PACKAGE_DIR / 'proto'} nor in the source "
        "checkout; the larder-protocol installation is incomplete (reinstall it)"
    )
