# cython: language_level=3
"""Polyphase FIR resampling kernel (rational up/down) with explicit state (history + phase)."""

from libc.stdint cimport int16_t
from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS,
    PyBUF_FORMAT,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython cimport array
from cpython.dict cimport PyDict_GetItemWithError
from cpython.object cimport PyObject
from libc.string cimport memcpy

cimport numpy as cnp

cnp.import_array()

# Notation (shared with sis_stream/_reference/resample.py and sis_stream/_filters.py):
#   L = up, M = down, K = taps per phase, taps[p, i] = h[p + (K - 1 - i) * L] (flipped phase p).
#   buf = history (K - 1 samples) followed by the new chunk, nb = K - 1 + n_in samples.
#   Output m of the call sits at up-sampled position u = phase + m * M (relative to the chunk's
#   first sample times L): its window is buf[s : s + K] with s = u // L, its phase p = u % L,
#   and y[m] = sum_i taps[p, i] * buf[s + i].
# Every output is one sequential float32 sum over i = 0..K-1 starting from 0.0f, whichever loop
# computes it (vector block or scalar tail), so the result does not depend on how the stream was
# chunked: stream == one-shot holds bit for bit.

cdef extern from "resample_kernels.h":
    void sis_rs_run_generic(const float* taps, Py_ssize_t K, const float* buf, Py_ssize_t nb,
                            float* streams, Py_ssize_t phase, Py_ssize_t L, Py_ssize_t M,
                            float* y, Py_ssize_t n_out) noexcept nogil
    void sis_rs_run_avx2(const float* taps, Py_ssize_t K, const float* buf, Py_ssize_t nb,
                         float* streams, Py_ssize_t phase, Py_ssize_t L, Py_ssize_t M,
                         float* y, Py_ssize_t n_out) noexcept nogil
    void sis_rs_run_avx512(const float* taps, Py_ssize_t K, const float* buf, Py_ssize_t nb,
                           float* streams, Py_ssize_t phase, Py_ssize_t L, Py_ssize_t M,
                           float* y, Py_ssize_t n_out) noexcept nogil
    int sis_rs_isa_level() noexcept nogil
    Py_ssize_t sis_rs_store_out(int isa, Py_ssize_t L, int out_i16, const float* y, void* out,
                                Py_ssize_t n) noexcept nogil
    void sis_rs_load_i16_avx2(const int16_t* x, float* buf, Py_ssize_t n) noexcept nogil
    void sis_rs_load_i16(const int16_t* x, float* buf, Py_ssize_t n) noexcept nogil

# Chosen once at import: every call in a process uses the same code, so results are reproducible
# within the process. AVX2+FMA and AVX-512 give identical results (every multiply-add rounded
# once); the baseline ISA rounds product and sum separately (within the stated tolerance).
cdef int _ISA_LEVEL = sis_rs_isa_level()

#: Instruction set of the inner loop in this process ("avx512", "avx2+fma" or "baseline").
ISA = ("baseline", "avx2+fma", "avx512")[_ISA_LEVEL]

cdef Py_ssize_t _SSIZE_MAX = <Py_ssize_t>(<size_t>-1 >> 1)
cdef int _ONE = 1
cdef bint _LITTLE = (<const char*>&_ONE)[0] == 1

# The arrays come in without typed memoryviews: five typed memoryviews (plus fused-type
# dispatch) cost ~2.7 us per call here, five Py_buffer acquisitions ~0.8 us, and reading the
# fields of an ndarray through numpy's C API ~0.1 us, against ~1.5 us of arithmetic for a 20 ms
# chunk. ndarrays (the wrapper's own arrays, np.frombuffer views) take the C-API path; any other
# object goes through the buffer protocol. Every size, format and writability check a
# memoryview would make is made explicitly in _process below, before the nogil section; the C
# loops then stay inside the checked extents (comments at each formula).
cdef int _RO = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT
cdef int _RW = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE


cdef struct _Arr:
    # One array argument: its data, first two dimensions, ndim, element kind ('h' int16,
    # 'f' float32, 0 other), and the format text for error messages.
    char* data
    Py_ssize_t n0
    Py_ssize_t n1
    int ndim
    char kind
    const char* fmt


