"""The per-user model cache (sis_stream.engines.cache): atomic, verified, one build under races."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from sis_stream.engines import cache
from sis_stream.errors import EngineUnavailableError


def _build_counting(counter: Path, payload: bytes = b"weights" * 1000):
    def build(folder: Path) -> None:
        with open(counter, "a") as fh:
            fh.write("x")
        (folder / "model.bin").write_bytes(payload)
    return build


def test_builds_once_then_reuses(tmp_path):
    counter = tmp_path / "count"
    root = tmp_path / "cache"
    a = cache.cached_build("m-1", _build_counting(counter), root=root)
    b = cache.cached_build("m-1", _build_counting(counter), root=root)
    assert a == b == root / "m-1"
    assert counter.read_text() == "x"
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["files"]["model.bin"]["size"] == 7000
    assert manifest["files"]["model.bin"]["sha256"] == cache.file_sha256(a / "model.bin")


def test_damaged_entry_is_rebuilt(tmp_path):
    counter = tmp_path / "count"
    root = tmp_path / "cache"
    entry = cache.cached_build("m-1", _build_counting(counter), root=root)
    data = bytearray((entry / "model.bin").read_bytes())
    data[10] ^= 0xFF  # same size, other bytes: only the checksum can tell
    (entry / "model.bin").write_bytes(bytes(data))
    cache.cached_build("m-1", _build_counting(counter), root=root)
    assert counter.read_text() == "xx"
    assert (entry / "model.bin").read_bytes() == b"weights" * 1000


def test_failed_build_leaves_nothing(tmp_path):
    root = tmp_path / "cache"

    def broken(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"half")
        raise RuntimeError("verification failed")

    with pytest.raises(RuntimeError, match="verification failed"):
        cache.cached_build("m-1", broken, root=root)
    assert sorted(p.name for p in root.iterdir()) == [".m-1.lock"]


def test_read_only_cache_names_the_folder(tmp_path):
    if os.geteuid() == 0:
        # root writes through permission bits: make the cache path a file instead.
        blocker = tmp_path / "cache"
        blocker.write_text("not a folder")
        root = blocker / "inner"
    else:
        root = tmp_path / "cache"
        root.mkdir()
        root.chmod(0o500)
    with pytest.raises(EngineUnavailableError, match="read-only or not writable.*SIS_STREAM_CACHE_DIR"):
        cache.cached_build("m-1", _build_counting(tmp_path / "count"), root=root)


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SIS_STREAM_CACHE_DIR", str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c"
    monkeypatch.delenv("SIS_STREAM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache.cache_root() == tmp_path / "x" / "sis-stream"
    assert cache.cache_root(tmp_path / "arg") == tmp_path / "arg"


@pytest.mark.parametrize("key", ["", "a/b", ".hidden"])
def test_bad_keys(tmp_path, key):
    with pytest.raises(ValueError, match="one path component"):
        cache.cached_build(key, _build_counting(tmp_path / "n"), root=tmp_path)


def _racer(root: str, counter: str, start) -> None:
    import time

    def slow_build(folder: Path) -> None:
        with open(counter, "a") as fh:
            fh.write("x")
        time.sleep(0.3)  # widen the window in which the others must wait
        (folder / "model.bin").write_bytes(b"w" * 4096)

    start.wait(10)
    entry = cache.cached_build("race", slow_build, root=root)
    assert (entry / "model.bin").read_bytes() == b"w" * 4096


def test_concurrent_starts_build_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    counter = tmp_path / "count"
    procs = [ctx.Process(target=_racer, args=(str(tmp_path / "cache"), str(counter), start))
             for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert counter.read_text() == "x"
