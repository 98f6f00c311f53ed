# cython: language_level=3
"""VAD kernels: per-frame features of int16 PCM and the energy detector's decision loop."""

import sys

from libc.math cimport floor as c_floor, log2
from libc.stdint cimport int16_t, int64_t, uint8_t
from libc.string cimport memcpy, memmove
from cpython cimport array
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItemWithError
from cpython.object cimport PyObject

cimport numpy as cnp

cnp.import_array()

# Shared layout constants (the same numbers as sis_stream/_reference/vad.py; a test pins them).
FEATURE_ENERGY = 0
FEATURE_BAND = 1
FEATURE_ZCR = 2
N_FEATURES = 3
DBFS_FLOOR = -100.0
MAX_FRAME_LEN = 480
MAX_SECTIONS = 4
DECIMATIONS = (1, 2)
P_ON_DB, P_OFF_DB, P_MIN_DBFS, P_FALL, P_RISE, P_RISE_MAX_DB, P_HANGOVER, P_ONSET = range(8)
P_LOOKBACK_DB, P_LOOKBACK_MAX, P_ON_MAX_DB, P_DEV_FACTOR, P_DEV_BETA, P_DEV_INIT = range(8, 14)
P_HANG_QUIET, P_QUIET_LO_DBFS, P_QUIET_HI_DBFS, P_HANG_EXTRA = range(14, 18)
P_MARGIN_LO_DB, P_MARGIN_HI_DB, P_LEVEL_BETA = range(18, 21)
N_PARAMS = 21
S_FLOOR, S_ACTIVE, S_HANG, S_NFRAMES, S_RUN, S_UP, S_DEV, S_LEVEL = range(8)
N_STATE = 8
DECISION_SPEECH = 1
DECISION_LOOKBACK_SHIFT = 1
MAX_LOOKBACK = 127

cdef enum:
    _MAX_FRAME = 480
    _MAX_SEC = 4
    _MAX_N = 8  # state dimension 2 * _MAX_SEC
    _LANES = 16  # frames filtered side by side in the frame-parallel path (hides FP latency)
    _PARALLEL_MIN_FRAMES = 24  # below this the per-call set-up costs more than it saves
    _MAX_LOOKBACK = 127

# Mean square of int16 full scale, and the clamp that makes digital silence DBFS_FLOOR.
cdef double _FS2 = 32768.0 * 32768.0
cdef double _MS_FLOOR = 1e-10 * 32768.0 * 32768.0


# 10 log10(v) = (10 log10 2) log2(v); glibc's log2 is several times faster than its log10.
cdef double _DB_PER_OCTAVE = 3.0102999566398119521373889472449302676818988146210854131


cdef inline double _dbfs(double mean_square) noexcept nogil:
    if mean_square <= _MS_FLOOR:
        return -100.0  # DBFS_FLOOR exactly (log2 scaling would round it to -100.00000000000001)
    return _DB_PER_OCTAVE * log2(mean_square / _FS2)


cdef double _band_ms_ptr(const int16_t* x, Py_ssize_t m, Py_ssize_t decim, const double* sos,
                        Py_ssize_t n_sec, double* zi) noexcept nogil:
    # Band mean square of one frame (x: its first sample; m decimated samples), sample by
    # sample on the decimated input (sos row i at 6 * i, zi at 2 * i); updates zi. The shipped
    # one-section filter runs in direct form I (one multiply-add deep), any other in transposed
    # direct form II.
    cdef Py_ssize_t t, i
    cdef double acc = 0.0, u, y, z1, z2
    if n_sec == 1 and m >= 2:
        return sis_vad_band_ms_df1(x, m, decim, sos, zi)
    for t in range(m):
        u = <double>x[decim * t]  # decim * t + decim - 1 < frame_len: in the frame
        if decim == 2:
            u = 0.5 * (u + <double>x[2 * t + 1])
        for i in range(n_sec):
            z1 = zi[2 * i]
            z2 = zi[2 * i + 1]
            y = sos[6 * i] * u + z1
            zi[2 * i] = sos[6 * i + 1] * u - sos[6 * i + 4] * y + z2
            zi[2 * i + 1] = sos[6 * i + 2] * u - sos[6 * i + 5] * y
            u = y
        acc += u * u
    return acc / <double>m


cdef double _band_ms_seq(const int16_t[::1] x, Py_ssize_t base, Py_ssize_t m, Py_ssize_t decim,
                        const double[::1] sos, Py_ssize_t n_sec, double[::1] zi) except? -1 nogil:
    # _band_ms_ptr on the frame at x[base] (callers keep base + m * decim <= len(x)).
    return _band_ms_ptr(&x[base], m, decim, &sos[0], n_sec, &zi[0])


cdef inline bint _use_parallel(Py_ssize_t n_frames, Py_ssize_t m) noexcept nogil:
    # The frame-parallel path transposes 8 x 8 blocks: the decimated frame must hold whole
    # blocks (true for every 10/20/30 ms frame at 8 and 16 kHz).
    return n_frames >= _PARALLEL_MIN_FRAMES and m % 8 == 0


cdef int _frame_features_impl(const int16_t[::1] x, Py_ssize_t frame_len, Py_ssize_t decim,
                              Py_ssize_t n_frames, const double[::1] sos, Py_ssize_t n_sec,
                              double[::1] zi, double[:, ::1] out) except -1 nogil:
    cdef Py_ssize_t f, base, m = frame_len // decim
    if _use_parallel(n_frames, m):
        # All three features of all frames (sums; converted below).
        _band_energy_parallel(&x[0], frame_len, decim, n_frames, &sos[0], n_sec, &zi[0],
                              &out[0, 0], True)
    else:
        for f in range(n_frames):
            base = f * frame_len  # f < n_frames = len(x) // frame_len: base + frame_len <= len(x)
            out[f, 0] = <double>sis_vad_sum_squares(&x[base], frame_len)
            out[f, 1] = _band_ms_seq(x, base, m, decim, sos, n_sec, zi)
            out[f, 2] = <double>sis_vad_zero_crossings(&x[base], frame_len)
    for f in range(n_frames):
        out[f, 0] = _dbfs(out[f, 0] / <double>frame_len)
        out[f, 1] = _dbfs(out[f, 1])
        out[f, 2] = out[f, 2] / <double>(frame_len - 1)  # same rounding as the twin
    return 0


cdef int _band_energy_impl(const int16_t[::1] x, Py_ssize_t frame_len, Py_ssize_t decim,
                           Py_ssize_t n_frames, const double[::1] sos, Py_ssize_t n_sec,
                           double[::1] zi, double[::1] out) except -1 nogil:
    cdef Py_ssize_t f, m = frame_len // decim
    if _use_parallel(n_frames, m):
        _band_energy_parallel(&x[0], frame_len, decim, n_frames, &sos[0], n_sec, &zi[0],
                              &out[0], False)
    else:
        for f in range(n_frames):
            out[f] = _band_ms_seq(x, f * frame_len, m, decim, sos, n_sec, zi)
    for f in range(n_frames):
        out[f] = _dbfs(out[f])
    return 0

