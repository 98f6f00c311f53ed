"""Pure-numpy G.711 u-law / A-law kernels: the fallback and test oracle for native/g711.pyx.

Written from ITU-T G.711 as the ITU-T G.191 software tool library (``g711.c``) realises it, not
from the .pyx: each code is computed by a vectorised formula over all inputs once at import, and
the kernels are then table look-ups (``np.take``). Same names and signatures as the native kernels.

Input scaling (G.191): u-law quantises the 14-bit value ``x >> 2``, A-law the 12-bit value
``x >> 4`` (the 13-bit value ``x >> 3`` with its LSB dropped by the first segment). Negative inputs
use the one's complement ``~x = -x - 1`` before the shift, so -1 encodes like 0 with the sign
bit cleared. u-law adds the bias 33 (0x84 >> 2) and clips the biased magnitude at 0x1FFF.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "alaw_decode",
    "alaw_decode_bytes",
    "alaw_encode",
    "alaw_encode_bytes",
    "ulaw_decode",
    "ulaw_decode_bytes",
    "ulaw_encode",
    "ulaw_encode_bytes",
]


def _ulaw_encode_formula(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int32)
    # Magnitude on the 14-bit scale (one's complement for negatives), biased by 33, clipped.
    mag = np.where(x < 0, ~x, x) >> 2
    biased = np.minimum(mag + 33, 0x1FFF)
    # Segment number 1..8: one more than the bit length of biased >> 6 (segment ends 64 * 2**k).
    segno = 1 + sum((biased >= (64 << k)).astype(np.int32) for k in range(7))
    mantissa = (biased >> segno) & 0xF
    code = ((8 - segno) << 4) | (0xF - mantissa)
    return (code | np.where(x >= 0, 0x80, 0)).astype(np.uint8)


def _alaw_encode_formula(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int32)
    mag = np.where(x < 0, ~x, x) >> 4  # 0..2047
    # Exponent 0 for mag < 16, else 1 + the number of halvings that bring mag below 32.
    exponent = sum((mag >= (16 << k)).astype(np.int32) for k in range(7))
    mantissa = np.where(exponent == 0, mag, (mag >> np.maximum(exponent - 1, 0)) - 16) & 0xF
    code = (exponent << 4) | mantissa | np.where(x >= 0, 0x80, 0)
    return (code ^ 0x55).astype(np.uint8)  # even-bit inversion


def _ulaw_decode_formula(c: np.ndarray) -> np.ndarray:
    c = c.astype(np.int32)
    inv = ~c & 0xFF
    exponent = (inv >> 4) & 7
    mantissa = inv & 0xF
    # Interval midpoint on the 16-bit scale: (2m + 33) * 4 * 2**e, minus the bias 132 (0x84).
    mag = ((2 * mantissa + 33) << (exponent + 2)) - 132
    return np.where(c & 0x80, mag, -mag).astype(np.int16)


def _alaw_decode_formula(c: np.ndarray) -> np.ndarray:
    c = c.astype(np.int32) ^ 0x55
    exponent = (c >> 4) & 7
    mantissa = c & 0xF
    # Interval midpoint: (2m + 1) * 8 in the first segment, (2m + 33) * 4 * 2**e above it.
    mag = np.where(exponent == 0, (2 * mantissa + 1) << 3, (2 * mantissa + 33) << (exponent + 2))
    return np.where(c & 0x80, mag, -mag).astype(np.int16)


# Tables indexed by the int16 bit pattern read as uint16 (encode) or by the code (decode).
_ALL_PCM = np.arange(65536, dtype=np.uint16).view(np.int16)
_ALL_CODES = np.arange(256, dtype=np.uint8)
_ULAW_ENC = _ulaw_encode_formula(_ALL_PCM)
_ALAW_ENC = _alaw_encode_formula(_ALL_PCM)
_ULAW_DEC = _ulaw_decode_formula(_ALL_CODES)
_ALAW_DEC = _alaw_decode_formula(_ALL_CODES)
for _t in (_ULAW_ENC, _ALAW_ENC, _ULAW_DEC, _ALAW_DEC):
    _t.flags.writeable = False


def _view(buf: Any, dtype: type, what: str, writable: bool = False) -> np.ndarray:
    # Mirrors what a Cython ``const T[::1]`` / ``T[::1]`` argument accepts: a C-contiguous
    # one-dimensional buffer of exactly that item type (and writable for an output).
    arr = (
        np.asarray(buf) if not isinstance(buf, (bytes, bytearray)) else np.frombuffer(buf, np.uint8)
    )
    if arr.dtype != np.dtype(dtype):
        raise ValueError(
            f"Buffer dtype mismatch for {what}: expected {np.dtype(dtype)}, got {arr.dtype}"
        )
    if arr.ndim != 1:
        raise ValueError(
            f"Buffer has wrong number of dimensions for {what} (expected 1, got {arr.ndim})"
        )
    if not arr.flags.c_contiguous:
        raise ValueError(f"ndarray is not C-contiguous ({what})")
    if writable and not arr.flags.writeable:
        raise ValueError(f"buffer source array is read-only ({what})")
    return arr


def _lut(
    table: np.ndarray, src: Any, src_dtype: type, out: Any, out_dtype: type, index_dtype: type
) -> int:
    x = _view(src, src_dtype, "input")
    y = _view(out, out_dtype, "out", writable=True)
    n = x.shape[0]
    if y.shape[0] < n:
        raise ValueError(f"out holds {y.shape[0]} items, the input needs {n}")
    np.take(table, x.view(index_dtype), out=y[:n])
    return n


def ulaw_encode(pcm: Any, out: Any) -> int:
    """Encode int16 PCM to u-law codes in ``out[:len(pcm)]``; return the number of codes."""
    return _lut(_ULAW_ENC, pcm, np.int16, out, np.uint8, np.uint16)


def ulaw_decode(codes: Any, out: Any) -> int:
    """Decode u-law codes to int16 PCM in ``out[:len(codes)]``; return the number of samples."""
    return _lut(_ULAW_DEC, codes, np.uint8, out, np.int16, np.uint8)


def alaw_encode(pcm: Any, out: Any) -> int:
    """Encode int16 PCM to A-law codes in ``out[:len(pcm)]``; return the number of codes."""
    return _lut(_ALAW_ENC, pcm, np.int16, out, np.uint8, np.uint16)


def alaw_decode(codes: Any, out: Any) -> int:
    """Decode A-law codes to int16 PCM in ``out[:len(codes)]``; return the number of samples."""
    return _lut(_ALAW_DEC, codes, np.uint8, out, np.int16, np.uint8)


def _bytes_in(data: Any) -> np.ndarray:
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def _encode_bytes(table: np.ndarray, pcm: Any) -> bytes:
    raw = _bytes_in(pcm)
    if raw.size % 2:
        raise ValueError(f"PCM must hold whole 2-byte samples, got {raw.size} bytes")
    return np.take(table, raw.view("<u2")).tobytes()


def _decode_bytes(table: np.ndarray, codes: Any) -> bytes:
    return np.take(table, _bytes_in(codes)).astype("<i2", copy=False).tobytes()


def ulaw_encode_bytes(pcm: Any) -> bytes:
    """Encode a C-contiguous buffer of little-endian int16 PCM to a bytes object of u-law codes."""
    return _encode_bytes(_ULAW_ENC, pcm)


def ulaw_decode_bytes(codes: Any) -> bytes:
    """Decode a C-contiguous buffer of u-law codes to little-endian int16 PCM bytes."""
    return _decode_bytes(_ULAW_DEC, codes)


def alaw_encode_bytes(pcm: Any) -> bytes:
    """Encode a C-contiguous buffer of little-endian int16 PCM to a bytes object of A-law codes."""
    return _encode_bytes(_ALAW_ENC, pcm)


def alaw_decode_bytes(codes: Any) -> bytes:
    """Decode a C-contiguous buffer of A-law codes to little-endian int16 PCM bytes."""
    return _decode_bytes(_ALAW_DEC, codes)
