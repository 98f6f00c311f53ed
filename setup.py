"""Build the Cython kernels in native/*.pyx into sis_stream._native.*.

Environment switches (read here and, for the first one, again at import time in
sis_stream/_backend.py):

SIS_STREAM_NO_EXTENSIONS=1   build nothing; the pure-numpy reference twins are used.
SIS_STREAM_CYTHON_DEBUG=1    bounds checks and wraparound checks back on, -O0 -g.
SIS_STREAM_CYTHON_TRACE=1    line tracing for coverage of the .pyx files.
SIS_STREAM_BUILD_ONLY=a,b    build only these kernels (development convenience).
"""

import os
from glob import glob

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _ext_modules():
    if _flag("SIS_STREAM_NO_EXTENSIONS"):
        return []
    import numpy
    from Cython.Build import cythonize

    debug = _flag("SIS_STREAM_CYTHON_DEBUG")
    trace = _flag("SIS_STREAM_CYTHON_TRACE")
    only = {s.strip() for s in os.environ.get("SIS_STREAM_BUILD_ONLY", "").split(",") if s.strip()}

    # Kernel-wide directives live here rather than in per-function decorators: a decorator would
    # override the debug build below, and the debug build must turn every bounds check back on.
    # Release: the kernels are written to stay in bounds (each index formula carries a comment);
    # they never index negatively; cdivision only where both operands are non-negative.
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": not debug,
        "embedsignature": True,
    }
    # The resampler's entry reads ndarray fields through numpy's C API (numpy is a build
    # requirement): five buffer acquisitions cost more than a 20 ms chunk's arithmetic.
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    if trace:
        directives["linetrace"] = True
        macros.append(("CYTHON_TRACE_NOGIL", "1"))
    cflags = ["-O0", "-g"] if debug else ["-O3"]

    exts = []
    for path in sorted(glob(os.path.join("native", "*.pyx"))):
        name = os.path.splitext(os.path.basename(path))[0]
        if only and name not in only:
            continue
        exts.append(
            Extension(
                f"sis_stream._native.{name}",
                [path],
                define_macros=macros,
                include_dirs=[numpy.get_include(), "native"],
                depends=sorted(glob(os.path.join("native", "*.h"))),
                extra_compile_args=cflags,
            )
        )
    return cythonize(
        exts,
        include_path=["native"],
        compiler_directives=directives,
        build_dir="build/cython-debug" if debug else "build/cython",
        quiet=True,
    )


setup(ext_modules=_ext_modules())