# The frame-parallel inner loop is plain C: Cython keeps Python loop variables alive after the
# loop, which stops GCC from vectorising the lane loops. The same body is compiled three times,
# for the baseline ISA and (GCC/Clang on x86) for AVX2+FMA and AVX-512F, chosen once at run time
# (the GNU vector extensions below lower to whatever each target has).
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #define SIS_VAD_LANES 16
    #define SIS_VAD_MAX_SEC 4
    #define SIS_VAD_MAX_N 8
    #define SIS_VAD_MAX_FRAME 480

    typedef float sis_v8 __attribute__((vector_size(32)));  /* 8 float lanes (2 SSE / 1 AVX) */
    typedef float sis_v16 __attribute__((vector_size(64)));  /* all 16 lanes (2 AVX / 1 AVX-512) */
    typedef int16_t sis_v8s __attribute__((vector_size(16)));
    typedef int32_t sis_v8i __attribute__((vector_size(32)));
    #define SIS_VAD_NV (SIS_VAD_LANES / 8)

    /* Sum of squares of x[0..L-1], exact (products <= 2^30, int64 sums). */
    static inline int64_t sis_vad_sum_squares(const int16_t *x, Py_ssize_t L) {
        int64_t acc = 0;
        for (Py_ssize_t t = 0; t < L; t++) acc += (int32_t)x[t] * (int32_t)x[t];
        return acc;
    }

    /* Sign changes between neighbours of x[0..L-1] (sign bit of the XOR); vectorisable. */
    static inline int32_t sis_vad_zero_crossings(const int16_t *x, Py_ssize_t L) {
        int32_t c = 0;
        for (Py_ssize_t t = 1; t < L; t++) c += (int32_t)((uint16_t)(x[t] ^ x[t - 1]) >> 15);
        return c;
    }

    /* Band mean square of one frame through ONE biquad section sos = [b0 b1 b2 1 a1 a2] in
       direct form I, float64, starting from (and leaving) the transposed-direct-form-II state
       zi = [z1, z2]: the first two outputs use the state (y0 = b0 u0 + z1,
       y1 = b0 u1 + b1 u0 - a1 y0 + z2), the rest y_t = (b0 u_t + b1 u_{t-1} + b2 u_{t-2}
       - a2 y_{t-2}) - a1 y_{t-1}, whose recursion is one multiply-add deep (TDF-II: two).
       The final TDF-II state follows from the last two samples. m >= 2; decim 1 or 2
       (u_t = (x[2t] + x[2t+1]) / 2). */
    static double sis_vad_band_ms_df1(const int16_t *x, Py_ssize_t m, Py_ssize_t decim,
                                      const double *sos, double *zi) {
        const double b0 = sos[0], b1 = sos[1], b2 = sos[2], a1 = sos[4], a2 = sos[5];
        double u0, u1, y0, y1, acc;
        if (decim == 2) {
            u0 = 0.5 * ((double)x[0] + (double)x[1]);
            u1 = 0.5 * ((double)x[2] + (double)x[3]);
        } else {
            u0 = (double)x[0];
            u1 = (double)x[1];
        }
        y0 = b0 * u0 + zi[0];
        y1 = b0 * u1 + (b1 * u0 - a1 * y0 + zi[1]);
        acc = y0 * y0 + y1 * y1;
        if (decim == 2) {
            for (Py_ssize_t t = 2; t < m; t++) {
                const double u = 0.5 * ((double)x[2 * t] + (double)x[2 * t + 1]);
                const double p = b0 * u + b1 * u1 + b2 * u0 - a2 * y0;
                const double y = p - a1 * y1;
                acc += y * y;
                u0 = u1; u1 = u; y0 = y1; y1 = y;
            }
        } else {
            for (Py_ssize_t t = 2; t < m; t++) {
                const double u = (double)x[t];
                const double p = b0 * u + b1 * u1 + b2 * u0 - a2 * y0;
                const double y = p - a1 * y1;
                acc += y * y;
                u0 = u1; u1 = u; y0 = y1; y1 = y;
            }
        }
        zi[0] = b1 * u1 + b2 * u0 - a1 * y1 - a2 * y0;
        zi[1] = b2 * u1 - a2 * y1;
        return acc / (double)m;
    }

    /* Rows r[g] (8 consecutive samples of lane g) -> o[k * SIS_VAD_LANES + g] (sample k of
       every lane): an 8 x 8 transpose in three rounds of two-input shuffles. */
    static inline __attribute__((always_inline)) void sis_vad_transpose8(const sis_v8 *r, float *o) {
        sis_v8 q[8], h[8];
        for (int k = 0; k < 8; k += 2) {
            q[k] = __builtin_shufflevector(r[k], r[k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
            q[k + 1] = __builtin_shufflevector(r[k], r[k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
        }
        for (int k = 0; k < 8; k += 4) {
            h[k] = __builtin_shufflevector(q[k], q[k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            h[k + 1] = __builtin_shufflevector(q[k], q[k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
            h[k + 2] = __builtin_shufflevector(q[k + 1], q[k + 3], 0, 1, 8, 9, 4, 5, 12, 13);
            h[k + 3] = __builtin_shufflevector(q[k + 1], q[k + 3], 2, 3, 10, 11, 6, 7, 14, 15);
        }
        for (int k = 0; k < 4; k++) {
            const sis_v8 lo = __builtin_shufflevector(h[k], h[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
            const sis_v8 hi = __builtin_shufflevector(h[k], h[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
            memcpy(o + k * SIS_VAD_LANES, &lo, 32);
            memcpy(o + (k + 4) * SIS_VAD_LANES, &hi, 32);
        }
    }

    /* One group of G <= SIS_VAD_LANES frames of L samples starting at x (frame g at x + g L):
       raw sum of squares sq[g] and zero crossings zc[g]; then, on the input decimated by
       `decim` (M = L / decim samples per frame), the zero-state filter of every lane over
       t = 0..M-1, accumulating e0 (filtered energy) and w[j] (sum y0_t R_t[j]) and leaving the
       zero-state final states in z1/z2. Lanes past G repeat frame G - 1 (their results unused).
       The decimated input is first transposed into xt[t][lane] so the lane loop loads whole
       vectors. */
    static inline __attribute__((always_inline)) void sis_vad_group_body(
            const int16_t *x, Py_ssize_t L, Py_ssize_t decim, Py_ssize_t G, Py_ssize_t n_sec,
            const float *coef, const float *R, Py_ssize_t n, float *e0, float *w, float *z1,
            float *z2, double *sq, double *zc, const int one_pass) {
        float xt[SIS_VAD_MAX_FRAME * SIS_VAD_LANES] __attribute__((aligned(32)));
        const Py_ssize_t M = L / decim;  /* a multiple of 8 for every supported geometry */
        for (Py_ssize_t g = 0; sq != NULL && g < G; g++) {  /* sq == NULL: band energy only */
            const int16_t *p = x + g * L;
            /* Raw energy in 8 float32 partial sums (x^2 <= 2^30: relative rounding 2^-24 per
               term, far inside the 1e-3 dB tolerance); the scalar tail sums exactly. */
            sis_v8 acc = {0}, acc2 = {0};  /* two chains: the FMA latency is not the limit */
            double tail = 0.0;
            Py_ssize_t t = 0;
            for (; t + 16 <= L; t += 16) {
                sis_v8s a, b;
                memcpy(&a, p + t, 16);
                memcpy(&b, p + t + 8, 16);
                const sis_v8 f = __builtin_convertvector(a, sis_v8);
                const sis_v8 f2 = __builtin_convertvector(b, sis_v8);
                acc += f * f;
                acc2 += f2 * f2;
            }
            for (; t < L; t++) tail += (double)((int32_t)p[t] * (int32_t)p[t]);
            acc += acc2;
            for (int k = 0; k < 8; k++) tail += (double)acc[k];
            sq[g] = tail;
            zc[g] = (double)sis_vad_zero_crossings(p, L);
        }
        /* Transpose the decimated input into xt[t][lane], 8 frames x 8 samples at a time
           (frame g of the block is row g; an 8 x 8 transpose by three rounds of shuffles). */
        for (Py_ssize_t grp = 0; grp < SIS_VAD_LANES; grp += 8) {
            const int16_t *rp[8];
            for (int g = 0; g < 8; g++) rp[g] = x + (grp + g < G ? grp + g : G - 1) * L;
            if (decim == 2) {
                for (Py_ssize_t t = 0; t + 8 <= M; t += 8) {
                    sis_v8 r[8];
                    for (int g = 0; g < 8; g++) {
                        /* Each sample pair read as one little-endian int32 v: the even sample
                           is (v << 16) >> 16, the odd one v >> 16 (arithmetic shifts). Their
                           sum and its halving are exact in float32. */
                        sis_v8i v;
                        memcpy(&v, rp[g] + 2 * t, 32);
                        r[g] = __builtin_convertvector(((v << 16) >> 16) + (v >> 16), sis_v8) * 0.5f;
                    }
                    sis_vad_transpose8(r, xt + t * SIS_VAD_LANES + grp);
                }
            } else {
                for (Py_ssize_t t = 0; t + 8 <= M; t += 8) {
                    sis_v8 r[8];
                    for (int g = 0; g < 8; g++) {
                        sis_v8s a;
                        memcpy(&a, rp[g] + t, 16);
                        r[g] = __builtin_convertvector(a, sis_v8);
                    }
                    sis_vad_transpose8(r, xt + t * SIS_VAD_LANES + grp);
                }
            }
        }
        if (n_sec == 1) {
            /* One section (the shipped band filter) in direct form I, the states in registers:
               y_t = b0 u_t + b1 u_{t-1} + b2 u_{t-2} - a1 y_{t-1} - a2 y_{t-2} (zero state:
               u_{-1} = u_{-2} = y_{-1} = y_{-2} = 0); its recursion is one FMA deep, where
               TDF-II is two. The zero-state final TDF-II state follows from the last samples:
               z1 = b1 u_{M-1} + b2 u_{M-2} - a1 y_{M-1} - a2 y_{M-2}, z2 = b2 u_{M-1} - a2 y_{M-1}. */
            const float c0 = coef[0], c1 = coef[1], c2 = coef[2], c4 = coef[3], c5 = coef[4];
            const sis_v16 zero = {0};
            sis_v16 y1 = zero, y2 = zero, u1 = zero, u2 = zero;
            sis_v16 e = zero, w0 = zero, w1 = zero;
            if (one_pass) {
                /* 32 vector registers (AVX-512): E0 and W accumulate in the recursion's loop,
                   whose one-FMA-deep dependency leaves room for them. */
                for (Py_ssize_t t = 0; t < M; t++) {
                    sis_v16 u;
                    memcpy(&u, xt + t * SIS_VAD_LANES, 64);
                    const sis_v16 y = c0 * u + c1 * u1 + c2 * u2 - c5 * y2 - c4 * y1;
                    u2 = u1; u1 = u;
                    y2 = y1; y1 = y;
                    e += y * y;
                    w0 += y * R[2 * t];
                    w1 += y * R[2 * t + 1];
                }
            } else {
                /* 16 registers: pass 1 is the recursion only (y overwrites u in xt), pass 2
                   accumulates E0 = sum y^2 and W = sum y R_t; one loop would spill. */
                for (Py_ssize_t t = 0; t < M; t++) {
                    sis_v16 u;
                    memcpy(&u, xt + t * SIS_VAD_LANES, 64);
                    const sis_v16 y = c0 * u + c1 * u1 + c2 * u2 - c5 * y2 - c4 * y1;
                    u2 = u1; u1 = u;
                    y2 = y1; y1 = y;
                    memcpy(xt + t * SIS_VAD_LANES, &y, 64);
                }
                for (Py_ssize_t t = 0; t < M; t++) {
                    sis_v16 y;
                    memcpy(&y, xt + t * SIS_VAD_LANES, 64);
                    e += y * y;
                    w0 += y * R[2 * t];
                    w1 += y * R[2 * t + 1];
                }
            }
            const sis_v16 zf1 = c1 * u1 + c2 * u2 - c4 * y1 - c5 * y2;
            const sis_v16 zf2 = c2 * u1 - c5 * y1;
            for (int k = 0; k < SIS_VAD_LANES; k++) {
                e0[k] = e[k];
                w[k] = w0[k];
                w[SIS_VAD_LANES + k] = w1[k];
                z1[k] = zf1[k];
                z2[k] = zf2[k];
            }
            return;
        }
        sis_v8 u[SIS_VAD_NV], e0v[SIS_VAD_NV];
        sis_v8 wv[SIS_VAD_MAX_N][SIS_VAD_NV], z1v[SIS_VAD_MAX_SEC][SIS_VAD_NV];
        sis_v8 z2v[SIS_VAD_MAX_SEC][SIS_VAD_NV];
        const sis_v8 zero = {0};
        for (int v = 0; v < SIS_VAD_NV; v++) {
            e0v[v] = zero;
            for (int j = 0; j < SIS_VAD_MAX_N; j++) wv[j][v] = zero;
            for (int i = 0; i < SIS_VAD_MAX_SEC; i++) { z1v[i][v] = zero; z2v[i][v] = zero; }
        }
        for (Py_ssize_t t = 0; t < M; t++) {
            for (int v = 0; v < SIS_VAD_NV; v++) memcpy(&u[v], xt + t * SIS_VAD_LANES + 8 * v, 32);
            for (Py_ssize_t i = 0; i < n_sec; i++) {
                const float c0 = coef[5 * i], c1 = coef[5 * i + 1], c2 = coef[5 * i + 2];
                const float c4 = coef[5 * i + 3], c5 = coef[5 * i + 4];
                for (int v = 0; v < SIS_VAD_NV; v++) {
                    const sis_v8 y = c0 * u[v] + z1v[i][v];
                    z1v[i][v] = c1 * u[v] - c4 * y + z2v[i][v];
                    z2v[i][v] = c2 * u[v] - c5 * y;
                    u[v] = y;
                }
            }
            for (int v = 0; v < SIS_VAD_NV; v++) e0v[v] += u[v] * u[v];
            for (Py_ssize_t j = 0; j < n; j++) {
                const float r = R[t * n + j];
                for (int v = 0; v < SIS_VAD_NV; v++) wv[j][v] += u[v] * r;
            }
        }
        for (int v = 0; v < SIS_VAD_NV; v++) {
            for (int k = 0; k < 8; k++) {
                e0[8 * v + k] = e0v[v][k];
                for (Py_ssize_t j = 0; j < n; j++) w[j * SIS_VAD_LANES + 8 * v + k] = wv[j][v][k];
                for (Py_ssize_t i = 0; i < n_sec; i++) {
                    z1[i * SIS_VAD_LANES + 8 * v + k] = z1v[i][v][k];
                    z2[i * SIS_VAD_LANES + 8 * v + k] = z2v[i][v][k];
                }
            }
        }
    }

    static void sis_vad_group_generic(const int16_t *x, Py_ssize_t L, Py_ssize_t decim,
            Py_ssize_t G, Py_ssize_t n_sec, const float *coef, const float *R, Py_ssize_t n,
            float *e0, float *w, float *z1, float *z2, double *sq, double *zc) {
        sis_vad_group_body(x, L, decim, G, n_sec, coef, R, n, e0, w, z1, z2, sq, zc, 0);
    }

    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __attribute__((target("avx2,fma")))
    static void sis_vad_group_avx2(const int16_t *x, Py_ssize_t L, Py_ssize_t decim,
            Py_ssize_t G, Py_ssize_t n_sec, const float *coef, const float *R, Py_ssize_t n,
            float *e0, float *w, float *z1, float *z2, double *sq, double *zc) {
        sis_vad_group_body(x, L, decim, G, n_sec, coef, R, n, e0, w, z1, z2, sq, zc, 0);
    }
    __attribute__((target("avx512f,avx512vl,avx2,fma")))
    static void sis_vad_group_avx512(const int16_t *x, Py_ssize_t L, Py_ssize_t decim,
            Py_ssize_t G, Py_ssize_t n_sec, const float *coef, const float *R, Py_ssize_t n,
            float *e0, float *w, float *z1, float *z2, double *sq, double *zc) {
        sis_vad_group_body(x, L, decim, G, n_sec, coef, R, n, e0, w, z1, z2, sq, zc, 1);
    }
    /* 2: AVX-512F (16 lanes in one register), 1: AVX2+FMA, 0: baseline. */
    static int sis_vad_isa(void) {
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
        return (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) ? 2 : 1;
    }
    #else
    #define sis_vad_group_avx2 sis_vad_group_generic
    #define sis_vad_group_avx512 sis_vad_group_generic
    static int sis_vad_isa(void) { return 0; }
    #endif
    """
    void sis_vad_group_generic(const int16_t* x, Py_ssize_t L, Py_ssize_t decim, Py_ssize_t G,
                               Py_ssize_t n_sec, const float* coef, const float* R, Py_ssize_t n,
                               float* e0, float* w, float* z1, float* z2, double* sq,
                               double* zc) noexcept nogil
    void sis_vad_group_avx2(const int16_t* x, Py_ssize_t L, Py_ssize_t decim, Py_ssize_t G,
                            Py_ssize_t n_sec, const float* coef, const float* R, Py_ssize_t n,
                            float* e0, float* w, float* z1, float* z2, double* sq,
                            double* zc) noexcept nogil
    void sis_vad_group_avx512(const int16_t* x, Py_ssize_t L, Py_ssize_t decim, Py_ssize_t G,
                              Py_ssize_t n_sec, const float* coef, const float* R, Py_ssize_t n,
                              float* e0, float* w, float* z1, float* z2, double* sq,
                              double* zc) noexcept nogil
    int sis_vad_isa() noexcept nogil
    double sis_vad_band_ms_df1(const int16_t* x, Py_ssize_t m, Py_ssize_t decim,
                               const double* sos, double* zi) noexcept nogil
    int sis_vad_zero_crossings(const int16_t* x, Py_ssize_t L) noexcept nogil
    int64_t sis_vad_sum_squares(const int16_t* x, Py_ssize_t L) noexcept nogil

ctypedef void (*_group_fn)(const int16_t*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                           const float*, const float*, Py_ssize_t, float*, float*, float*,
                           float*, double*, double*) noexcept nogil

cdef int _isa = sis_vad_isa()
cdef _group_fn _group = (sis_vad_group_avx512 if _isa == 2 else
                         sis_vad_group_avx2 if _isa == 1 else sis_vad_group_generic)
#: "avx512f", "avx2+fma" or "baseline": which build of the frame-parallel loop runs here.
LANES_ISA = ("avx512f", "avx2+fma", "baseline")[2 - _isa]


def _select_lanes_isa_for_test(str name):
    """Test hook: run the frame-parallel loop built for `name` (this CPU must support it)."""
    global _group
    cdef int want = {"baseline": 0, "avx2+fma": 1, "avx512f": 2}[name]
    if want > _isa:
        raise ValueError(f"this CPU cannot run the {name} build (best: {LANES_ISA})")
    _group = (sis_vad_group_avx512 if want == 2 else
              sis_vad_group_avx2 if want == 1 else sis_vad_group_generic)


cdef int _state_space(const double* sos, Py_ssize_t n_sec, double* A, double* B, double* C,
                      double* D) except -1 nogil:
    # (A, B, C, D) of the cascade in transposed-direct-form-II state coordinates, state
    # [z1_0, z2_0, z1_1, ...]: section i with input u computes y = b0 u + z1,
    # z1' = (b1 - a1 b0) u - a1 z1 + z2, z2' = (b2 - a2 b0) u - a2 z1; u_{i+1} = y.
    # cu/du express the current section's input as cu . s + du * x. A is row-major n x n.
    cdef Py_ssize_t n = 2 * n_sec, i, j
    cdef double cu[_MAX_N]
    cdef double cy[_MAX_N]
    cdef double du = 1.0, dy, b0, b1, b2, a1, a2
    for j in range(n * n):
        A[j] = 0.0
    for j in range(n):
        cu[j] = 0.0
    for i in range(n_sec):
        b0 = sos[6 * i]
        b1 = sos[6 * i + 1]
        b2 = sos[6 * i + 2]
        a1 = sos[6 * i + 4]
        a2 = sos[6 * i + 5]
        for j in range(n):
            cy[j] = b0 * cu[j]
        cy[2 * i] += 1.0
        dy = b0 * du
        for j in range(n):
            A[(2 * i) * n + j] = b1 * cu[j] - a1 * cy[j]
            A[(2 * i + 1) * n + j] = b2 * cu[j] - a2 * cy[j]
        A[(2 * i) * n + 2 * i + 1] += 1.0
        B[2 * i] = b1 * du - a1 * dy
        B[2 * i + 1] = b2 * du - a2 * dy
        for j in range(n):
            cu[j] = cy[j]
        du = dy
    for j in range(n):
        C[j] = cu[j]
    D[0] = du
    return 0


cdef void _matmul(const double* a, const double* b, double* out, Py_ssize_t n) noexcept nogil:
    # out = a @ b for row-major n x n matrices (n <= _MAX_N; the caller's arrays hold n * n).
    cdef Py_ssize_t i, j, k
    cdef double acc
    for i in range(n):
        for j in range(n):
            acc = 0.0
            for k in range(n):
                acc += a[i * n + k] * b[k * n + j]
            out[i * n + j] = acc


cdef int _band_energy_parallel(const int16_t* x, Py_ssize_t L, Py_ssize_t decim,
                               Py_ssize_t n_frames, const double* sos, Py_ssize_t n_sec,
                               double* zi, double* out, bint full) except -1 nogil:
    # Exact IIR band energy with the frames filtered side by side (no recursion across lanes):
    # for frame k with initial state s_k, y_t = y0_t + R_t . s_k where y0 is the frame's
    # zero-state response and R_t = C A^t its zero-input response rows. Hence
    #   sum y_t^2 = E0 + 2 W . s_k + s_k^T Q s_k,  W = sum_t y0_t R_t,  Q = sum_t R_t R_t^T,
    #   s_{k+1} = A^L s_k + s0_k   (s0_k: the zero-state final state).
    # E0, W and s0 come from _LANES frames at a time in float32 (vectorisable), the short
    # recursion over s_k runs in float64. The filter runs on the decimated frame of M = L / decim
    # samples. full: writes, per frame f, out[3 f] = raw sum of squares, out[3 f + 1] = band
    # mean square, out[3 f + 2] = zero crossings; else only out[f] = band mean square.
    cdef Py_ssize_t n = 2 * n_sec, i, j, k, t, g, f0, G, M = L // decim
    cdef double A[_MAX_N * _MAX_N]
    cdef double AL[_MAX_N * _MAX_N]
    cdef double tmp[_MAX_N * _MAX_N]
    cdef double P[_MAX_N * _MAX_N]
    cdef double Q[_MAX_N * _MAX_N]
    cdef double B[_MAX_N]
    cdef double C[_MAX_N]
    cdef double D
    cdef double s[_MAX_N]
    cdef double s_new[_MAX_N]
    cdef double r_d[_MAX_N]
    cdef double r_next[_MAX_N]
    cdef float R[_MAX_FRAME * _MAX_N]
    cdef float coef[_MAX_SEC * 5]
    cdef float z1[_MAX_SEC * _LANES]
    cdef float z2[_MAX_SEC * _LANES]
    cdef float e0[_LANES]
    cdef float w[_MAX_N * _LANES]
    cdef double sq[_LANES]
    cdef double zc[_LANES]
    cdef double e, acc, s0, s1, t0, q00, q01, q10, q11, a00, a01, a10, a11
    _state_space(sos, n_sec, A, B, C, &D)
    # R_t = C A^t for t < M, Q = sum R_t R_t^T, AL = A^M.
    for j in range(n):
        r_d[j] = C[j]
    for j in range(n * n):
        Q[j] = 0.0
    for t in range(M):
        for j in range(n):
            R[t * n + j] = <float>r_d[j]  # t < M <= _MAX_FRAME, j < n <= _MAX_N
            for k in range(n):
                Q[j * n + k] += r_d[j] * r_d[k]
        for j in range(n):
            acc = 0.0
            for k in range(n):
                acc += r_d[k] * A[k * n + j]
            r_next[j] = acc
        for j in range(n):
            r_d[j] = r_next[j]
    # AL = A^L by repeated squaring (P holds A^(2^bit)).
    for i in range(n):
        for j in range(n):
            AL[i * n + j] = 1.0 if i == j else 0.0
    for j in range(n * n):
        P[j] = A[j]
    t = M
    while t > 0:
        if t & 1:
            _matmul(AL, P, tmp, n)
            for j in range(n * n):
                AL[j] = tmp[j]
        _matmul(P, P, tmp, n)
        for j in range(n * n):
            P[j] = tmp[j]
        t >>= 1
    for i in range(n_sec):
        for j in range(5):
            coef[5 * i + j] = <float>sos[6 * i + (j if j < 3 else j + 1)]  # b0 b1 b2 a1 a2
    for j in range(n):
        s[j] = zi[j]
    s0 = s[0]
    s1 = s[1]  # n >= 2
    q00, q01, q10, q11 = Q[0], Q[1], Q[n], Q[n + 1]
    a00, a01, a10, a11 = AL[0], AL[1], AL[n], AL[n + 1]
    f0 = 0
    while f0 < n_frames:
        G = n_frames - f0
        if G > _LANES:
            G = _LANES
        # Frames f0 .. f0 + G - 1 end at (f0 + G) * L <= n_frames * L: in bounds.
        _group(x + f0 * L, L, decim, G, n_sec, coef, R, n, e0, w, z1, z2,
               sq if full else NULL, zc if full else NULL)
        for g in range(G):
            if n == 2:
                # The shipped one-section filter, unrolled, the state in locals (the same
                # arithmetic as the general branch).
                e = e0[g] + (2.0 * w[g] + q00 * s0 + q01 * s1) * s0 \
                    + (2.0 * w[_LANES + g] + q10 * s0 + q11 * s1) * s1
                t0 = a00 * s0 + a01 * s1 + z1[g]
                s1 = a10 * s0 + a11 * s1 + z2[g]
                s0 = t0
            else:
                e = e0[g]
                for j in range(n):
                    acc = 0.0
                    for k in range(n):
                        acc += Q[j * n + k] * s[k]
                    e += (2.0 * w[j * _LANES + g] + acc) * s[j]
                for i in range(n):
                    acc = 0.0
                    for k in range(n):
                        acc += AL[i * n + k] * s[k]
                    s_new[i] = acc
                for i in range(n_sec):
                    s_new[2 * i] += z1[i * _LANES + g]
                    s_new[2 * i + 1] += z2[i * _LANES + g]
                for j in range(n):
                    s[j] = s_new[j]
            if full:
                out[3 * (f0 + g)] = sq[g]  # f0 + g < n_frames: the caller's (n, 3) array
                out[3 * (f0 + g) + 1] = e / <double>M
                out[3 * (f0 + g) + 2] = zc[g]
            else:
                out[f0 + g] = e / <double>M  # the caller's (n,) array
        f0 += G
    if n == 2:
        s[0] = s0
        s[1] = s1
    for j in range(n):
        zi[j] = s[j]
    return 0


cdef Py_ssize_t _check_filter_args(Py_ssize_t frame_len, Py_ssize_t decim, const double[::1] sos,
                                   double[::1] zi) except -1:
    # Shared argument checks of frame_features / band_energy; returns the number of sections.
    if frame_len < 2 or frame_len > _MAX_FRAME:
        raise ValueError(f"frame_len must be in 2..{MAX_FRAME_LEN}, got {frame_len}")
    if (decim != 1 and decim != 2) or frame_len % decim != 0:
        raise ValueError(
            f"decim must be one of {DECIMATIONS} and divide frame_len, got {decim} for {frame_len}"
        )
    cdef Py_ssize_t n_sec = sos.shape[0] // 6
    if sos.shape[0] != 6 * n_sec or n_sec < 1 or n_sec > _MAX_SEC or zi.shape[0] != 2 * n_sec:
        raise ValueError(
            f"sos must hold 6 * n (1 <= n <= {MAX_SECTIONS}) coefficients and zi 2 * n states, "
            f"got {sos.shape[0]} and {zi.shape[0]}"
        )
    return n_sec


def frame_features(const int16_t[::1] x, Py_ssize_t frame_len, Py_ssize_t decim,
                   const double[::1] sos, double[::1] zi, double[:, ::1] out):
    """Features of each complete frame of ``x`` into ``out[:n]``; update ``zi``; return n."""
    cdef Py_ssize_t n_sec = _check_filter_args(frame_len, decim, sos, zi)
    cdef Py_ssize_t n = x.shape[0] // frame_len
    if out.shape[0] < n or out.shape[1] != N_FEATURES:
        raise ValueError(f"out must have shape (>= {n}, {N_FEATURES}), got {tuple(out.shape)[:2]}")
    if n == 0:
        return 0
    with nogil:
        _frame_features_impl(x, frame_len, decim, n, sos, n_sec, zi, out)
    return n


def band_energy(const int16_t[::1] x, Py_ssize_t frame_len, Py_ssize_t decim,
                const double[::1] sos, double[::1] zi, double[::1] out):
    """Band energy (dBFS) of each complete frame of ``x`` into ``out[:n]``; update ``zi``; return n."""
    cdef Py_ssize_t n_sec = _check_filter_args(frame_len, decim, sos, zi)
    cdef Py_ssize_t n = x.shape[0] // frame_len
    if out.shape[0] < n:
        raise ValueError(f"out must have shape (>= {n},), got ({out.shape[0]},)")
    if n == 0:
        return 0
    with nogil:
        _band_energy_impl(x, frame_len, decim, n, sos, n_sec, zi, out)
    return n


cdef int _energy_decide_impl(const double[::1] band, Py_ssize_t n, const double[::1] p,
                             double[::1] state, uint8_t[::1] out) except -1 nogil:
    # The callers checked the sizes (n <= len(band), len(out); N_PARAMS, N_STATE); n >= 1.
    # (Each pointer is taken at its last element and moved back, so that the debug build's
    # bounds checks cover the whole range.)
    _decide_ptr(&band[n - 1] - (n - 1), n, &p[20] - 20, &state[7] - 7, &out[n - 1] - (n - 1))
    return 0


cdef inline double _ramp(double v, double lo, double hi) noexcept nogil:
    # 0 at or below lo, 1 at or above hi, linear between (a step at hi if hi <= lo).
    if v >= hi:
        return 1.0
    if v <= lo:
        return 0.0
    return (v - lo) / (hi - lo)


cdef void _decide_ptr(const double* band, Py_ssize_t n, const double* p, double* state,
                      uint8_t* out) noexcept nogil:
    # The detector's frame loop over band[0 .. n-1] (p: N_PARAMS values, state: N_STATE).
    cdef double on = p[0], off = p[1], gate = p[2], fall = p[3], rise = p[4]
    cdef double rise_max = p[5], hang_max = p[6], onset = p[7], lb_db = p[8], lb_max = p[9]
    cdef double on_max = p[10], dev_k = p[11], dev_beta = p[12], dev_init = p[13]
    cdef double hang_quiet = p[14], quiet_lo = p[15], quiet_hi = p[16], hang_extra = p[17]
    cdef double margin_lo = p[18], margin_hi = p[19], level_beta = p[20]
    cdef double floor = state[0], active = state[1], hang = state[2], seen = state[3]
    cdef double run = state[4], up = state[5], dev = state[6], level = state[7]
    cdef double b, d, thr, r, on_eff, q, e
    cdef int code
    cdef Py_ssize_t i
    if lb_max > _MAX_LOOKBACK:
        lb_max = _MAX_LOOKBACK  # the look-back must fit the 7 high bits of the code
    for i in range(n):
        b = band[i]
        if seen == 0.0:
            floor = b
            dev = dev_init
            level = b
        # Entry threshold above the floor: dev_k times the noise's deviation, within [on, on_max].
        on_eff = dev_k * dev
        if on_eff < on:
            on_eff = on
        if on_eff > on_max:
            on_eff = on_max
        code = 0
        if active != 0.0:
            thr = floor + off + (on_eff - on)  # the hysteresis gap on - off is kept
            if thr < gate:
                thr = gate
            active = 1.0 if b > thr else 0.0
        else:
            thr = floor + on_eff
            if thr < gate:
                thr = gate
            run = run + 1.0 if b > thr else 0.0
            if run >= onset:
                active = 1.0
                run = 0.0
                code = <int>(up if up < lb_max else lb_max) << 1  # DECISION_LOOKBACK_SHIFT
        if active != 0.0:
            # Speech level, and the hangover for this line: from hang_quiet (quiet floor) to
            # hang_max, plus up to hang_extra at a low speech-to-floor margin.
            level += level_beta * (b - level)
            q = _ramp(floor, quiet_lo, quiet_hi)
            e = 1.0 - _ramp(level - floor, margin_lo, margin_hi)
            hang = c_floor(hang_quiet + (hang_max - hang_quiet) * q + hang_extra * e + 0.5)
            code = code | 1
        elif hang > 0.0:
            hang -= 1.0
            code = code | 1
        out[i] = <uint8_t>code
        thr = floor + lb_db
        if thr < gate:
            thr = gate
        up = up + 1.0 if b > thr else 0.0
        d = b - floor
        if active == 0.0 and hang == 0.0:
            # Noise deviation: mean |band - floor| over non-speech frames, each term capped at
            # the threshold (a missed quiet speech frame must not inflate it).
            r = d if d >= 0.0 else -d
            if r > on_eff:
                r = on_eff
            dev += dev_beta * (r - dev)
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
    state[5] = up
    state[6] = dev
    state[7] = level


def energy_decide(const double[::1] band, const double[::1] params, double[::1] state,
                  uint8_t[::1] out):
    """Decision code for each band energy (dBFS) into ``out`` (uint8); update ``state``; return n."""
    cdef Py_ssize_t n = band.shape[0]
    if params.shape[0] != N_PARAMS or state.shape[0] != N_STATE or out.shape[0] < n:
        raise ValueError(
            f"params must hold {N_PARAMS} values, state {N_STATE}, out >= {n}; "
            f"got {params.shape[0]}, {state.shape[0]}, {out.shape[0]}"
        )
    if n == 0:
        return 0
    with nogil:
        _energy_decide_impl(band, n, params, state, out)
    return n


def band_decide(const int16_t[::1] x, Py_ssize_t frame_len, Py_ssize_t decim,
                const double[::1] sos, double[::1] zi, const double[::1] params,
                double[::1] state, double[::1] band, uint8_t[::1] out):
    """band_energy() then energy_decide() in one call (the streaming hot path); return n."""
    cdef Py_ssize_t n_sec = _check_filter_args(frame_len, decim, sos, zi)
    cdef Py_ssize_t n = x.shape[0] // frame_len
    if band.shape[0] < n or out.shape[0] < n:
        raise ValueError(f"band and out must hold >= {n} values, got {band.shape[0]} and {out.shape[0]}")
    if params.shape[0] != N_PARAMS or state.shape[0] != N_STATE:
        raise ValueError(
            f"params must hold {N_PARAMS} values, state {N_STATE}; "
            f"got {params.shape[0]}, {state.shape[0]}"
        )
    if n == 0:
        return 0
    with nogil:
        _band_energy_impl(x, frame_len, decim, n, sos, n_sec, zi, band)
        _energy_decide_impl(band, n, params, state, out)
    return n



# --- compiled front-ends of EnergyVad.process and Endpointer.process --------------------------
# A gateway decides one 20 ms frame per call. The arithmetic of a frame (~0.3 us) is a fraction
# of what the Python frames around it cost (attribute traffic, np.concatenate, typed memoryview
# acquisition, the result array), so sis_stream.audio.vad binds _vad_process_front as
# EnergyVad.process and sis_stream.audio.endpoint binds _endpoint_process_front as
# Endpointer.process when _backend selected this module at import. Each handles only its hot
# case in C: a 1-D aligned native-order int16 ndarray (or PCM bytes) of 1.._FRONT_MAX_FRAMES
# whole frames, on an open stream with no partial frame buffered, while ``_backend.vad`` is
# still this module (one dict look-up, so the test fixture that swaps in the reference kernel
# reaches it through the Python method). Everything else, including every error, is handed
# unchanged to the Python method, which owns all validation and messages. The state stays in
# the Python objects' arrays (EnergyVad._kargs, Endpointer._c and _store), read and written
# here exactly as the Python methods do.

cdef enum:
    _FRONT_MAX_FRAMES = 16  # longer chunks go to the Python method (the frame-parallel kernel)

#: Endpointer counters (sis_stream.audio.endpoint._COUNTERS must be the same tuple).
EP_COUNTERS = (
    "_received", "_accepted", "_frames", "_lead", "_boundary", "_seg_start", "_sil_run",
    "_index", "_audio_from", "_audio_start", "_prev_audio_end", "_buf_start", "_back", "_head",
    "_fill", "_hot", "_cap_samples", "_head_frames", "_tail_frames", "_max_frames",
    "_keep_back", "_frame_len_c", "_rate_c", "_include_audio_c",
)

cdef enum:
    _C_RECEIVED, _C_ACCEPTED, _C_FRAMES, _C_LEAD, _C_BOUNDARY, _C_SEG_START, _C_SIL_RUN,
    _C_INDEX, _C_AUDIO_FROM, _C_AUDIO_START, _C_PREV_AUDIO_END, _C_BUF_START, _C_BACK, _C_HEAD,
    _C_FILL, _C_HOT, _C_CAP, _C_HEAD_FRAMES, _C_TAIL_FRAMES, _C_MAX_FRAMES, _C_KEEP_BACK,
    _C_FRAME_LEN, _C_RATE, _C_INCLUDE_AUDIO, _N_COUNTERS

cdef bint _LITTLE = sys.byteorder == "little"  # PCM bytes are little-endian int16
cdef dict _backend_ns = None  # sis_stream._backend.__dict__
cdef object _self_module = None  # this module, as _backend holds it
cdef object _py_vad_process = None  # the Python EnergyVad.process
cdef object _py_ep_process = None  # the Python Endpointer.process
cdef object _segment_audio = None  # sis_stream.audio.endpoint.SegmentAudio
cdef bint _segment_audio_direct = False  # build it without its generated __init__ (see below)
#: SegmentAudio's fields in order (its generated __init__ takes them so).
_SEGMENT_AUDIO_FIELDS = ("timestamp_ms", "detected_ms", "index", "start_sample", "n_samples", "pcm")


def _bind_vad_front_end(backend_ns, self_module, process):
    """Register ``_backend``'s namespace and the Python ``EnergyVad.process`` (called once)."""
    global _backend_ns, _self_module, _py_vad_process
    _backend_ns = backend_ns
    _self_module = self_module
    _py_vad_process = process


def _bind_endpoint_front_end(process, segment_audio, counters):
    """Register the Python ``Endpointer.process`` and ``SegmentAudio``; check the counters."""
    global _py_ep_process, _segment_audio, _segment_audio_direct
    import dataclasses

    if tuple(counters) != EP_COUNTERS:
        raise ValueError(f"Endpointer counters {tuple(counters)} differ from the native "
                         f"front-end's {EP_COUNTERS}: rebuild the extension")
    _py_ep_process = process
    _segment_audio = segment_audio
    # A frozen dataclass's generated __init__ sets each field with object.__setattr__ (~1.5 us
    # for six). When SegmentAudio is exactly that (these fields, no __post_init__, no slots),
    # _new_segment_audio writes the same fields into a new instance's __dict__ (~0.15 us);
    # otherwise it calls the class.
    _segment_audio_direct = (
        segment_audio is not None and dataclasses.is_dataclass(segment_audio)
        and tuple(f.name for f in dataclasses.fields(segment_audio)) == _SEGMENT_AUDIO_FIELDS
        and not hasattr(segment_audio, "__post_init__")
        and "__slots__" not in segment_audio.__dict__
    )


cdef object _new_segment_audio(object timestamp_ms, object detected_ms, object index,
                               object start_sample, object n_samples, object pcm):
    # SegmentAudio(timestamp_ms, detected_ms, index, start_sample, n_samples, pcm).
    cdef dict d
    if not _segment_audio_direct:
        return _segment_audio(timestamp_ms, detected_ms, index, start_sample, n_samples, pcm)
    ev = _segment_audio.__new__(_segment_audio)
    d = <dict>ev.__dict__
    d["timestamp_ms"] = timestamp_ms
    d["detected_ms"] = detected_ms
    d["index"] = index
    d["start_sample"] = start_sample
    d["n_samples"] = n_samples
    d["pcm"] = pcm
    return ev


cdef inline bint _vad_selected() except -1:
    # One dict look-up with an interned key: is this module still _backend's vad kernel?
    if _backend_ns is None:
        raise RuntimeError(
            "sis_stream._native.vad front-end used before sis_stream.audio.vad bound it")
    return PyDict_GetItemWithError(_backend_ns, "vad") == <PyObject*>_self_module


cdef const int16_t* _pcm_of(object chunk, Py_ssize_t* n):
    # Samples of the hot-case chunk (aligned native int16 1-D C-contiguous ndarray, or bytes of
    # even length on a little-endian host) and their number; NULL for anything else.
    cdef cnp.ndarray arr
    if type(chunk) is cnp.ndarray:
        arr = <cnp.ndarray>chunk
        if cnp.PyArray_TYPE(arr) != cnp.NPY_INT16 or cnp.PyArray_NDIM(arr) != 1 \
                or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISBEHAVED_RO(arr):
            return NULL
        n[0] = cnp.PyArray_DIM(arr, 0)
        return <const int16_t*>cnp.PyArray_DATA(arr)
    if type(chunk) is bytes and _LITTLE and PyBytes_GET_SIZE(chunk) % 2 == 0:
        n[0] = PyBytes_GET_SIZE(chunk) // 2
        return <const int16_t*>PyBytes_AS_STRING(chunk)
    return NULL


cdef double* _f64(object obj, Py_ssize_t size):
    # Data of a writable C-contiguous native float64 ndarray of `size` values (size < 0: any),
    # else NULL.
    cdef cnp.ndarray arr
    if type(obj) is not cnp.ndarray:
        return NULL
    arr = <cnp.ndarray>obj
    if cnp.PyArray_TYPE(arr) != cnp.NPY_DOUBLE or cnp.PyArray_NDIM(arr) != 1 \
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISBEHAVED(arr) \
            or (size >= 0 and cnp.PyArray_DIM(arr, 0) != size):
        return NULL
    return <double*>cnp.PyArray_DATA(arr)


cdef Py_ssize_t _vad_frames(object kargs, const int16_t* x, Py_ssize_t n_x,
                            uint8_t* code) except -2:
    # The hot case of EnergyVad._decide: n_x samples of whole frames (1.._FRONT_MAX_FRAMES)
    # through band energy and detector with EnergyVad._kargs = (frame_len, decim, sos, zi,
    # params, state), decision codes into code[]; returns the number of frames, or -1 (nothing
    # touched) when this is not the hot case.
    cdef tuple k
    cdef Py_ssize_t frame_len, decim, n, n_sec, f, m
    cdef double* sos
    cdef double* zi
    cdef double* params
    cdef double* state
    cdef double band[_FRONT_MAX_FRAMES]
    if type(kargs) is not tuple or len(<tuple>kargs) != 6:
        return -1
    k = <tuple>kargs
    frame_len = k[0]
    decim = k[1]
    if frame_len < 2 or frame_len > _MAX_FRAME or (decim != 1 and decim != 2) \
            or frame_len % decim != 0 or n_x % frame_len != 0:
        return -1
    n = n_x // frame_len
    if n < 1 or n > _FRONT_MAX_FRAMES:
        return -1
    sos = _f64(k[2], -1)
    if sos == NULL:
        return -1
    n_sec = cnp.PyArray_DIM(<cnp.ndarray>k[2], 0) // 6
    if n_sec < 1 or n_sec > _MAX_SEC or 6 * n_sec != cnp.PyArray_DIM(<cnp.ndarray>k[2], 0):
        return -1
    zi = _f64(k[3], 2 * n_sec)
    params = _f64(k[4], N_PARAMS)
    state = _f64(k[5], N_STATE)
    if zi == NULL or params == NULL or state == NULL:
        return -1
    m = frame_len // decim
    # The same per-frame arithmetic as band_decide on fewer than _PARALLEL_MIN_FRAMES frames
    # (_FRONT_MAX_FRAMES is below it), so the front-end and the Python method agree bit for bit.
    for f in range(n):
        band[f] = _dbfs(_band_ms_ptr(x + f * frame_len, m, decim, sos, n_sec, zi))
    _decide_ptr(band, n, params, state, code)
    return n


def _vad_process_front(self, chunk):
    """Compiled front-end of EnergyVad.process (docstring set by sis_stream.audio.vad)."""
    cdef const int16_t* x
    cdef Py_ssize_t n_x = 0, n, i
    cdef uint8_t code[_FRONT_MAX_FRAMES]
    cdef cnp.npy_intp dims[1]
    cdef cnp.ndarray out
    cdef uint8_t* o
    if not _vad_selected():
        return _py_vad_process(self, chunk)
    kargs = self._fast  # EnergyVad._kargs on an open PCM stream with nothing pending, else None
    if kargs is None:
        return _py_vad_process(self, chunk)
    x = _pcm_of(chunk, &n_x)
    if x == NULL:
        return _py_vad_process(self, chunk)
    n = _vad_frames(kargs, x, n_x, code)
    if n < 0:
        return _py_vad_process(self, chunk)
    dims[0] = n
    out = cnp.PyArray_EMPTY(1, dims, cnp.NPY_BOOL, 0)
    o = <uint8_t*>cnp.PyArray_DATA(out)
    for i in range(n):
        o[i] = code[i] != 0  # bit 0 is speech; the look-back bits only come with it
    return out


cdef object _ep_decisions(const uint8_t* code, Py_ssize_t n):
    # (speech, look-back) arrays of n decision codes, as EnergyVad.process_onsets returns them.
    cdef cnp.npy_intp dims[1]
    cdef Py_ssize_t i
    dims[0] = n
    d = cnp.PyArray_EMPTY(1, dims, cnp.NPY_BOOL, 0)
    back = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INTP, 0)
    cdef uint8_t* pd = <uint8_t*>cnp.PyArray_DATA(<cnp.ndarray>d)
    cdef cnp.npy_intp* pb = <cnp.npy_intp*>cnp.PyArray_DATA(<cnp.ndarray>back)
    for i in range(n):
        pd[i] = code[i] != 0
        pb[i] = code[i] >> 1  # DECISION_LOOKBACK_SHIFT
    return d, back


def _endpoint_process_front(self, chunk):
    """Compiled front-end of Endpointer.process (docstring set by sis_stream.audio.endpoint)."""
    cdef const int16_t* x
    cdef Py_ssize_t n_x = 0, n, i, L
    cdef uint8_t code[_FRONT_MAX_FRAMES]
    cdef array.array ca
    cdef long long* c
    cdef cnp.ndarray store, pcm
    cdef int16_t* st
    cdef long long hot, f, lead, sil, k_max, k_tail, upto, keep, a
    cdef cnp.npy_intp dims[1]
    if not _vad_selected():
        return _py_ep_process(self, chunk)
    ca = self._c
    if ca.ob_descr.typecode != b'q' or len(ca) != _N_COUNTERS:
        raise TypeError(f"Endpointer._c must be array('q') of {_N_COUNTERS} counters")
    c = ca.data.as_longlongs
    hot = c[_C_HOT]  # 1 waiting, 2 in a segment (default EnergyVad, not short mode), else 0
    if hot == 0:
        return _py_ep_process(self, chunk)
    x = _pcm_of(chunk, &n_x)
    if x == NULL or n_x == 0 or c[_C_ACCEPTED] + n_x > c[_C_CAP]:
        return _py_ep_process(self, chunk)
    store = self._store
    if type(store) is not cnp.ndarray or cnp.PyArray_TYPE(store) != cnp.NPY_INT16 \
            or cnp.PyArray_NDIM(store) != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(store) \
            or not cnp.PyArray_ISBEHAVED(store) or c[_C_HEAD] < 0 or c[_C_HEAD] > c[_C_FILL] \
            or c[_C_FILL] - c[_C_HEAD] + n_x > cnp.PyArray_DIM(store, 0):
        return _py_ep_process(self, chunk)  # the Python method grows the buffer
    st = <int16_t*>cnp.PyArray_DATA(store)
    if c[_C_FILL] + n_x > cnp.PyArray_DIM(store, 0):
        # Endpointer._append: move the live audio to the front (the content is unchanged).
        memmove(st, st + c[_C_HEAD], (c[_C_FILL] - c[_C_HEAD]) * sizeof(int16_t))
        c[_C_FILL] -= c[_C_HEAD]
        c[_C_HEAD] = 0
    L = c[_C_FRAME_LEN]
    kargs = self.vad._fast
    if kargs is None or n_x % L != 0 or (<tuple>kargs)[0] != L:
        return _py_ep_process(self, chunk)
    n = _vad_frames(kargs, x, n_x, code)
    if n < 0:
        return _py_ep_process(self, chunk)
    # Committed: the audio is accepted and buffered, the VAD has decided it.
    memcpy(st + c[_C_FILL], x, n_x * sizeof(int16_t))  # FILL + n_x <= len(store): checked
    c[_C_FILL] += n_x
    c[_C_RECEIVED] += n_x
    c[_C_ACCEPTED] += n_x
    # Frame counting (Endpointer._advance) on copies: a frame that raises a trigger sends the
    # decisions to the Python state machine (Endpointer._decided), which owns every transition.
    lead = c[_C_LEAD]
    sil = c[_C_SIL_RUN]
    for i in range(n):
        f = c[_C_FRAMES] + i
        if hot == 1:
            if code[i] != 0 or lead + 1 >= c[_C_HEAD_FRAMES]:
                return self._decided(*_ep_decisions(code, n), False)
            lead += 1
        else:
            k_max = c[_C_MAX_FRAMES] - (f - c[_C_SEG_START])
            if code[i] != 0:
                if k_max <= 1:
                    return self._decided(*_ep_decisions(code, n), False)
                sil = 0
            else:
                k_tail = c[_C_TAIL_FRAMES] - sil
                if (k_tail if k_tail < k_max else k_max) <= 1:
                    return self._decided(*_ep_decisions(code, n), False)
                sil += 1
    c[_C_LEAD] = lead
    c[_C_SIL_RUN] = sil
    c[_C_FRAMES] += n
    events = []
    upto = c[_C_FRAMES] * L
    if hot == 2 and c[_C_INCLUDE_AUDIO] and upto > c[_C_AUDIO_FROM]:
        # Endpointer._emit_audio: the decided audio since the last SegmentAudio, a read-only copy.
        a = c[_C_AUDIO_FROM] - c[_C_BUF_START]
        if a < 0 or c[_C_HEAD] + (upto - c[_C_BUF_START]) > c[_C_FILL]:
            raise RuntimeError("Endpointer buffer does not hold the segment's audio")
        dims[0] = upto - c[_C_AUDIO_FROM]
        pcm = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT16, 0)
        memcpy(cnp.PyArray_DATA(pcm), st + c[_C_HEAD] + a, dims[0] * sizeof(int16_t))
        cnp.PyArray_CLEARFLAGS(pcm, cnp.NPY_ARRAY_WRITEABLE)
        events.append(_new_segment_audio(c[_C_AUDIO_FROM] * 1000 // c[_C_RATE],
                                         upto * 1000 // c[_C_RATE], c[_C_INDEX],
                                         c[_C_AUDIO_FROM], dims[0], pcm))
        c[_C_AUDIO_FROM] = upto
    # Endpointer._trim: keep the pre-roll and look-back before the decided end and the open
    # segment's unsent audio.
    keep = upto - c[_C_KEEP_BACK]
    if hot == 2 and c[_C_INCLUDE_AUDIO] and c[_C_AUDIO_FROM] < keep:
        keep = c[_C_AUDIO_FROM]
    if keep > c[_C_BUF_START]:
        c[_C_HEAD] += keep - c[_C_BUF_START]
        c[_C_BUF_START] = keep
    return events