cdef char _kind(const Py_buffer* b) noexcept:
    # 'h' (int16) or 'f' (float32) for a native-endian buffer of that type, else 0.
    cdef const char* f = b.format
    if f == NULL:
        return b'B'  # PEP 3118: NULL means unsigned bytes
    if f[0] == b'@' or f[0] == b'=' or (f[0] == b'<' and _LITTLE):
        f += 1
    if f[0] == b'h' and f[1] == 0 and b.itemsize == 2:
        return b'h'
    if f[0] == b'f' and f[1] == 0 and b.itemsize == 4:
        return b'f'
    return 0


cdef int _from_ndarray(object obj, _Arr* a, bint writable, str name) except -1:
    # The checks PyObject_GetBuffer(PyBUF_C_CONTIGUOUS [| PyBUF_WRITABLE]) would make, read
    # from the array's fields.
    cdef cnp.ndarray arr = <cnp.ndarray>obj
    cdef int t = cnp.PyArray_TYPE(arr)
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        need = "C-contiguous writable" if writable else "C-contiguous"
        raise ValueError(f"{name} must be a {need} array: ndarray is not C-contiguous")
    if writable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name} must be a C-contiguous writable array: array is read-only")
    a.data = <char*>cnp.PyArray_DATA(arr)
    a.ndim = cnp.PyArray_NDIM(arr)
    a.n0 = cnp.PyArray_DIM(arr, 0) if a.ndim >= 1 else 1
    a.n1 = cnp.PyArray_DIM(arr, 1) if a.ndim >= 2 else 1
    a.kind = 0
    a.fmt = NULL  # unused: _fmt reads the dtype
    if cnp.PyArray_ISNOTSWAPPED(arr):
        if t == cnp.NPY_INT16:
            a.kind = b'h'
        elif t == cnp.NPY_FLOAT32:
            a.kind = b'f'
    return 0


cdef int _from_buffer(object obj, Py_buffer* view, _Arr* a, bint writable, str name) except -1:
    try:
        PyObject_GetBuffer(obj, view, _RW if writable else _RO)
    except TypeError:
        raise TypeError(f"{name} must be a numpy array (buffer), got {type(obj).__name__}") from None
    except (BufferError, ValueError) as exc:
        need = "C-contiguous writable" if writable else "C-contiguous"
        raise ValueError(f"{name} must be a {need} array: {exc}") from None
    a.data = <char*>view.buf
    a.ndim = view.ndim
    a.n0 = view.shape[0] if view.ndim >= 1 else 1
    a.n1 = view.shape[1] if view.ndim >= 2 else 1
    a.kind = _kind(view)
    a.fmt = view.format  # NULL means unsigned bytes (PEP 3118); _fmt says 'B'
    return 0


cdef str _fmt(object obj, const _Arr* a):
    # The element format for an error message: the buffer's, or the ndarray dtype's character.
    if cnp.PyArray_Check(obj):
        return obj.dtype.char
    return (<bytes>a.fmt).decode() if a.fmt != NULL else "B"


def scratch_length(Py_ssize_t n_in, Py_ssize_t taps_per_phase, Py_ssize_t down, Py_ssize_t n_out):
    """Minimum length of the float32 ``scratch`` buffer polyphase_process needs for one call."""
    if n_in < 0 or taps_per_phase < 1 or down < 1 or n_out < 0:
        raise ValueError(
            "scratch_length expects n_in >= 0, taps_per_phase >= 1, down >= 1, n_out >= 0, got "
            f"{n_in}, {taps_per_phase}, {down}, {n_out}"
        )
    return _scratch_len(n_in, taps_per_phase, down, n_out)


