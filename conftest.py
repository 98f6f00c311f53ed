"""Shared by tests/ and benchmarks/: the backend fixture, the native-build guard, the report header."""

from __future__ import annotations

import pytest

import sis_stream
from sis_stream import _backend


def pytest_report_header(config):
    return [f"sis_stream {sis_stream.__version__}, backend: {_backend.BACKEND}, kernels: {', '.join(_backend.KERNELS)}"]


def pytest_sessionstart(session):
    # A silent fallback must never turn a broken build into a green run (house style G):
    # unless SIS_STREAM_NO_EXTENSIONS asks for the numpy twins, a missing native kernel fails.
    if not _backend.NO_EXTENSIONS and _backend.NATIVE_IMPORT_ERRORS:
        missing = "; ".join(f"{k}: {e}" for k, e in _backend.NATIVE_IMPORT_ERRORS.items())
        pytest.exit(
            "native kernels are not built and SIS_STREAM_NO_EXTENSIONS is unset "
            f"({missing}); run `pip install -e .` or set SIS_STREAM_NO_EXTENSIONS=1",
            returncode=3,
        )


@pytest.fixture(params=["native", "reference"])
def backend(request, monkeypatch):
    """Each kernel test runs once per backend; wrappers in the test see the same backend.

    Yields a namespace with one module per kernel (``backend.g711``, ...). Under
    SIS_STREAM_NO_EXTENSIONS=1 the native case is skipped: that is an explicit request.
    """
    if request.param == "native" and _backend.NO_EXTENSIONS:
        pytest.skip("SIS_STREAM_NO_EXTENSIONS=1: native kernels deliberately not used")
    ns = _backend.load(request.param)
    for name in _backend.KERNELS:
        monkeypatch.setattr(_backend, name, getattr(ns, name))
    ns.kind = request.param
    return ns
