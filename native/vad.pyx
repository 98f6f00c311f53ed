# cython: language_level=3
"""VAD kernels: per-frame features of int16 PCM and the energy detector's decision loop."""

from libc.math cimport log2
from libc.stdint cimport int16_t, int64_t, uint8_t

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
N_PARAMS = 14
S_FLOOR, S_ACTIVE, S_HANG, S_NFRAMES, S_RUN, S_UP, S_DEV = range(7)
N_STATE = 7
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


cdef double _band_ms_seq(const int16_t[::1] x, Py_ssize_t base, Py_ssize_t m, Py_ssize_t decim,
                        const double[::1] sos, Py_ssize_t n_sec, double[::1] zi) except? -1 nogil:
    # Band mean square of one frame, sample by sample in transposed direct form II on the
    # decimated input (sos row i at 6 * i, zi at 2 * i); updates zi.
    cdef Py_ssize_t t, i
    cdef double acc = 0.0, u, y, z1, z2
    for t in range(m):
        u = <double>x[base + decim * t]  # decim * t + decim - 1 < frame_len: in the frame
        if decim == 2:
            u = 0.5 * (u + <double>x[base + 2 * t + 1])
        for i in range(n_sec):
            z1 = zi[2 * i]
            z2 = zi[2 * i + 1]
            y = sos[6 * i] * u + z1
            zi[2 * i] = sos[6 * i + 1] * u - sos[6 * i + 4] * y + z2
            zi[2 * i + 1] = sos[6 * i + 2] * u - sos[6 * i + 5] * y
            u = y
        acc += u * u
    return acc / <double>m


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
    cdef double on = p[0], off = p[1], gate = p[2], fall = p[3], rise = p[4]
    cdef double rise_max = p[5], hang_max = p[6], onset = p[7], lb_db = p[8], lb_max = p[9]
    cdef double on_max = p[10], dev_k = p[11], dev_beta = p[12], dev_init = p[13]
    cdef double floor = state[0], active = state[1], hang = state[2], seen = state[3]
    cdef double run = state[4], up = state[5], dev = state[6]
    cdef double b, d, thr, r, on_eff
    cdef int code
    cdef Py_ssize_t i
    if lb_max > _MAX_LOOKBACK:
        lb_max = _MAX_LOOKBACK  # the look-back must fit the 7 high bits of the code
    for i in range(n):
        b = band[i]
        if seen == 0.0:
            floor = b
            dev = dev_init
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
            hang = hang_max
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
    return 0


def energy_decide(const double[::1] band, const double[::1] params, double[::1] state,
                  uint8_t[::1] out):
    """Decision code for each band energy (dBFS) into ``out`` (uint8); update ``state``; return n."""
    cdef Py_ssize_t n = band.shape[0]
    if params.shape[0] != N_PARAMS or state.shape[0] != N_STATE or out.shape[0] < n:
        raise ValueError(
            f"params must hold {N_PARAMS} values, state {N_STATE}, out >= {n}; "
            f"got {params.shape[0]}, {state.shape[0]}, {out.shape[0]}"
        )
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
