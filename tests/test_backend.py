"""The backend selector: one env switch, one place, no silent fallback in tests."""

import os
import subprocess
import sys

import pytest

from sis_stream import _backend


def _run(code: str, **env: str) -> str:
    full_env = {k: v for k, v in os.environ.items() if k != "SIS_STREAM_NO_EXTENSIONS"}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_no_extensions_selects_reference_modules():
    # The switch must reach every kernel, not just the BACKEND label.
    code = ("import sis_stream._backend as b; "
            "print(b.BACKEND, all(getattr(b, k).__name__.startswith('sis_stream._reference.') "
            "for k in b.KERNELS))")
    assert _run(code, SIS_STREAM_NO_EXTENSIONS="1") == "reference True"


def test_zero_means_extensions_on():
    # "0" is not a request for the numpy twins (same rule as setup.py).
    assert _run("import sis_stream._backend as b; print(b.NO_EXTENSIONS)",
                SIS_STREAM_NO_EXTENSIONS="0") == "False"


@pytest.mark.skipif(_backend.NO_EXTENSIONS, reason="native build deliberately not used")
def test_native_backend_active_when_built():
    # conftest already fails the session when a native kernel is missing; this pins the label.
    assert _backend.BACKEND == "native"
    assert not _backend.NATIVE_IMPORT_ERRORS
    for name in _backend.KERNELS:
        assert getattr(_backend, name).__name__ == f"sis_stream._native.{name}"


def test_load_rejects_unknown_kind():
    with pytest.raises(ValueError, match="'native' or 'reference', got 'fast'"):
        _backend.load("fast")


def test_every_kernel_has_native_source():
    # A reference twin without a .pyx would silently stay on numpy forever.
    native_dir = os.path.join(os.path.dirname(__file__), os.pardir, "native")
    for name in _backend.KERNELS:
        assert os.path.exists(os.path.join(native_dir, f"{name}.pyx")), name
