# cython: language_level=3
"""G.711 u-law / A-law kernels, bit-exact with the ITU-T G.191 STL ``g711.c``; table driven."""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItemWithError
from cpython.ref cimport PyObject

from _types cimport code8_t, int16_t, load_le16, pcm16_t, store_le16, uint16_t, uint32_t

# Tables built once at import from the G.191 algorithms below. Encode tables are indexed by the
# 16-bit pattern of the sample read as uint16 (65,536 entries: every possible input), decode
# tables by the code (256 entries). The decode tables also keep the little-endian byte pattern
# of each sample for the bytes fast path.
cdef code8_t _ULAW_ENC[65536]
cdef code8_t _ALAW_ENC[65536]
cdef pcm16_t _ULAW_DEC[256]
cdef pcm16_t _ALAW_DEC[256]
cdef uint16_t _ULAW_DEC_LE[256]
cdef uint16_t _ALAW_DEC_LE[256]
# Two codes at a time for the bytes fast path: indexed by code0 | code1 << 8, each entry holds
# the 4 bytes of both little-endian samples (256 KiB per law; halves the look-ups per frame).
cdef uint32_t _ULAW_DEC2_LE[65536]
cdef uint32_t _ALAW_DEC2_LE[65536]


cdef code8_t _ulaw_compress(int x) noexcept nogil:
    # G.191 ulaw_compress: 14-bit magnitude (x >> 2; one's complement ~x for negatives, so -1
    # behaves like 0), plus 33 (= 0x84 >> 2, the u-law bias on the 14-bit scale), clipped at
    # 0x1FFF; segno 1..8 from the position of the leading one above bit 5.
    cdef int absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    cdef int i, segno = 1
    if absno > 0x1FFF:
        absno = 0x1FFF
    i = absno >> 6
    while i != 0:
        segno += 1
        i >>= 1
    cdef int code = ((8 - segno) << 4) | (0xF - ((absno >> segno) & 0xF))
    if x >= 0:
        code |= 0x80  # sign bit set for non-negative samples
    return <code8_t>code


cdef code8_t _alaw_compress(int x) noexcept nogil:
    # G.191 alaw_compress: 12-bit magnitude x >> 4 (one's complement for negatives), exponent
    # from the number of halvings that bring it below 32, leading one removed, even bits
    # toggled (XOR 0x55).
    cdef int ix = ((~x) >> 4) if x < 0 else (x >> 4)
    cdef int iexp
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80
    return <code8_t>(ix ^ 0x55)


cdef int16_t _ulaw_expand(int code) noexcept nogil:
    # G.191 ulaw_expand: midpoint of the quantisation interval on the 16-bit scale minus the
    # bias 4 * 33 = 132 (0x84).
    cdef int inv = (~code) & 0xFF  # one's complement of the 8-bit code
    cdef int exponent = (inv >> 4) & 7
    cdef int mantissa = inv & 0xF
    cdef int step = 4 << (exponent + 1)
    cdef int mag = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    return <int16_t>(mag if code >= 0x80 else -mag)


cdef int16_t _alaw_expand(int code) noexcept nogil:
    # G.191 alaw_expand: re-toggle even bits, add the leading one above segment 0, then half a
    # quantisation step (the 0x8), shift by the exponent.
    cdef int ix = (code ^ 0x55) & 0x7F
    cdef int iexp = ix >> 4
    cdef int mant = ix & 0xF
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x8
    if iexp > 1:
        mant <<= iexp - 1
    return <int16_t>(mant if code > 127 else -mant)


cdef void _build_tables() noexcept nogil:
    cdef int i
    for i in range(65536):
        # i is the uint16 bit pattern; <int16_t> reinterprets it as the signed sample.
        _ULAW_ENC[i] = _ulaw_compress(<int16_t>i)
        _ALAW_ENC[i] = _alaw_compress(<int16_t>i)
    for i in range(256):
        _ULAW_DEC[i] = _ulaw_expand(i)
        _ALAW_DEC[i] = _alaw_expand(i)
        store_le16(<unsigned char*>&_ULAW_DEC_LE[i], <uint16_t>_ULAW_DEC[i])
        store_le16(<unsigned char*>&_ALAW_DEC_LE[i], <uint16_t>_ALAW_DEC[i])
    for i in range(65536):
        # Byte 0 of a little-endian pair index is the first code (i & 0xFF), byte 1 the second.
        store_le16(<unsigned char*>&_ULAW_DEC2_LE[i], <uint16_t>_ULAW_DEC[i & 0xFF])
        store_le16(<unsigned char*>&_ULAW_DEC2_LE[i] + 2, <uint16_t>_ULAW_DEC[i >> 8])
        store_le16(<unsigned char*>&_ALAW_DEC2_LE[i], <uint16_t>_ALAW_DEC[i & 0xFF])
        store_le16(<unsigned char*>&_ALAW_DEC2_LE[i] + 2, <uint16_t>_ALAW_DEC[i >> 8])