cdef inline Py_ssize_t _scratch_len(Py_ssize_t n_in, Py_ssize_t K, Py_ssize_t down,
                                    Py_ssize_t n_out) noexcept:
    # buf (nb) + y (n_out) + M de-interleaved streams of ceil(nb / M) samples when M > 1
    cdef Py_ssize_t nb = K - 1 + n_in
    return nb + n_out + (down * ((nb + down - 1) // down) if down > 1 else 0)


#: Multiply-adds (outputs x taps per phase) from which a call releases the GIL.
cdef Py_ssize_t _NOGIL_MIN_WORK = 1 << 16


cdef Py_ssize_t _compute(char kx, char ko, char* hist, Py_ssize_t H, const int16_t* xi,
                         const float* xf, Py_ssize_t n_in, float* buf, Py_ssize_t nb, float* y,
                         char* out, const float* taps, Py_ssize_t K, Py_ssize_t phase,
                         Py_ssize_t up, Py_ssize_t down, Py_ssize_t n_out) noexcept nogil:
    # The checked call of _process: buf = history + chunk, the outputs, the new history.
    # Returns the saturated int16 samples.
    cdef float* yo
    cdef Py_ssize_t clips = 0
    if H > 0:
        memcpy(buf, hist, H * sizeof(float))
    if kx == b'h':
        if _ISA_LEVEL >= 1:
            sis_rs_load_i16_avx2(xi, buf + H, n_in)  # buf[H : H + n_in], H + n_in == nb
        else:
            sis_rs_load_i16(xi, buf + H, n_in)
    elif n_in > 0:
        memcpy(buf + H, xf, n_in * sizeof(float))
    if n_out > 0:
        # float32 output is computed in place (yo = out), except with two phase classes,
        # which come out class-major and are interleaved; int16 goes through y and the
        # rounding store. The de-interleaved streams sit after y in scratch either way.
        yo = <float*>out if ko == b'f' and up != 2 else y
        if _ISA_LEVEL == 2:
            sis_rs_run_avx512(taps, K, buf, nb, y + n_out, phase, up, down, yo, n_out)
        elif _ISA_LEVEL == 1:
            sis_rs_run_avx2(taps, K, buf, nb, y + n_out, phase, up, down, yo, n_out)
        else:
            sis_rs_run_generic(taps, K, buf, nb, y + n_out, phase, up, down, yo, n_out)
        clips = sis_rs_store_out(_ISA_LEVEL, up, ko == b'h', y, out, n_out)
    if H > 0:
        memcpy(hist, buf + n_in, H * sizeof(float))  # the last K - 1 samples of buf
    return clips


cdef int _process(object ox, object oo, _Arr* ax, _Arr* at, _Arr* ah, _Arr* as_, _Arr* ao,
                  Py_ssize_t phase, Py_ssize_t up, Py_ssize_t down, Py_ssize_t* phase_out,
                  Py_ssize_t* clips_out) except -1:
    # Runs one call; sets *phase_out (the next phase) and *clips_out (saturated samples).
    cdef char kx = ax.kind, ko = ao.kind
    cdef Py_ssize_t n_in, K, H, n_out, nb, last, k, clips = 0
    cdef float* buf
    cdef float* y
    cdef const float* taps
    cdef const int16_t* xi
    cdef const float* xf
    # -- types and shapes (what a typed memoryview would check) --
    if ax.ndim != 1 or ao.ndim != 1 or ah.ndim != 1 or as_.ndim != 1 or at.ndim != 2:
        raise ValueError(
            "x, history, scratch and out must be 1-D and taps 2-D, got ndim "
            f"{ax.ndim}, {ah.ndim}, {as_.ndim}, {ao.ndim} and {at.ndim}"
        )
    if kx == 0 or ko == 0:
        raise TypeError(
            "x and out must each be int16 or float32, got formats "
            f"{_fmt(ox, ax)!r} and {_fmt(oo, ao)!r}"
        )
    if at.kind != b'f' or ah.kind != b'f' or as_.kind != b'f':
        raise TypeError("taps, history and scratch must be float32")
    n_in, n_out, H = ax.n0, ao.n0, ah.n0
    K = at.n1
    # -- values --
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    if at.n0 != up or K < 1:
        raise ValueError(
            f"taps must have shape (up, taps_per_phase) = ({up}, >= 1), "
            f"got ({at.n0}, {K})"
        )
    if H != K - 1:
        raise ValueError(f"history must hold taps_per_phase - 1 = {K - 1} samples, got {H}")
    if phase < 0:
        raise ValueError(f"phase must be >= 0, got {phase}")
    if n_in > (_SSIZE_MAX - phase) // up or n_out > (_SSIZE_MAX - phase) // down:
        raise OverflowError(f"chunk of {n_in} samples / {n_out} outputs is too long")
    if n_out > 0:
        last = (phase + (n_out - 1) * down) // up  # window start of the last output
        if last > n_in - 1:  # its window buf[last : last + K] must end inside buf (< K-1+n_in)
            raise ValueError(
                f"out asks for {n_out} outputs but the chunk of {n_in} samples at phase {phase} "
                f"holds fewer (up={up}, down={down})"
            )
    if as_.n0 < _scratch_len(n_in, K, down, n_out):
        raise ValueError(
            f"scratch must hold at least {_scratch_len(n_in, K, down, n_out)} samples, "
            f"got {as_.n0}"
        )
    phase_out[0] = phase + n_out * down - n_in * up
    clips_out[0] = 0
    nb = K - 1 + n_in
    if nb == 0:
        return 0
    # scratch = buf[nb] | y[n_out] | streams (M > 1), all inside scratch_length (checked above)
    buf = <float*>as_.data
    y = buf + nb
    taps = <const float*>at.data
    xi = <const int16_t*>ax.data
    xf = <const float*>ax.data
    # The GIL is released only for calls with enough work to be worth it: dropping and taking
    # it back costs ~0.15 us here, a tenth of a 20 ms chunk, for a window in which another
    # thread could hardly run (numpy thresholds its loops the same way).
    if n_out * K >= _NOGIL_MIN_WORK:
        with nogil:
            clips = _compute(kx, ko, ah.data, H, xi, xf, n_in, buf, nb, y, ao.data, taps, K,
                             phase, up, down, n_out)
    else:
        clips = _compute(kx, ko, ah.data, H, xi, xf, n_in, buf, nb, y, ao.data, taps, K,
                         phase, up, down, n_out)
    clips_out[0] = clips
    return 0


def polyphase_process(x, taps, history, scratch, Py_ssize_t phase, Py_ssize_t up,
                      Py_ssize_t down, out):
    """Resample chunk ``x`` into all of ``out``; update ``history``; return (n_out, phase, clips).

    ``x`` and ``out`` are each int16 or float32 (a multi-stage cascade passes float32 between
    stages); int16 ``out`` is rounded half to even and saturated, ``clips`` counts saturations.
    """
    cdef Py_ssize_t new_phase, clips
    _run(x, taps, history, scratch, phase, up, down, out, &new_phase, &clips)
    return len(out), new_phase, clips


cdef int _run(object x, object taps, object history, object scratch, Py_ssize_t phase,
              Py_ssize_t up, Py_ssize_t down, object out, Py_ssize_t* phase_out,
              Py_ssize_t* clips_out) except -1:
    cdef _Arr arrs[5]
    cdef Py_buffer views[5]
    cdef bint held[5]
    cdef int i
    for i in range(5):
        held[i] = False
    try:
        # x and taps are read; history, scratch and out written
        _arg(x, &arrs[0], &views[0], &held[0], False, "x")
        _arg(taps, &arrs[1], &views[1], &held[1], False, "taps")
        _arg(history, &arrs[2], &views[2], &held[2], True, "history")
        _arg(scratch, &arrs[3], &views[3], &held[3], True, "scratch")
        _arg(out, &arrs[4], &views[4], &held[4], True, "out")
        return _process(x, out, &arrs[0], &arrs[1], &arrs[2], &arrs[3], &arrs[4],
                        phase, up, down, phase_out, clips_out)
    finally:
        for i in range(5):
            if held[i]:
                PyBuffer_Release(&views[i])


cdef inline int _arg(object obj, _Arr* a, Py_buffer* view, bint* held, bint writable,
                     str name) except -1:
    if cnp.PyArray_Check(obj):
        return _from_ndarray(obj, a, writable, name)
    _from_buffer(obj, view, a, writable, name)
    held[0] = True
    return 0


# --- compiled front-end for StreamResampler.process --------------------------------------------
# A 20 ms chunk's arithmetic (~0.7 us) is about what a Python frame around it costs (attribute
# traffic, np.empty, argument tuples). sis_stream.audio.resample binds this as
# StreamResampler.process when _backend selected this module at import. It handles only the hot
# case in C: a 1-D contiguous ndarray of the stream's dtype on an open stream, single-stage or a
# cascade, whose buffers are big enough, while ``_backend.resample`` is still this module (one
# dict look-up, so the test fixture that swaps in the reference kernel reaches it through the
# Python method). Everything else, including every error, is handed unchanged to the Python
# method registered with _bind_front_ends, which owns all validation and messages.
# What the hot case needs of the stream is one _StreamPlan in the resampler's ``_plan`` slot
# (one attribute read per call instead of one per field): the Python object builds it on reset
# and whenever it replaces one of the arrays, and drops it (None) on flush. The plan holds the
# very arrays the Python object holds, so state written here is the state the Python method
# reads, and the reverse.

cdef dict _backend_ns = None  # sis_stream._backend.__dict__
cdef object _self_module = None  # this module, as _backend holds it
cdef object _py_process = None  # the Python StreamResampler.process


def _bind_front_ends(backend_ns, self_module, process):
    """Register ``_backend``'s namespace and the Python ``StreamResampler.process`` (called once)."""
    global _backend_ns, _self_module, _py_process
    _backend_ns = backend_ns
    _self_module = self_module
    _py_process = process


cdef inline bint _native_selected() except -1:
    # One dict look-up with an interned key: is this module still _backend's resample kernel?
    if _backend_ns is None:
        raise RuntimeError(
            "sis_stream._native.resample front-end used before sis_stream.audio.resample bound it")
    return PyDict_GetItemWithError(_backend_ns, "resample") == <PyObject*>_self_module


cdef class _StreamPlan:
    """What the compiled ``StreamResampler.process`` reads of an open stream, in C fields.

    Built by ``sis_stream.audio.resample.StreamResampler`` (private): the stream's dtype (chunks
    must have exactly this dtype object), its half-band stages (``resample._Stage``, empty for a
    single-stage conversion), the last stage's taps, history and scratch (float32 ndarrays),
    its up/down factors and the int64 ``array('q')`` of 4 counters (resample._PHASE ...).
    """

    cdef object dtype
    cdef tuple stages
    cdef cnp.ndarray taps
    cdef cnp.ndarray history
    cdef cnp.ndarray scratch
    cdef array.array state
    cdef Py_ssize_t up
    cdef Py_ssize_t down
    cdef int typenum

    def __cinit__(self, dtype, tuple stages, cnp.ndarray taps not None,
                  cnp.ndarray history not None, cnp.ndarray scratch not None, Py_ssize_t up,
                  Py_ssize_t down, array.array state not None):
        if not isinstance(dtype, cnp.dtype):
            raise TypeError(f"dtype must be a numpy.dtype, got {type(dtype).__name__}")
        if state.ob_descr.typecode != b'q' or len(state) != 4:
            raise TypeError("state must be array('q') of 4 counters")
        self.dtype = dtype
        self.typenum = (<cnp.dtype>dtype).type_num
        self.stages = stages
        self.taps, self.history, self.scratch = taps, history, scratch
        self.up, self.down = up, down
        self.state = state

    def __reduce__(self):
        # copy.deepcopy / pickle of a StreamResampler: the plan is rebuilt around the copies of
        # the very arrays the copied resampler holds (both share one memo).
        return (_StreamPlan, (self.dtype, self.stages, self.taps, self.history, self.scratch,
                              self.up, self.down, self.state))


cdef object _last_stage(_StreamPlan plan, object x, Py_ssize_t n_x, Py_ssize_t n_chunk):
    # The last (or only) stage of a front-end call: the first n_x samples of ndarray x through
    # the plan's filter into a new array of the stream's dtype; then the counters move on
    # (n_chunk input samples). Whatever the kernel refuses it refuses before touching any state.
    cdef _Arr ax, at, ah, asc, ao
    cdef Py_ssize_t span, n_out, new_phase = 0, clips = 0
    cdef long long* counters
    cdef cnp.npy_intp dims[1]
    cdef cnp.ndarray out
    if len(plan.state) != 4:  # the counters' storage is re-read every call: it must still fit
        raise TypeError("StreamResampler._state must be array('q') of 4 counters")
    counters = plan.state.data.as_longlongs
    _from_ndarray(x, &ax, False, "x")
    ax.n0 = n_x
    span = n_x * plan.up - counters[0]
    n_out = (span + plan.down - 1) // plan.down if span > 0 else 0  # resample._outputs_available
    dims[0] = n_out
    out = cnp.PyArray_EMPTY(1, dims, plan.typenum, 0)
    _from_ndarray(plan.taps, &at, False, "taps")
    _from_ndarray(plan.history, &ah, True, "history")
    _from_ndarray(plan.scratch, &asc, True, "scratch")
    _from_ndarray(out, &ao, True, "out")
    _process(x, out, &ax, &at, &ah, &asc, &ao, counters[0], plan.up, plan.down, &new_phase,
             &clips)
    counters[0] = new_phase
    counters[1] += n_chunk
    counters[2] += n_out
    counters[3] += clips
    return out


def _stream_process_front(self, chunk):
    """Compiled front-end of StreamResampler.process (docstring set by sis_stream.audio.resample)."""
    cdef cnp.ndarray arr
    cdef _StreamPlan plan
    cdef object p
    if type(chunk) is not cnp.ndarray or not _native_selected():
        return _py_process(self, chunk)
    p = self._plan  # None once flushed, and for a pass-through
    if type(p) is not _StreamPlan:
        return _py_process(self, chunk)
    plan = <_StreamPlan>p
    arr = <cnp.ndarray>chunk
    if <object>cnp.PyArray_DESCR(arr) is not plan.dtype or cnp.PyArray_NDIM(arr) != 1:
        return _py_process(self, chunk)
    if len(plan.stages) > 0:
        return _cascade_front(self, plan, chunk, arr)
    try:
        return _last_stage(plan, chunk, cnp.PyArray_DIM(arr, 0), cnp.PyArray_DIM(arr, 0))
    except (TypeError, ValueError):
        # The kernel checks everything before it touches any state: the Python method grows
        # the scratch for a longer chunk, copies a non-contiguous one, or diagnoses.
        return _py_process(self, chunk)


#: Most half-band stages ahead of the last one the compiled cascade path handles (48k -> 8k has 2).
cdef enum:
    _MAX_PRE = 4


cdef object _cascade_front(object self, _StreamPlan plan, object chunk, cnp.ndarray arr):
    # The hot case of a cascade (48k/44.1k/32k/24k/22.05k -> 16k or 8k): a 1-D C-contiguous
    # ndarray of the stream's dtype on an open stream, and every buffer already big enough:
    # first the sizes of each stage's output (nothing touched yet; a buffer too small sends the
    # call to the Python method, which grows it), then each stage into the first n_out samples
    # of its own float32 buffer, then the last stage as in the single-stage path. The stage
    # objects (resample._Stage) keep their state (history, phase) exactly as _Stage.run leaves it.
    cdef tuple pre = plan.stages
    cdef Py_ssize_t n_stages, k, n_in, n_out, span, st_phase, st_up, st_down
    cdef Py_ssize_t new_phase = 0, clips = 0, n
    cdef Py_ssize_t outs[_MAX_PRE]
    cdef _Arr ax, at, ah, asc, az
    cdef object stage, x, z
    n_stages = len(pre)
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr) or n_stages > _MAX_PRE:
        return _py_process(self, chunk)
    n = n_in = cnp.PyArray_DIM(arr, 0)
    for k in range(n_stages):  # sizes only (resample._outputs_available)
        stage = pre[k]
        st_phase, st_up, st_down = stage.phase, stage.up, stage.down
        span = n_in * st_up - st_phase
        n_out = (span + st_down - 1) // st_down if span > 0 else 0
        if n_in > stage.cap or n_out > len(stage.z):
            return _py_process(self, chunk)
        outs[k] = n_out
        n_in = n_out
    if n_in > self._cap:  # the last stage's scratch (the Python method grows it)
        return _py_process(self, chunk)
    x = chunk
    for k in range(n_stages):
        stage = pre[k]
        z = stage.z
        _from_ndarray(x, &ax, False, "x")
        if k > 0:
            ax.n0 = outs[k - 1]  # the previous stage's outputs: the head of its buffer
        _from_ndarray(stage.taps, &at, False, "taps")
        _from_ndarray(stage.history, &ah, True, "history")
        _from_ndarray(stage.scratch, &asc, True, "scratch")
        _from_ndarray(z, &az, True, "out")
        az.n0 = outs[k]
        # the chunk was checked above (dtype, 1-D, contiguous), later inputs are our buffers
        _process(x, z, &ax, &at, &ah, &asc, &az, stage.phase, stage.up, stage.down,
                 &new_phase, &clips)
        stage.phase = new_phase
        x = z
    return _last_stage(plan, x, n_in, n)


def _set_isa_for_test(int level):
    """Run the inner loop as ISA level `level` (0 baseline, 1 AVX2+FMA, 2 AVX-512F; at most
    what this CPU has) from now on; return the previous level. A test hook: every variant must
    keep stream == one-shot, and AVX2+FMA must equal AVX-512 bit for bit."""
    global _ISA_LEVEL
    if level < 0 or level > sis_rs_isa_level():
        raise ValueError(f"ISA level must be 0..{sis_rs_isa_level()} on this CPU, got {level}")
    previous = _ISA_LEVEL
    _ISA_LEVEL = level
    return previous
