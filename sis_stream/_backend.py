"""The one place that chooses native kernels or their pure-numpy reference twins."""

from __future__ import annotations

import importlib
import os
import pkgutil
from types import ModuleType, SimpleNamespace
from typing import Final

from . import _reference

__all__ = ["BACKEND", "NO_EXTENSIONS", "KERNELS", "NATIVE_IMPORT_ERRORS", "load"]

#: True when ``SIS_STREAM_NO_EXTENSIONS`` is set to anything but "" or "0" (same rule as setup.py).
NO_EXTENSIONS: Final = os.environ.get("SIS_STREAM_NO_EXTENSIONS", "") not in ("", "0")

#: Every kernel is named by its reference twin; each one must also exist as sis_stream._native.<name>.
KERNELS: Final = tuple(
    sorted(m.name for m in pkgutil.iter_modules(_reference.__path__) if not m.name.startswith("_"))
)

#: Kernel name -> the ImportError met when loading its native module (empty when all loaded).
NATIVE_IMPORT_ERRORS: dict[str, ImportError] = {}


def _import(kind: str, name: str) -> ModuleType:
    return importlib.import_module(f"sis_stream._{kind}.{name}")


def load(kind: str) -> SimpleNamespace:
    """Return a namespace with every kernel module of one backend, ``"native"`` or ``"reference"``.

    Raises
    ------
    ValueError
        If `kind` is neither ``"native"`` nor ``"reference"``.
    ImportError
        If a native kernel cannot be imported.
    """
    if kind not in ("native", "reference"):
        raise ValueError(f"backend kind must be 'native' or 'reference', got {kind!r}")
    return SimpleNamespace(**{name: _import(kind, name) for name in KERNELS})


def _select() -> tuple[str, dict[str, ModuleType]]:
    if NO_EXTENSIONS:
        return "reference", {name: _import("reference", name) for name in KERNELS}
    chosen: dict[str, ModuleType] = {}
    for name in KERNELS:
        try:
            chosen[name] = _import("native", name)
        except ImportError as exc:  # an uncompiled checkout: fall back, but remember why
            NATIVE_IMPORT_ERRORS[name] = exc
            chosen[name] = _import("reference", name)
    return ("reference" if NATIVE_IMPORT_ERRORS else "native"), chosen


#: "native" when every kernel is compiled, "reference" when any one runs on the numpy twin.
BACKEND, _modules = _select()
# Wrappers look kernels up as attributes of this module at call time (``_backend.g711``), so a
# test can swap one backend for the other with monkeypatch.
globals().update(_modules)

