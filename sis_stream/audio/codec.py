"""G.711 u-law / A-law encode and decode between 16-bit PCM and 8-bit codes (ITU-T G.711)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, overload

import numpy as np

from .. import _backend
from ..errors import AudioFormatError

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "alaw_decode",
    "alaw_encode",
    "decode",
    "encode",
    "ulaw_decode",
    "ulaw_encode",
]

#: u-law code of a zero sample (positive zero; G.191 and audioop agree).
ULAW_SILENCE: Final = 0xFF
#: A-law code of a zero sample (0x80 with the even bits toggled).
ALAW_SILENCE: Final = 0xD5

#: PCM bytes are little-endian int16 (SIS, WAV). On a big-endian host the ``out=`` path swaps.
_BIG_ENDIAN: Final = sys.byteorder == "big"
_BYTE_FORMATS: Final = frozenset({"B", "b", "c"})
_INPUT_KINDS: Final = "bytes, bytearray, memoryview or a C-contiguous numpy array"
_INT16: Final = np.dtype(np.int16)
_UINT8: Final = np.dtype(np.uint8)

_BytesOrArray = TypeVar("_BytesOrArray", bytes, np.ndarray)
_Out = TypeVar("_Out", bytearray, memoryview, np.ndarray)


def _kind(obj: Any) -> str:
    if isinstance(obj, np.ndarray):
        return f"a numpy array of dtype {obj.dtype}"
    return type(obj).__name__


def _need(n_items: int, dtype: np.dtype) -> str:
    return f"{n_items} items of {dtype} ({n_items * dtype.itemsize} bytes)"


def _check_out(out: Any, n_items: int, dtype: np.dtype, func: str) -> np.ndarray:
    """Validate a caller's ``out`` and return a 1-D ndarray view of it with `dtype`."""
    if isinstance(out, np.ndarray):
        if out.dtype != dtype:
            raise TypeError(f"{func}: out must have dtype {dtype}, got dtype {out.dtype}")
        if not out.flags.c_contiguous:
            raise TypeError(f"{func}: out must be C-contiguous, got strides {out.strides}")
        if not out.flags.writeable:
            raise TypeError(f"{func}: out must be writable, got a read-only array")
        if out.size != n_items:
            raise AudioFormatError(
                f"{func}: out must hold {_need(n_items, dtype)}, got {out.size} items"
            )
        return out if out.ndim == 1 else out.reshape(-1)
    if isinstance(out, memoryview):
        if out.readonly:
            raise TypeError(f"{func}: out must be writable, got a read-only memoryview")
        if not out.c_contiguous:
            raise TypeError(f"{func}: out must be C-contiguous, got a non-contiguous memoryview")
    elif not isinstance(out, bytearray):
        raise TypeError(
            f"{func}: out must be a writable numpy array of dtype {dtype}, a bytearray or a "
            f"writable memoryview, got {_kind(out)}"
        )
    n_bytes = memoryview(out).nbytes
    if n_bytes != n_items * dtype.itemsize:
        raise AudioFormatError(
            f"{func}: out must hold {_need(n_items, dtype)}, got {n_bytes} bytes"
        )
    return np.frombuffer(out, dtype=dtype)


def _check_array(x: np.ndarray, dtype: np.dtype, what: str, func: str) -> np.ndarray:
    if x.dtype != dtype:
        raise TypeError(
            f"{func} expects {what} as {dtype} (native byte order), got an array of dtype {x.dtype}"
            "; convert explicitly, e.g. with .astype()"
        )
    if not x.flags.c_contiguous:
        raise TypeError(
            f"{func} expects a C-contiguous array, got strides {x.strides} for shape {x.shape}"
            "; use np.ascontiguousarray()"
        )
    # A view: C-contiguous arrays of any shape are coded element-wise.
    return x if x.ndim == 1 else x.reshape(-1)


def _check_bytes_like(x: Any, func: str, pcm: bool) -> int:
    """Validate a bytes-like input and return its length in bytes."""
    if isinstance(x, memoryview):
        if not x.c_contiguous:
            raise TypeError(f"{func} expects a C-contiguous memoryview, got a non-contiguous one")
        allowed = _BYTE_FORMATS | {"h"} if pcm else _BYTE_FORMATS
        if x.format not in allowed:
            raise TypeError(
                f"{func} expects a memoryview of format {' or '.join(sorted(allowed))!s}, "
                f"got format {x.format!r}"
            )
        n = x.nbytes
    else:
        n = len(x)
    if pcm and n % 2:
        raise AudioFormatError(
            f"{func}: 16-bit PCM must hold whole 2-byte samples, got {n} bytes (odd length)"
        )
    return n