_build_tables()


# --- memoryview kernels: the contract (house style B). The wrapper allocates `out`. ------------

cdef int _encode_impl(const pcm16_t[::1] pcm, code8_t[::1] out, const code8_t* table,
                      Py_ssize_t n) except -1 nogil:
    cdef Py_ssize_t i
    for i in range(n):
        # In bounds: i < n <= len(pcm) <= len(out) (checked by the caller); the table has
        # 65,536 entries and <uint16_t> maps every int16 to 0..65535.
        out[i] = table[<uint16_t>pcm[i]]
    return 0


cdef int _decode_impl(const code8_t[::1] codes, pcm16_t[::1] out, const pcm16_t* table,
                      Py_ssize_t n) except -1 nogil:
    cdef Py_ssize_t i
    for i in range(n):
        # In bounds: i < n <= len(codes) <= len(out); a uint8 code indexes a 256-entry table.
        out[i] = table[codes[i]]
    return 0


cdef inline Py_ssize_t _check_out(Py_ssize_t n_in, Py_ssize_t n_out) except -1:
    if n_out < n_in:
        raise ValueError(f"out holds {n_out} items, the input needs {n_in}")
    return n_in


def ulaw_encode(const int16_t[::1] pcm, code8_t[::1] out) -> int:
    """Encode int16 PCM to u-law codes in ``out[:len(pcm)]``; return the number of codes."""
    cdef Py_ssize_t n = _check_out(pcm.shape[0], out.shape[0])
    if n < _NOGIL_MIN:  # a 20 ms frame: keep the GIL, releasing it costs more than the loop
        _encode_impl(pcm, out, _ULAW_ENC, n)
    else:
        with nogil:
            _encode_impl(pcm, out, _ULAW_ENC, n)
    return n


def ulaw_decode(const code8_t[::1] codes, int16_t[::1] out) -> int:
    """Decode u-law codes to int16 PCM in ``out[:len(codes)]``; return the number of samples."""
    cdef Py_ssize_t n = _check_out(codes.shape[0], out.shape[0])
    if n < _NOGIL_MIN:  # a 20 ms frame: keep the GIL, releasing it costs more than the loop
        _decode_impl(codes, out, _ULAW_DEC, n)
    else:
        with nogil:
            _decode_impl(codes, out, _ULAW_DEC, n)
    return n


def alaw_encode(const int16_t[::1] pcm, code8_t[::1] out) -> int:
    """Encode int16 PCM to A-law codes in ``out[:len(pcm)]``; return the number of codes."""
    cdef Py_ssize_t n = _check_out(pcm.shape[0], out.shape[0])
    if n < _NOGIL_MIN:  # a 20 ms frame: keep the GIL, releasing it costs more than the loop
        _encode_impl(pcm, out, _ALAW_ENC, n)
    else:
        with nogil:
            _encode_impl(pcm, out, _ALAW_ENC, n)
    return n


def alaw_decode(const code8_t[::1] codes, int16_t[::1] out) -> int:
    """Decode A-law codes to int16 PCM in ``out[:len(codes)]``; return the number of samples."""
    cdef Py_ssize_t n = _check_out(codes.shape[0], out.shape[0])
    if n < _NOGIL_MIN:  # a 20 ms frame: keep the GIL, releasing it costs more than the loop
        _decode_impl(codes, out, _ALAW_DEC, n)
    else:
        with nogil:
            _decode_impl(codes, out, _ALAW_DEC, n)
    return n


# --- bytes fast path ------------------------------------------------------------------------
# A 20 ms frame is only 160 samples, so per-call overhead dominates: acquiring two typed
# memoryviews plus a bytearray -> bytes copy costs more than the look-ups. These entry points take
# one plain Py_buffer and fill a bytes object created uninitialised, the one allocation the
# wrapper cannot make itself without a copy. PCM bytes are little-endian (SIS, WAV) on any host.

