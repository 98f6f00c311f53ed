"""Type stub for the compiled G.711 kernels (native/g711.pyx); the numpy twin is _reference/g711.py."""

from typing_extensions import Buffer

def ulaw_encode(pcm: Buffer, out: Buffer) -> int:
    """Encode int16 PCM to u-law codes in ``out[:len(pcm)]``; return the number of codes."""

def ulaw_decode(codes: Buffer, out: Buffer) -> int:
    """Decode u-law codes to int16 PCM in ``out[:len(codes)]``; return the number of samples."""

def alaw_encode(pcm: Buffer, out: Buffer) -> int:
    """Encode int16 PCM to A-law codes in ``out[:len(pcm)]``; return the number of codes."""

def alaw_decode(codes: Buffer, out: Buffer) -> int:
    """Decode A-law codes to int16 PCM in ``out[:len(codes)]``; return the number of samples."""

def ulaw_encode_bytes(pcm: Buffer) -> bytes:
    """Encode a C-contiguous buffer of little-endian int16 PCM to a bytes object of u-law codes."""

def ulaw_decode_bytes(codes: Buffer) -> bytes:
    """Decode a C-contiguous buffer of u-law codes to little-endian int16 PCM bytes."""

def alaw_encode_bytes(pcm: Buffer) -> bytes:
    """Encode a C-contiguous buffer of little-endian int16 PCM to a bytes object of A-law codes."""

def alaw_decode_bytes(codes: Buffer) -> bytes:
    """Decode a C-contiguous buffer of A-law codes to little-endian int16 PCM bytes."""

# Compiled front-ends that sis_stream.audio.codec binds as its public functions when this module is the
# selected backend (bytes without ``out`` decoded/encoded in C; everything else delegated to the
# codec's Python wrappers registered with ``_bind_front_ends``).
def _bind_front_ends(
    backend_ns: dict[str, object] | None,
    self_module: object,
    ulaw_encode: object,
    ulaw_decode: object,
    alaw_encode: object,
    alaw_decode: object,
) -> None: ...
def _ulaw_encode_front(pcm: object, out: object = None) -> object: ...
def _alaw_encode_front(pcm: object, out: object = None) -> object: ...
def _ulaw_decode_front(codes: object, out: object = None) -> object: ...
def _alaw_decode_front(codes: object, out: object = None) -> object: ...
