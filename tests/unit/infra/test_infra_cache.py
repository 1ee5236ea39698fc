from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra import cache


def _write_payload(staging: Path) -> None:
    (staging / "bin").mkdir()
    (staging / "bin" / "server").write_text("binary")


def test_cache_root_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert cache.entry_dir("kafka", "4.3.1") == tmp_path / "elsewhere" / "kafka" / "4.3.1"
    monkeypatch.delenv(cache.CACHE_ENV)
    assert cache.cache_root() == Path.home() / ".cache" / "larder"


def test_entry_key_changes_with_the_recipe() -> None:
    assert cache.entry_key("1.0.0", "a") == cache.entry_key("1.0.0", "a")
    assert cache.entry_key("1.0.0", "a") != cache.entry_key("1.0.0", "b")
    assert cache.entry_key("1.0.0", "a").startswith("1.0.0-")


def test_builds_once_then_reports_cached(tmp_path: Path) -> None:
    entry = tmp_path / "helm" / "v3"
    calls: list[Path] = []

    def build(staging: Path) -> None:
        calls.append(staging)
        _write_payload(staging)

    assert cache.ensure_entry(entry, build) is False
    assert cache.ensure_entry(entry, build) is True
    assert len(calls) == 1
    assert calls[0] != entry
    assert (entry / "bin" / "server").read_text() == "binary"
    assert cache.is_complete(entry)


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    entry = tmp_path / "kube" / "v1"

    def build(staging: Path) -> None:
        _write_payload(staging)
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError, match="compiler crashed"):
        cache.ensure_entry(entry, build)
    assert not entry.exists()
    assert [p.name for p in entry.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_an_entry_without_marker_is_rebuilt(tmp_path: Path) -> None:
    entry = tmp_path / "etcd" / "v3"
    entry.mkdir(parents=True)
    (entry / "half-written").write_text("")

    assert cache.ensure_entry(entry, _write_payload) is False
    assert not (entry / "half-written").exists()
    assert cache.is_complete(entry)