def _encode(pcm: Any, out: Any, law: str) -> Any:
    func = f"{law}_encode"
    if isinstance(pcm, np.ndarray):
        flat = _check_array(pcm, _INT16, "PCM samples", func)
        if out is None:
            result = np.empty(pcm.shape, dtype=np.uint8)
            getattr(_backend.g711, func)(flat, result.reshape(-1))
            return result
        getattr(_backend.g711, func)(flat, _check_out(out, flat.size, _UINT8, func))
        return out
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        n_bytes = _check_bytes_like(pcm, func, pcm=True)
        if out is None:
            return getattr(_backend.g711, f"{func}_bytes")(pcm)
        samples = np.frombuffer(pcm, dtype="<i2") if n_bytes else np.empty(0, np.int16)
        if _BIG_ENDIAN:  # pragma: no cover - little-endian CI
            samples = samples.astype(np.int16)
        getattr(_backend.g711, func)(samples, _check_out(out, n_bytes // 2, _UINT8, func))
        return out
    raise TypeError(f"{func} expects PCM as {_INPUT_KINDS} of int16, got {_kind(pcm)}")


def _decode(codes: Any, out: Any, law: str) -> Any:
    func = f"{law}_decode"
    if isinstance(codes, np.ndarray):
        flat = _check_array(codes, _UINT8, "codes", func)
        if out is None:
            result = np.empty(codes.shape, dtype=np.int16)
            getattr(_backend.g711, func)(flat, result.reshape(-1))
            return result
        getattr(_backend.g711, func)(flat, _check_out(out, flat.size, _INT16, func))
        return out
    if isinstance(codes, (bytes, bytearray, memoryview)):
        n = _check_bytes_like(codes, func, pcm=False)
        if out is None:
            return getattr(_backend.g711, f"{func}_bytes")(codes)
        target = _check_out(out, n, _INT16, func)
        getattr(_backend.g711, func)(np.frombuffer(codes, dtype=np.uint8), target)
        if _BIG_ENDIAN and not isinstance(out, np.ndarray):  # pragma: no cover
            target.byteswap(inplace=True)  # bytes-like out holds little-endian PCM
        return out
    raise TypeError(f"{func} expects codes as {_INPUT_KINDS} of uint8, got {_kind(codes)}")


@overload
def ulaw_encode(pcm: bytes | bytearray | memoryview, out: None = None) -> bytes: ...
@overload
def ulaw_encode(pcm: np.ndarray, out: None = None) -> np.ndarray: ...
@overload
def ulaw_encode(pcm: Any, out: _Out) -> _Out: ...
def ulaw_encode(pcm: Any, out: Any = None) -> Any:
    """Encode 16-bit PCM to G.711 u-law codes, bit-exact with ITU-T G.191 ``ulaw_compress``.

    Parameters
    ----------
    pcm : bytes, bytearray, memoryview or numpy.ndarray
        Little-endian 16-bit PCM bytes (an even number of bytes; a memoryview may also have
        format ``'h'``), or a C-contiguous ``int16`` array of any shape (read-only is fine).
    out : numpy.ndarray, bytearray or memoryview, optional
        Preallocated writable destination for exactly one code per sample: a C-contiguous
        ``uint8`` array, a bytearray or a writable byte memoryview. Avoids an allocation.

    Returns
    -------
    bytes or numpy.ndarray
        `out` when given; otherwise bytes for bytes-like input and a ``uint8`` array of the
        input's shape for array input.

    Raises
    ------
    TypeError
        Unsupported input type, wrong dtype, non-contiguous input, or an unusable `out`.
    AudioFormatError
        Odd number of PCM bytes, or `out` of the wrong size.

    Notes
    -----
    Differs from ``audioop.lin2ulaw`` by one code on 508 negative inputs (see docs/g711.md).

    Examples
    --------
    >>> ulaw_encode(b"\\x00\\x00\\xff\\x7f")
    b'\\xff\\x80'
    """
    if out is None and type(pcm) is bytes and not len(pcm) & 1:
        return _backend.g711.ulaw_encode_bytes(pcm)  # the 20 ms hot path: one native call
    return _encode(pcm, out, "ulaw")


@overload
def alaw_encode(pcm: bytes | bytearray | memoryview, out: None = None) -> bytes: ...
@overload
def alaw_encode(pcm: np.ndarray, out: None = None) -> np.ndarray: ...
@overload
def alaw_encode(pcm: Any, out: _Out) -> _Out: ...
def alaw_encode(pcm: Any, out: Any = None) -> Any:
    """Encode 16-bit PCM to G.711 A-law codes, bit-exact with ITU-T G.191 ``alaw_compress``.

    Identical to ``audioop.lin2alaw`` for every input.

    Parameters
    ----------
    pcm : bytes, bytearray, memoryview or numpy.ndarray
        Little-endian 16-bit PCM bytes (an even number of bytes; a memoryview may also have
        format ``'h'``), or a C-contiguous ``int16`` array of any shape (read-only is fine).
    out : numpy.ndarray, bytearray or memoryview, optional
        Preallocated writable destination for exactly one code per sample: a C-contiguous
        ``uint8`` array, a bytearray or a writable byte memoryview. Avoids an allocation.

    Returns
    -------
    bytes or numpy.ndarray
        `out` when given; otherwise bytes for bytes-like input and a ``uint8`` array of the
        input's shape for array input.

    Raises
    ------
    TypeError
        Unsupported input type, wrong dtype, non-contiguous input, or an unusable `out`.
    AudioFormatError
        Odd number of PCM bytes, or `out` of the wrong size.

    Examples
    --------
    >>> alaw_encode(b"\\x00\\x00\\xff\\x7f")
    b'\\xd5\\xaa'
    """
    if out is None and type(pcm) is bytes and not len(pcm) & 1:
        return _backend.g711.alaw_encode_bytes(pcm)
    return _encode(pcm, out, "alaw")


@overload
def ulaw_decode(codes: bytes | bytearray | memoryview, out: None = None) -> bytes: ...
@overload
def ulaw_decode(codes: np.ndarray, out: None = None) -> np.ndarray: ...
@overload
def ulaw_decode(codes: Any, out: _Out) -> _Out: ...
def ulaw_decode(codes: Any, out: Any = None) -> Any:
    """Decode G.711 u-law codes to 16-bit PCM (G.191 ``ulaw_expand``; equals ``audioop.ulaw2lin``).

    Parameters
    ----------
    codes : bytes, bytearray, memoryview or numpy.ndarray
        One code per byte, or a C-contiguous ``uint8`` array of any shape (read-only is fine).
    out : numpy.ndarray, bytearray or memoryview, optional
        Preallocated writable destination for exactly one sample per code: a C-contiguous
        ``int16`` array, or a bytearray / writable byte memoryview of twice ``len(codes)``
        bytes (filled with little-endian PCM). Avoids an allocation.

    Returns
    -------
    bytes or numpy.ndarray
        `out` when given; otherwise little-endian PCM bytes for bytes-like input and an
        ``int16`` array of the input's shape for array input.

    Raises
    ------
    TypeError
        Unsupported input type, wrong dtype, non-contiguous input, or an unusable `out`.
    AudioFormatError
        `out` of the wrong size.

    Examples
    --------
    >>> ulaw_decode(bytes([ULAW_SILENCE, 0x80]))
    b'\\x00\\x00|}'
    """
    if out is None and type(codes) is bytes:
        return _backend.g711.ulaw_decode_bytes(codes)
    return _decode(codes, out, "ulaw")


@overload
def alaw_decode(codes: bytes | bytearray | memoryview, out: None = None) -> bytes: ...
@overload
def alaw_decode(codes: np.ndarray, out: None = None) -> np.ndarray: ...
@overload
def alaw_decode(codes: Any, out: _Out) -> _Out: ...
def alaw_decode(codes: Any, out: Any = None) -> Any:
    """Decode G.711 A-law codes to 16-bit PCM (G.191 ``alaw_expand``; equals ``audioop.alaw2lin``).

    Parameters
    ----------
    codes : bytes, bytearray, memoryview or numpy.ndarray
        One code per byte, or a C-contiguous ``uint8`` array of any shape (read-only is fine).
    out : numpy.ndarray, bytearray or memoryview, optional
        Preallocated writable destination for exactly one sample per code: a C-contiguous
        ``int16`` array, or a bytearray / writable byte memoryview of twice ``len(codes)``
        bytes (filled with little-endian PCM). Avoids an allocation.

    Returns
    -------
    bytes or numpy.ndarray
        `out` when given; otherwise little-endian PCM bytes for bytes-like input and an
        ``int16`` array of the input's shape for array input.

    Raises
    ------
    TypeError
        Unsupported input type, wrong dtype, non-contiguous input, or an unusable `out`.
    AudioFormatError
        `out` of the wrong size.

    Examples
    --------
    >>> alaw_decode(bytes([ALAW_SILENCE]))
    b'\\x08\\x00'
    """
    if out is None and type(codes) is bytes:
        return _backend.g711.alaw_decode_bytes(codes)
    return _decode(codes, out, "alaw")


#: The pure-Python wrappers above: the whole contract, and what the compiled front-ends delegate
#: every call but the hot one to (the public names below are these when g711 runs on numpy).
_PY_WRAPPERS: Final = {
    "ulaw_encode": ulaw_encode,
    "ulaw_decode": ulaw_decode,
    "alaw_encode": alaw_encode,
    "alaw_decode": alaw_decode,
}


def _native_g711() -> ModuleType | None:
    """The compiled g711 kernel module if ``_backend`` selected it at import, else None."""
    if _backend.NO_EXTENSIONS or "g711" in _backend.NATIVE_IMPORT_ERRORS:
        return None
    return _backend.g711


def _bind_front_ends(native: ModuleType) -> dict[str, Callable[..., Any]]:
    """Give the native module our wrappers and return its compiled front-ends, dressed as ours.

    A Python frame around the native call costs about as much as decoding a 20 ms frame, so the
    public functions are compiled front-ends (``native/g711.pyx``) that decode or encode
    ``bytes`` without ``out=`` in C while ``_backend.g711`` is the native module, and hand every
    other call to the wrapper of the same name above. Semantics are therefore the wrappers'.
    """
    native._bind_front_ends(
        _backend.__dict__,
        native,
        *(_PY_WRAPPERS[n] for n in ("ulaw_encode", "ulaw_decode", "alaw_encode", "alaw_decode")),
    )
    fronts: dict[str, Callable[..., Any]] = {}
    for name, wrapper in _PY_WRAPPERS.items():
        front = getattr(native, f"_{name}_front")
        front.__name__ = front.__qualname__ = name
        front.__module__ = __name__
        front.__doc__ = wrapper.__doc__
        front.__wrapped__ = wrapper  # inspect.signature() and help() show the wrapper's
        fronts[name] = front
    return fronts


if not TYPE_CHECKING and (_native := _native_g711()) is not None:
    _fronts = _bind_front_ends(_native)
    ulaw_encode = _fronts["ulaw_encode"]
    ulaw_decode = _fronts["ulaw_decode"]
    alaw_encode = _fronts["alaw_encode"]
    alaw_decode = _fronts["alaw_decode"]
    del _fronts
if not TYPE_CHECKING:
    del _native

_ENCODERS: Final = {"ulaw": ulaw_encode, "alaw": alaw_encode}
_DECODERS: Final = {"ulaw": ulaw_decode, "alaw": alaw_decode}


def encode(pcm: _BytesOrArray, encoding: Literal["pcm", "ulaw", "alaw"]) -> _BytesOrArray:
    """Encode 16-bit PCM for an ``AudioFormat.encoding``; ``"pcm"`` returns `pcm` unchanged.

    Parameters
    ----------
    pcm : bytes or numpy.ndarray
        As for :func:`ulaw_encode`.
    encoding : {"pcm", "ulaw", "alaw"}
        Target encoding.

    Returns
    -------
    bytes or numpy.ndarray
        The codes (or `pcm` itself for ``"pcm"``).

    Raises
    ------
    AudioFormatError
        Unknown `encoding`, or as :func:`ulaw_encode`.
    """
    if encoding == "pcm":
        return pcm
    try:
        encoder = _ENCODERS[encoding]
    except (KeyError, TypeError):
        raise AudioFormatError(
            f"encoding must be 'pcm', 'ulaw' or 'alaw', got {encoding!r}"
        ) from None
    return encoder(pcm)


def decode(data: _BytesOrArray, encoding: Literal["pcm", "ulaw", "alaw"]) -> _BytesOrArray:
    """Decode audio in an ``AudioFormat.encoding`` to 16-bit PCM; ``"pcm"`` returns `data` as is.

    Parameters
    ----------
    data : bytes or numpy.ndarray
        As for :func:`ulaw_decode` (or PCM for ``"pcm"``).
    encoding : {"pcm", "ulaw", "alaw"}
        Encoding of `data`.

    Returns
    -------
    bytes or numpy.ndarray
        16-bit PCM (little-endian bytes for bytes-like input).

    Raises
    ------
    AudioFormatError
        Unknown `encoding`, or as :func:`ulaw_decode`.
    """
    if encoding == "pcm":
        return data
    try:
        decoder = _DECODERS[encoding]
    except (KeyError, TypeError):
        raise AudioFormatError(
            f"encoding must be 'pcm', 'ulaw' or 'alaw', got {encoding!r}"
        ) from None
    return decoder(data)
