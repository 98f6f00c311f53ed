# cython: language_level=3
"""VAD kernels: per-frame features of int16 PCM and the energy detector's decision loop."""

from libc.math cimport log10
from libc.stdint cimport int16_t, uint8_t

# Shared layout constants (the same numbers as sis_stream/_reference/vad.py; a test pins them).
FEATURE_ENERGY = 0
FEATURE_BAND = 1
FEATURE_ZCR = 2
N_FEATURES = 3
DBFS_FLOOR = -100.0
MAX_FRAME_LEN = 480
MAX_SECTIONS = 4
P_ON_DB, P_OFF_DB, P_MIN_DBFS, P_FALL, P_RISE, P_RISE_MAX_DB, P_HANGOVER, P_ONSET = range(8)
N_PARAMS = 8
S_FLOOR, S_ACTIVE, S_HANG, S_NFRAMES, S_RUN = range(5)
N_STATE = 5

cdef enum:
    _MAX_FRAME = 480
    _MAX_SEC = 4

# Mean square of int16 full scale, and the clamp that makes digital silence DBFS_FLOOR.
cdef double _FS2 = 32768.0 * 32768.0
cdef double _MS_FLOOR = 1e-10 * 32768.0 * 32768.0


cdef inline double _dbfs(double mean_square) noexcept nogil:
    if mean_square < _MS_FLOOR:
        mean_square = _MS_FLOOR
    return 10.0 * log10(mean_square / _FS2)


cdef int _frame_features_impl(const int16_t[::1] x, Py_ssize_t frame_len, Py_ssize_t n_frames,
                              const double[::1] sos, Py_ssize_t n_sec, double[::1] zi,
                              double[:, ::1] out) except -1 nogil:
    cdef Py_ssize_t f, t, i, base
    cdef double acc_e, acc_b, u, y, z1, z2
    cdef long long zc
    cdef double inv_len = 1.0 / <double>frame_len
    cdef double inv_pairs = 1.0 / <double>(frame_len - 1)
    cdef int s0, s1
    for f in range(n_frames):
        base = f * frame_len  # f < n_frames = len(x) // frame_len, so base + frame_len <= len(x)
        acc_e = 0.0
        acc_b = 0.0
        zc = 0
        for t in range(frame_len):
            u = <double>x[base + t]
            acc_e += u * u
            # Transposed direct form II, section by section (sos row i at 6 * i, zi at 2 * i).
            for i in range(n_sec):
                z1 = zi[2 * i]
                z2 = zi[2 * i + 1]
                y = sos[6 * i] * u + z1
                zi[2 * i] = sos[6 * i + 1] * u - sos[6 * i + 4] * y + z2
                zi[2 * i + 1] = sos[6 * i + 2] * u - sos[6 * i + 5] * y
                u = y
            acc_b += u * u
        for t in range(1, frame_len):
            # Sign bit of the XOR is set when exactly one of the neighbours is negative.
            zc += (x[base + t] ^ x[base + t - 1]) < 0
        out[f, 0] = _dbfs(acc_e * inv_len)
        out[f, 1] = _dbfs(acc_b * inv_len)
        out[f, 2] = <double>zc * inv_pairs
    return 0


def frame_features(const int16_t[::1] x, Py_ssize_t frame_len, const double[::1] sos,
                   double[::1] zi, double[:, ::1] out):
    """Features of each complete frame of ``x`` into ``out[:n]``; update ``zi``; return n."""
    if frame_len < 2 or frame_len > _MAX_FRAME:
        raise ValueError(f"frame_len must be in 2..{MAX_FRAME_LEN}, got {frame_len}")
    cdef Py_ssize_t n_sec = sos.shape[0] // 6
    if sos.shape[0] != 6 * n_sec or n_sec < 1 or n_sec > _MAX_SEC or zi.shape[0] != 2 * n_sec:
        raise ValueError(
            f"sos must hold 6 * n (1 <= n <= {MAX_SECTIONS}) coefficients and zi 2 * n states, "
            f"got {sos.shape[0]} and {zi.shape[0]}"
        )
    cdef Py_ssize_t n = x.shape[0] // frame_len
    if out.shape[0] < n or out.shape[1] != N_FEATURES:
        raise ValueError(f"out must have shape (>= {n}, {N_FEATURES}), got {tuple(out.shape)[:2]}")
    if n == 0:
        return 0
    with nogil:
        _frame_features_impl(x, frame_len, n, sos, n_sec, zi, out)
    return n


cdef int _energy_decide_impl(const double[:, ::1] feat, Py_ssize_t n, const double[::1] p,
                             double[::1] state, uint8_t[::1] out) except -1 nogil:
    cdef double on = p[0], off = p[1], gate = p[2], fall = p[3], rise = p[4]
    cdef double rise_max = p[5], hang_max = p[6], onset = p[7]
    cdef double floor = state[0], active = state[1], hang = state[2], seen = state[3]
    cdef double run = state[4]
    cdef double b, d, thr, r
    cdef Py_ssize_t i
    for i in range(n):
        b = feat[i, 1]
        if seen == 0.0:
            floor = b
        if active != 0.0:
            thr = floor + off
            if thr < gate:
                thr = gate
            active = 1.0 if b > thr else 0.0
        else:
            thr = floor + on
            if thr < gate:
                thr = gate
            run = run + 1.0 if b > thr else 0.0
            if run >= onset:
                active = 1.0
                run = 0.0
        if active != 0.0:
            hang = hang_max
            out[i] = 1
        elif hang > 0.0:
            hang -= 1.0
            out[i] = 1
        else:
            out[i] = 0
        d = b - floor
        if d < 0.0:
            floor += fall * d
        elif active != 0.0:
            r = rise * d
            floor += r if r < rise_max else rise_max
        else:
            floor += rise * d
        seen += 1.0
    state[0] = floor
    state[1] = active
    state[2] = hang
    state[3] = seen
    state[4] = run
    return 0


def energy_decide(const double[:, ::1] feat, const double[::1] params, double[::1] state,
                  uint8_t[::1] out):
    """Speech (1) / non-speech (0) for each row of ``feat`` into ``out``; update ``state``."""
    cdef Py_ssize_t n = feat.shape[0]
    if params.shape[0] != N_PARAMS or state.shape[0] != N_STATE or out.shape[0] < n:
        raise ValueError(
            f"params must hold {N_PARAMS} values, state {N_STATE}, out >= {n}; "
            f"got {params.shape[0]}, {state.shape[0]}, {out.shape[0]}"
        )
    if n > 0 and feat.shape[1] != N_FEATURES:
        raise ValueError(f"feat must have {N_FEATURES} columns, got {feat.shape[1]}")
    with nogil:
        _energy_decide_impl(feat, n, params, state, out)
    return n
