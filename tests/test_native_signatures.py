"""Every kernel's native module, its .pyi stub and its reference twin expose the same signatures."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from types import ModuleType

import pytest

from sis_stream import _backend

STUB_DIR = Path(_backend.__file__).parent / "_native"


def _public(module: ModuleType) -> dict[str, object]:
    # Public callables defined by the module itself (not imported helpers such as numpy).
    names = getattr(module, "__all__", None) or dir(module)
    return {
        n: obj
        for n in names
        if not n.startswith("_")
        and callable(obj := getattr(module, n))
        and getattr(obj, "__module__", None) == module.__name__
    }


def _shape(sig: inspect.Signature) -> list[tuple[str, str, object]]:
    # Names, kinds and defaults; annotations differ by design (Cython strings vs typing).
    return [(p.name, p.kind.name, p.default) for p in sig.parameters.values()]


def _stub_shape(fn: ast.FunctionDef) -> list[tuple[str, str, object]]:
    a = fn.args
    out: list[tuple[str, str, object]] = []
    pos = a.posonlyargs + a.args
    defaults = [inspect.Parameter.empty] * (len(pos) - len(a.defaults)) + [
        ast.literal_eval(d) for d in a.defaults
    ]
    for i, arg in enumerate(pos):
        kind = "POSITIONAL_ONLY" if i < len(a.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        out.append((arg.arg, kind, defaults[i]))
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", inspect.Parameter.empty))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append(
            (arg.arg, "KEYWORD_ONLY", inspect.Parameter.empty if d is None else ast.literal_eval(d))
        )
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", inspect.Parameter.empty))
    return out


@pytest.mark.parametrize("kernel", _backend.KERNELS)
def test_stub_matches_reference(kernel):
    # The hand-written .pyi must list exactly the reference's public functions, same parameters.
    stub = STUB_DIR / f"{kernel}.pyi"
    assert stub.exists(), f"missing hand-written stub {stub}"
    tree = ast.parse(stub.read_text())
    stub_funcs = {
        n.name: n
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
    }
    reference = _public(importlib.import_module(f"sis_stream._reference.{kernel}"))
    ref_funcs = {n: f for n, f in reference.items() if inspect.isfunction(f)}
    assert sorted(stub_funcs) == sorted(ref_funcs)
    for name, fn in ref_funcs.items():
        assert _stub_shape(stub_funcs[name]) == _shape(inspect.signature(fn)), f"{kernel}.{name}"


@pytest.mark.skipif(
    _backend.NO_EXTENSIONS,
    reason="SIS_STREAM_NO_EXTENSIONS=1: native kernels deliberately not used",
)
@pytest.mark.parametrize("kernel", _backend.KERNELS)
def test_native_matches_reference(kernel):
    # Same public names, and the same parameter names/kinds/defaults for every function.
    native = _public(importlib.import_module(f"sis_stream._native.{kernel}"))
    reference = _public(importlib.import_module(f"sis_stream._reference.{kernel}"))
    assert sorted(native) == sorted(reference)
    for name in reference:
        if inspect.isclass(reference[name]):
            continue  # classes: the name check above (their methods are covered by behaviour tests)
        assert _shape(inspect.signature(native[name])) == _shape(
            inspect.signature(reference[name])
        ), f"{kernel}.{name}"