# Below this many items the GIL stays held: releasing and re-taking it costs more than the loop.
cdef enum:
    _NOGIL_MIN = 4096


cdef bytes _encode_bytes(object pcm, const code8_t* table):
    cdef Py_buffer view
    cdef bytes result
    cdef Py_ssize_t n
    if type(pcm) is bytes:  # no buffer protocol round trip for the common case
        n = PyBytes_GET_SIZE(pcm)
        if n % 2:
            raise ValueError(f"PCM must hold whole 2-byte samples, got {n} bytes")
        result = PyBytes_FromStringAndSize(NULL, n // 2)
        _encode_ptr_impl(<const unsigned char*>PyBytes_AS_STRING(pcm),
                         <unsigned char*>PyBytes_AS_STRING(result), table, n // 2)
        return result
    PyObject_GetBuffer(pcm, &view, PyBUF_SIMPLE)  # C-contiguous bytes or BufferError
    try:
        if view.len % 2:
            raise ValueError(f"PCM must hold whole 2-byte samples, got {view.len} bytes")
        result = PyBytes_FromStringAndSize(NULL, view.len // 2)
        _encode_ptr_impl(<const unsigned char*>view.buf, <unsigned char*>PyBytes_AS_STRING(result),
                         table, view.len // 2)
    finally:
        PyBuffer_Release(&view)
    return result


cdef void _encode_ptr_impl(const unsigned char* src, unsigned char* dst, const code8_t* table,
                           Py_ssize_t n) noexcept:
    # Callers pass src with 2n readable bytes and dst with n writable bytes.
    if n < _NOGIL_MIN:
        _encode_ptr_loop(src, dst, table, n)
    else:
        with nogil:
            _encode_ptr_loop(src, dst, table, n)


cdef inline void _encode_ptr_loop(const unsigned char* src, unsigned char* dst,
                                  const code8_t* table, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        # In bounds: byte 2i + 1 < 2n, i < n; the table has one entry per uint16.
        dst[i] = table[load_le16(src + 2 * i)]


cdef void _decode_ptr_impl(const unsigned char* src, uint16_t* dst, const uint16_t* table_le,
                           const uint32_t* table2_le, Py_ssize_t n) noexcept:
    # Callers pass src with n readable bytes and a 4-byte aligned dst with room for n uint16.
    if n < _NOGIL_MIN:
        _decode_ptr_loop(src, dst, table_le, table2_le, n)
    else:
        with nogil:
            _decode_ptr_loop(src, dst, table_le, table2_le, n)


cdef inline void _decode_ptr_loop(const unsigned char* src, uint16_t* dst,
                                  const uint16_t* table_le, const uint32_t* table2_le,
                                  Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j, half = n // 2
    cdef uint32_t* dst2 = <uint32_t*>dst
    for j in range(half):
        # In bounds: bytes 2j, 2j + 1 < 2 * half <= n; dst2[j] covers dst[2j], dst[2j + 1];
        # a uint16 pair index addresses the 65,536-entry pair table.
        dst2[j] = table2_le[load_le16(src + 2 * j)]
    if n % 2:
        dst[n - 1] = table_le[src[n - 1]]  # the odd last code


cdef bytes _decode_bytes(object codes, const uint16_t* table_le, const uint32_t* table2_le):
    # The bytes payload is 8-byte aligned (CPython object layout), so uint16 stores into it are
    # aligned; table_le already holds each sample's little-endian byte pattern.
    cdef Py_buffer view
    cdef bytes result
    cdef Py_ssize_t n
    if type(codes) is bytes:
        n = PyBytes_GET_SIZE(codes)
        result = PyBytes_FromStringAndSize(NULL, 2 * n)
        _decode_ptr_impl(<const unsigned char*>PyBytes_AS_STRING(codes),
                         <uint16_t*>PyBytes_AS_STRING(result), table_le, table2_le, n)
        return result
    PyObject_GetBuffer(codes, &view, PyBUF_SIMPLE)
    try:
        result = PyBytes_FromStringAndSize(NULL, 2 * view.len)
        _decode_ptr_impl(<const unsigned char*>view.buf, <uint16_t*>PyBytes_AS_STRING(result),
                         table_le, table2_le, view.len)
    finally:
        PyBuffer_Release(&view)
    return result


def ulaw_encode_bytes(pcm) -> bytes:
    """Encode a C-contiguous buffer of little-endian int16 PCM to a bytes object of u-law codes."""
    return _encode_bytes(pcm, _ULAW_ENC)


def ulaw_decode_bytes(codes) -> bytes:
    """Decode a C-contiguous buffer of u-law codes to little-endian int16 PCM bytes."""
    return _decode_bytes(codes, _ULAW_DEC_LE, _ULAW_DEC2_LE)


def alaw_encode_bytes(pcm) -> bytes:
    """Encode a C-contiguous buffer of little-endian int16 PCM to a bytes object of A-law codes."""
    return _encode_bytes(pcm, _ALAW_ENC)


def alaw_decode_bytes(codes) -> bytes:
    """Decode a C-contiguous buffer of A-law codes to little-endian int16 PCM bytes."""
    return _decode_bytes(codes, _ALAW_DEC_LE, _ALAW_DEC2_LE)



# --- compiled front-ends for the public codec functions -------------------------------------
# A Python-level wrapper frame costs about as much as decoding a whole 20 ms frame, so
# sis_stream.audio.codec binds these as its public ulaw_decode & co when _backend selected this module.
# Each handles only the hot case, ``bytes`` input without ``out``, in C; every other call goes,
# unchanged, to the Python wrapper the codec registered (``_bind_front_ends``), which owns all
# validation and error messages. The fast path is taken only while ``_backend.g711`` is this
# module: the test fixture that swaps in the reference kernels then reaches them through the
# wrapper, exactly as the pure-Python wrapper would.

cdef dict _backend_ns = None  # sis_stream._backend.__dict__
cdef object _self_module = None  # this module, as _backend holds it
cdef object _py_ulaw_encode = None
cdef object _py_ulaw_decode = None
cdef object _py_alaw_encode = None
cdef object _py_alaw_decode = None


def _bind_front_ends(backend_ns, self_module, ulaw_encode, ulaw_decode, alaw_encode,
                     alaw_decode):
    """Register the codec's Python wrappers and the ``_backend`` namespace (called by codec)."""
    global _backend_ns, _self_module
    global _py_ulaw_encode, _py_ulaw_decode, _py_alaw_encode, _py_alaw_decode
    _backend_ns = backend_ns
    _self_module = self_module
    _py_ulaw_encode, _py_ulaw_decode = ulaw_encode, ulaw_decode
    _py_alaw_encode, _py_alaw_decode = alaw_encode, alaw_decode


cdef inline bint _native_selected() except -1:
    # One dict look-up with an interned key: is this module still _backend's g711 kernel?
    if _backend_ns is None:
        raise RuntimeError("sis_stream._native.g711 front-ends used before sis_stream.audio.codec bound them")
    return PyDict_GetItemWithError(_backend_ns, "g711") == <PyObject*>_self_module


def _ulaw_encode_front(pcm, out=None):
    """Compiled front-end of :func:`sis_stream.audio.codec.ulaw_encode` (docstring set by the codec)."""
    if out is None and type(pcm) is bytes and not (PyBytes_GET_SIZE(pcm) & 1) and _native_selected():
        return _encode_bytes(pcm, _ULAW_ENC)
    return _py_ulaw_encode(pcm, out)


def _alaw_encode_front(pcm, out=None):
    """Compiled front-end of :func:`sis_stream.audio.codec.alaw_encode` (docstring set by the codec)."""
    if out is None and type(pcm) is bytes and not (PyBytes_GET_SIZE(pcm) & 1) and _native_selected():
        return _encode_bytes(pcm, _ALAW_ENC)
    return _py_alaw_encode(pcm, out)


def _ulaw_decode_front(codes, out=None):
    """Compiled front-end of :func:`sis_stream.audio.codec.ulaw_decode` (docstring set by the codec)."""
    if out is None and type(codes) is bytes and _native_selected():
        return _decode_bytes(codes, _ULAW_DEC_LE, _ULAW_DEC2_LE)
    return _py_ulaw_decode(codes, out)


def _alaw_decode_front(codes, out=None):
    """Compiled front-end of :func:`sis_stream.audio.codec.alaw_decode` (docstring set by the codec)."""
    if out is None and type(codes) is bytes and _native_selected():
        return _decode_bytes(codes, _ALAW_DEC_LE, _ALAW_DEC2_LE)
    return _py_alaw_decode(codes, out)
